"""``helmet-otel sessions``: one row per session, as a table, json, ndjson or csv."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

from helmet_otel.cli.common import note
from helmet_otel.cli.layout import Column, terminal_width
from helmet_otel.cli.render import (
    Cell,
    Grid,
    Style,
    colour_wanted,
    human_bytes,
    is_tty,
    output,
    printable,
    short_times,
    time_cell,
    wants_pager,
    write_objects,
)
from helmet_otel.store.calls import pending_calls
from helmet_otel.store.query import LogEntry, Reader, SessionInfo
from helmet_otel.store.timefmt import format_duration_ms, format_rfc3339

__all__ = ["cmd_sessions"]


def _session_record(s: SessionInfo) -> dict[str, object]:
    return {
        "session_id": s.session_id,
        "status": s.status,
        "service": s.service,
        "server_name": s.server_name,
        "server_command": s.server_command,
        "server_info_name": s.server_info_name,
        "server_version": s.server_version,
        "client_name": s.client_name,
        "client_version": s.client_version,
        "transport": s.transport,
        "protocol_version": s.protocol_version,
        "era": s.era,
        "proxy_pid": s.proxy_pid,
        "proxy_host": s.proxy_host,
        "start": format_rfc3339(s.started_ts),
        "start_unix_nano": s.started_ts,
        "end": format_rfc3339(s.end_ts) if s.end_ts is not None else None,
        "end_unix_nano": s.end_ts,
        "last_seen_unix_nano": s.last_ts,
        "duration_ms": s.duration_ms,
        "requests": s.requests,
        "errors": s.errors,
        "exit_status": s.exit_status,
        "exit_reason": s.exit_reason,
        "exit": s.exit_summary,
        "cpu_s": s.cpu_s,
        "peak_memory_bytes": s.peak_memory,
    }


_SESSION_CSV: Final = (
    "session_id",
    "status",
    "service",
    "client_name",
    "client_version",
    "start",
    "end",
    "duration_ms",
    "requests",
    "errors",
    "exit_status",
    "exit_reason",
    "cpu_s",
    "peak_memory_bytes",
)


_COLUMNS: Final = (
    Column("SESSION", 8, 22),
    Column("SERVER", 6, 20),
    Column("CLIENT", 6, 24, drop=2),
    Column("START", 12, 23),
    Column("DURATION", 8, 9, right=True, drop=1),
    Column("REQS", 4, 8, right=True),
    Column("ERRS", 4, 8, right=True),
    Column("STATUS", 6, 6),
    Column("CPU", 3, 8, right=True, drop=3),
    Column("PEAK MEM", 8, 10, right=True, drop=3),
    Column("EXIT", 4, 24, flex=True),
)
_USAGE_COLUMNS: Final = ("CPU", "PEAK MEM")
_STATUS_COLOUR: Final = {"active": "green", "failed": "red", "lost": "yellow"}
DEFAULT_SESSIONS_LIMIT: Final = 20


def cmd_sessions(args: argparse.Namespace) -> int:
    statuses = tuple(args.status or ())
    if args.active:
        statuses = ("active",)
    limit: int | None = args.limit
    if limit is None and args.format == "table" and is_tty(sys.stdout):
        limit = DEFAULT_SESSIONS_LIMIT
    with Reader.open(Path(args.store)) as reader:
        sessions = reader.sessions(
            since_ns=args.since,
            servers=tuple(args.server or ()),
            statuses=statuses,
            newest_first=True,
            limit=limit or None,
        )
        pending = (
            {s.session_id: pending_calls(reader, s.session_id) for s in sessions}
            if args.active
            else {}
        )
    with output(args.output, csv_mode=args.format == "csv", page=wants_pager(args)) as stream:
        if args.format in ("json", "ndjson"):
            objects = [_session_record(s) for s in sessions]
            if args.active:
                for obj in objects:
                    obj["pending"] = [
                        _pending_object(p) for p in pending.get(str(obj["session_id"]), [])
                    ]
            write_objects(stream, args.format, objects)
        elif args.format == "csv":
            out = csv.writer(stream, lineterminator="\n")
            out.writerow(_SESSION_CSV)
            for s in sessions:
                rec = _session_record(s)
                out.writerow(["" if rec[k] is None else str(rec[k]) for k in _SESSION_CSV])
        else:
            _table(stream, args, sessions, pending)
    if limit and len(sessions) == limit and args.limit is None and is_tty(sys.stdout):
        note(f"showing the newest {limit} sessions; --limit N (0 = all) for more")
    if not sessions:
        note("no sessions match")
    return 0


def _pending_object(p: LogEntry) -> dict[str, object]:
    return {
        "request_id": p.request_id,
        "method": p.method,
        "target": p.target,
        "start": format_rfc3339(p.ts),
        "start_unix_nano": p.ts,
        "age_ms": round((time.time_ns() - p.ts) / 1e6, 3),
    }


def _table(
    stream: IO[str],
    args: argparse.Namespace,
    sessions: Sequence[SessionInfo],
    pending: dict[str, list[LogEntry]],
) -> None:
    width = None if args.wide else terminal_width()
    style = Style(colour_wanted(args))
    # CPU and PEAK MEM only where some session has them (a server process that was sampled)
    usage = any(s.cpu_s is not None or s.peak_memory is not None for s in sessions)
    keep = [usage or c.name not in _USAGE_COLUMNS for c in _COLUMNS]
    grid = Grid([c for c, k in zip(_COLUMNS, keep, strict=True) if k], style, width)
    short = short_times(width)
    rows: list[list[Cell]] = [
        [
            (s.session_id, ()),
            (printable(s.server or ""), ()),
            (printable(s.client or ""), ()),
            (time_cell(s.started_ts, utc=args.utc, short=short), ()),
            (format_duration_ms(s.duration_ms), ()),
            (str(s.requests or 0), ()),
            (str(s.errors or 0), ()),
            (s.status, ()),
            (f"{s.cpu_s:.2f}s" if s.cpu_s is not None else "", ()),
            (human_bytes(s.peak_memory) if s.peak_memory is not None else "", ()),
            (printable(s.exit_summary), ()),
        ]
        for s in sessions
    ]
    rows = [[cell for cell, k in zip(row, keep, strict=True) if k] for row in rows]
    grid.fit(rows)
    stream.write(grid.header() + "\n")
    now = time.time_ns()
    for s, row in zip(sessions, rows, strict=True):
        colour = _STATUS_COLOUR.get(s.status)
        stream.write(grid.line(row, whole=(colour,) if colour else ()) + "\n")
        for p in pending.get(s.session_id, []):
            what = " ".join(x for x in (p.method, p.target) if x)
            age = format_duration_ms((now - p.ts) / 1e6)
            text = f"    pending  id {printable(p.request_id or '')}  {printable(what)}  {age}"
            if width is not None and len(text) > width:
                text = text[: width - 1] + "…"
            stream.write(style(text, "yellow") + "\n")
