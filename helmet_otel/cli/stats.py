"""``helmet-otel stats``: calls, errors, latency percentiles and bytes per method or tool."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import orjson

from helmet_otel.cli.common import NotFound, UsageError
from helmet_otel.cli.layout import Column, terminal_width
from helmet_otel.cli.logs import check_window
from helmet_otel.cli.render import (
    Cell,
    Grid,
    Style,
    colour_wanted,
    human_bytes,
    output,
    printable,
    wants_pager,
    write_objects,
)
from helmet_otel.store.query import Reader, SessionInfo
from helmet_otel.store.stats import Stats
from helmet_otel.store.timefmt import format_duration_ms, format_rfc3339

__all__ = ["cmd_stats"]


def _stat_objects(stats: Stats) -> list[dict[str, object]]:
    return [
        {
            "method": r.method,
            **({"tool": r.target} if stats.by == "tool" else {}),
            "calls": r.calls,
            "errors": r.errors,
            "error_rate": round(r.error_rate, 6),
            "p50_ms": r.p50_ms,
            "p95_ms": r.p95_ms,
            "p99_ms": r.p99_ms,
            "max_ms": r.max_ms,
            "bytes": r.bytes,
        }
        for r in stats.rows
    ]


def cmd_stats(args: argparse.Namespace) -> int:
    check_window(args)
    with Reader.open(Path(args.store)) as reader:
        session_ids: list[str] | None = None
        if args.session:
            session_ids = []
            for ref in args.session:
                if not ref.strip():
                    raise UsageError("--session needs a session id, a prefix of one, or last")
                found = reader.resolve_session_ref(ref, servers=tuple(args.server or ()))
                if not found:
                    raise NotFound(f"no session matching {ref!r} in {args.store}")
                session_ids.extend(found)
        stats = reader.stats(
            by=args.by,
            since_ns=args.since,
            until_ns=args.until,
            session_ids=session_ids,
            servers=tuple(args.server or ()),
        )
        # with --session: what each session's server process used
        usage = reader.sessions(session_ids=session_ids) if session_ids else []
    objects = _stat_objects(stats)
    with output(args.output, csv_mode=args.format == "csv", page=wants_pager(args)) as stream:
        if args.format == "json":
            doc = {
                "by": stats.by,
                "since": format_rfc3339(stats.since_ns) if stats.since_ns is not None else None,
                "until": format_rfc3339(stats.until_ns) if stats.until_ns is not None else None,
                "rows": objects,
                "errors": [
                    {
                        "method": e.method,
                        **({"tool": e.target} if stats.by == "tool" else {}),
                        "error": e.error,
                        "count": e.count,
                        "last": format_rfc3339(e.last_ts),
                        "sample": e.sample,
                    }
                    for e in stats.errors
                ],
            }
            if session_ids:
                doc["server_process"] = [
                    {"session_id": u.session_id, "cpu_s": u.cpu_s,
                     "peak_memory_bytes": u.peak_memory}
                    for u in usage
                ]  # fmt: skip
            stream.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode("utf-8") + "\n")
        elif args.format == "ndjson":
            write_objects(stream, "ndjson", objects)
        elif args.format == "csv":
            out = csv.writer(stream, lineterminator="\n")
            fields = list(objects[0]) if objects else _stat_fields(stats.by)
            out.writerow(fields)
            for obj in objects:
                out.writerow(["" if obj[k] is None else str(obj[k]) for k in fields])
        else:
            style = Style(colour_wanted(args))
            _stats_table(stream, stats, style, args.wide)
            if usage:
                _usage_table(stream, usage, style, args.wide)
    return 0


def _usage_table(
    stream: IO[str], sessions: Sequence[SessionInfo], style: Style, wide: bool
) -> None:
    """With --session: the CPU time and peak memory of each session's server process."""
    columns = [
        Column("SESSION", 8, 22),
        Column("CPU", 3, 10, right=True),
        Column("PEAK MEM", 8, 12, right=True),
    ]
    rows: list[list[Cell]] = [
        [
            (s.session_id, ()),
            (f"{s.cpu_s:.2f}s" if s.cpu_s is not None else "-", ()),
            (human_bytes(s.peak_memory) if s.peak_memory is not None else "-", ()),
        ]
        for s in sessions
    ]
    stream.write("\n" + style("SERVER PROCESS", "bold") + "\n")
    grid = Grid(columns, style, None if wide else terminal_width())
    grid.fit(rows)
    stream.write(grid.header() + "\n")
    for row in rows:
        stream.write(grid.line(row) + "\n")


def _stat_fields(by: str) -> list[str]:
    head = ["method", "tool"] if by == "tool" else ["method"]
    return [*head, "calls", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "bytes"]


def _stats_table(stream: IO[str], stats: Stats, style: Style, wide: bool) -> None:
    tool = stats.by == "tool"
    width = None if wide else terminal_width()
    columns = [
        Column("METHOD", 8, 40),
        *([Column("TOOL", 6, 40)] if tool else []),
        *(
            Column(name, len(name), 12, right=True, drop=rank)
            for name, rank in (
                ("CALLS", 0),
                ("ERRORS", 0),
                ("ERR%", 0),
                ("P50", 3),
                ("P95", 0),
                ("P99", 4),
                ("MAX", 1),
                ("BYTES", 2),
            )
        ),
    ]
    rows: list[list[Cell]] = [
        [
            (printable(r.method), ()),
            *([(printable(r.target or ""), ())] if tool else []),
            (str(r.calls), ()),
            (str(r.errors), ()),
            (f"{100 * r.error_rate:.1f}%", ()),
            (format_duration_ms(r.p50_ms), ()),
            (format_duration_ms(r.p95_ms), ()),
            (format_duration_ms(r.p99_ms), ()),
            (format_duration_ms(r.max_ms), ()),
            (human_bytes(r.bytes), ()),
        ]
        for r in stats.rows
    ]
    grid = Grid(columns, style, width)
    grid.fit(rows)
    stream.write(grid.header() + "\n")
    for row, r in zip(rows, stats.rows, strict=True):
        stream.write(grid.line(row, whole=("red",) if r.errors else ()) + "\n")
    if stats.errors:
        columns_e = [
            Column("COUNT", 5, 8, right=True),
            Column("METHOD", 8, 30),
            *([Column("TOOL", 6, 30)] if tool else []),
            Column("ERROR", 5, 20),
            Column("SAMPLE MESSAGE", 10, flex=True),
        ]
        rows_e: list[list[Cell]] = [
            [
                (str(e.count), ()),
                (printable(e.method), ()),
                *([(printable(e.target or ""), ())] if tool else []),
                (printable(e.error), ()),
                (printable(e.sample), ()),
            ]
            for e in stats.errors
        ]
        stream.write("\n" + style("MOST FREQUENT ERRORS", "bold") + "\n")
        grid_e = Grid(columns_e, style, width)
        grid_e.fit(rows_e)
        stream.write(grid_e.header() + "\n")
        for row in rows_e:
            stream.write(grid_e.line(row) + "\n")
