"""``helmet-otel logs --calls``: one row per call, request and answer joined."""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from typing import IO, Final

from helmet_otel.cli.layout import Column, terminal_width
from helmet_otel.cli.render import (
    Cell,
    Grid,
    Style,
    colour_wanted,
    output,
    printable,
    short_times,
    time_cell,
    wants_pager,
    write_objects,
)
from helmet_otel.store import codec
from helmet_otel.store.calls import CallEntry, argument_summary, arguments, calls
from helmet_otel.store.model import dumps
from helmet_otel.store.query import LogFilter, Reader
from helmet_otel.store.timefmt import format_duration_ms, format_rfc3339

__all__ = ["call_object", "write_calls"]

_COLUMNS: Final = (
    Column("TIME", 12, 23),
    Column("SERVER", 6, 16, drop=1),
    Column("SESSION", 8, 8, drop=5),
    Column("RPC", 3, 8, drop=2),
    Column("METHOD / TOOL", 12, 48),
    Column("LATENCY", 8, 9, right=True, drop=3),
    Column("STATUS", 5, 16),
    Column("ERROR", 8, 40, drop=4),
    Column("ARGUMENTS", 10, flex=True),
)
_CSV: Final = (
    "time",
    "service",
    "session_id",
    "request_id",
    "method",
    "target",
    "arguments",
    "latency_ms",
    "status",
    "error",
    "trace_id",
    "span_id",
)


def call_object(call: CallEntry) -> dict[str, object]:
    """A call in the machine formats: its facts, then the two records as ``logs`` exports
    them (``request``/``response``: null when missing)."""
    first = call.first
    return {
        "time": format_rfc3339(first.ts),
        "time_unix_nano": first.ts,
        "service": first.service,
        "session_id": first.session_id,
        "request_id": first.request_id,
        "method": call.method,
        "target": call.target,
        "arguments": arguments(call.request),
        "latency_ms": call.latency_ms,
        "status": call.status,
        "error": call.error or None,
        "trace_id": first.trace_id,
        "span_id": first.span_id,
        "request": codec.export_record(call.request) if call.request is not None else None,
        "response": codec.export_record(call.answer) if call.answer is not None else None,
    }


def _status(call: CallEntry, now_ns: int) -> Cell:
    status = call.status
    if status == "pending":
        age = format_duration_ms((now_ns - call.first.ts) / 1e6)
        return f"pending {age}", ("yellow",)
    if status == "ok":
        return "ok", ()
    if status == "no response":
        return status, ("red", "bold")
    label = call.answer.error_type if call.answer is not None else None
    text = status if label in (None, "", status) else f"{status} {label}"
    return text, ("red", "bold")


def write_calls(args: argparse.Namespace, reader: Reader, flt: LogFilter, limit: int | None) -> int:
    """Writes the calls in ``--format``; returns how many."""
    active = frozenset(s.session_id for s in reader.sessions(statuses=("active",)))
    found = list(calls(reader, flt, limit=limit, active=active))
    with output(args.output, csv_mode=args.format == "csv", page=wants_pager(args)) as out:
        if args.format in ("json", "ndjson"):
            write_objects(out, args.format, [call_object(c) for c in found])
        elif args.format == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(_CSV)
            for c in found:
                obj = call_object(c)
                obj["arguments"] = dumps(obj["arguments"]) if obj["arguments"] is not None else ""
                writer.writerow(["" if obj[k] is None else str(obj[k]) for k in _CSV])
        else:
            _table(out, args, found)
    return len(found)


def _table(stream: IO[str], args: argparse.Namespace, found: Sequence[CallEntry]) -> None:
    width = None if args.wide else terminal_width()
    grid = Grid(_COLUMNS, Style(colour_wanted(args)), width)
    short = short_times(width)
    now = time.time_ns()
    rows: list[list[Cell]] = []
    for c in found:
        first = c.first
        what = " ".join(x for x in (c.method, c.target) if x)
        rows.append(
            [
                (time_cell(first.ts, utc=args.utc, short=short), ("dim",)),
                (printable(first.service or ""), ()),
                ((first.session_id or "")[:8], ()),
                (printable(first.request_id or ""), ()),
                (printable(what), ()),
                (format_duration_ms(c.latency_ms), ()),
                _status(c, now),
                (printable(c.error), ("red",) if c.failed else ()),
                (printable(argument_summary(c.request)), ()),
            ]
        )
    grid.fit(rows)
    stream.write(grid.header() + "\n")
    for c, row in zip(found, rows, strict=True):
        stream.write(grid.line(row) + "\n")
        if args.errors:
            # the error and the arguments that caused it, in full (cut unless --wide)
            shown = dumps(arguments(c.request)) if c.request is not None else "(no request stored)"
            for label, value in (("error", c.error), ("arguments", shown)):
                text = f"    {label}: {printable(value)}"
                if width is not None and len(text) > width:
                    text = text[: width - 1] + "…"
                stream.write(grid.style(text, "dim") + "\n")
