"""``helmet-otel stats``: calls, errors, latency percentiles and bytes per method or tool."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import IO

import orjson

from helmet_otel.cli.render import Style, human_bytes, output, table, use_colour, write_objects
from helmet_otel.store.query import Reader
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
    with Reader.open(Path(args.store)) as reader:
        stats = reader.stats(by=args.by, since_ns=args.since, until_ns=args.until)
    objects = _stat_objects(stats)
    with output(args.output, csv_mode=args.format == "csv") as stream:
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
                    }
                    for e in stats.errors
                ],
            }
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
            _stats_table(
                stream, stats, Style(args.output is None and use_colour(args.color, stream))
            )
    return 0


def _stat_fields(by: str) -> list[str]:
    head = ["method", "tool"] if by == "tool" else ["method"]
    return [*head, "calls", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "bytes"]


def _stats_table(stream: IO[str], stats: Stats, style: Style) -> None:
    tool = stats.by == "tool"
    headers = [
        "METHOD",
        *(["TOOL"] if tool else []),
        "CALLS",
        "ERRORS",
        "ERR%",
        "P50",
        "P95",
        "P99",
        "BYTES",
    ]
    rows = [
        [
            r.method,
            *([r.target or ""] if tool else []),
            str(r.calls),
            str(r.errors),
            f"{100 * r.error_rate:.1f}%",
            format_duration_ms(r.p50_ms),
            format_duration_ms(r.p95_ms),
            format_duration_ms(r.p99_ms),
            human_bytes(r.bytes),
        ]
        for r in stats.rows
    ]
    first = 2 if tool else 1
    lines = table(headers, rows, right=set(range(first, len(headers))))
    stream.write(style(lines[0], "bold") + "\n")
    for line, r in zip(lines[1:], stats.rows, strict=True):
        stream.write((style(line, "red") if r.errors else line) + "\n")
    if stats.errors:
        headers_e = ["COUNT", "METHOD", *(["TOOL"] if tool else []), "ERROR"]
        rows_e = [
            [str(e.count), e.method, *([e.target or ""] if tool else []), e.error]
            for e in stats.errors
        ]
        stream.write("\n" + style("MOST FREQUENT ERRORS", "bold") + "\n")
        lines_e = table(headers_e, rows_e, right={0})
        stream.write(style(lines_e[0], "bold") + "\n")
        for line in lines_e[1:]:
            stream.write(line + "\n")
