"""``helmet-otel sessions``: one row per session, as a table, json, ndjson or csv."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Final

from helmet_otel.cli.render import Style, output, printable, table, use_colour, write_objects
from helmet_otel.store.query import Reader, SessionInfo
from helmet_otel.store.timefmt import format_duration_ms, format_local, format_rfc3339

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
)


def cmd_sessions(args: argparse.Namespace) -> int:
    with Reader.open(Path(args.store)) as reader:
        sessions = reader.sessions(since_ns=args.since)
    if args.active:
        sessions = [s for s in sessions if s.status == "active"]
    with output(args.output, csv_mode=args.format == "csv") as stream:
        if args.format in ("json", "ndjson"):
            write_objects(stream, args.format, [_session_record(s) for s in sessions])
        elif args.format == "csv":
            out = csv.writer(stream, lineterminator="\n")
            out.writerow(_SESSION_CSV)
            for s in sessions:
                rec = _session_record(s)
                out.writerow(["" if rec[k] is None else str(rec[k]) for k in _SESSION_CSV])
        else:
            style = Style(args.output is None and use_colour(args.color, stream))
            rows = [
                [
                    s.session_id,
                    printable(s.server or ""),
                    printable(s.client or ""),
                    format_local(s.started_ts, utc=args.utc),
                    format_duration_ms(s.duration_ms),
                    str(s.requests or 0),
                    str(s.errors or 0),
                    s.status,
                ]
                for s in sessions
            ]
            headers = (
                "SESSION",
                "SERVER",
                "CLIENT",
                "START",
                "DURATION",
                "REQUESTS",
                "ERRORS",
                "STATUS",
            )
            lines = table(headers, rows, right={4, 5, 6})
            stream.write(style(lines[0], "bold") + "\n")
            for line, s in zip(lines[1:], sessions, strict=True):
                colour = {"active": "green", "failed": "red", "lost": "yellow"}.get(s.status)
                stream.write((style(line, colour) if colour else line) + "\n")
    return 0
