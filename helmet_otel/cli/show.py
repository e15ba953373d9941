"""``helmet-otel show ID``: one record or call in full.

ID is a record id (the ID column of ``logs``), or a span id (16 hex digits, as ``logs`` exports,
``logs --calls`` and ``trace --format json`` show it): the call whose request carries it. The
record's (redacted) body is pretty-printed with its attributes, span and trace ids, followed by
the related request or response.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import IO, Final

import orjson

from helmet_otel.cli.common import NotFound, UsageError
from helmet_otel.cli.render import Style, colour_wanted, output, printable, wants_pager
from helmet_otel.store import codec
from helmet_otel.store.calls import other_half
from helmet_otel.store.model import dumps
from helmet_otel.store.query import LogEntry, Reader
from helmet_otel.store.timefmt import format_duration_ms, format_local, format_rfc3339

__all__ = ["cmd_show"]

_SPAN_ID: Final = re.compile(r"[0-9a-fA-F]{16}")


def _find(reader: Reader, ident: str) -> tuple[LogEntry, LogEntry | None, int]:
    """The record, its related request or answer, and how many records share its span."""
    text = ident.strip().lstrip("#")
    if text.isdigit() and not _SPAN_ID.fullmatch(text):
        entry = reader.log(int(text))
        if entry is None:
            raise NotFound(f"no record with id {text} in {reader.path}")
        shared = 1
    elif _SPAN_ID.fullmatch(text):
        records = reader.logs_of_span(text)
        if not records:
            raise NotFound(f"no record with span id {text.lower()} in {reader.path}")
        requests = [r for r in records if r.kind == "request"]
        entry = requests[0] if requests else records[0]
        shared = len(records)
    else:
        raise UsageError(f"ID {ident!r} is neither a record id (a number) nor a span id (16 hex)")
    return entry, other_half(reader, entry), shared


def _record_object(e: LogEntry) -> dict[str, object]:
    return {"id": e.id, **codec.export_record(e)}


def cmd_show(args: argparse.Namespace) -> int:
    with Reader.open(Path(args.store)) as reader:
        entry, related, shared = _find(reader, args.id)
    with output(args.output, page=wants_pager(args)) as stream:
        if args.format == "json":
            doc = {
                "record": _record_object(entry),
                "related": _record_object(related) if related is not None else None,
            }
            stream.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode("utf-8") + "\n")
        else:
            style = Style(colour_wanted(args))
            _write(stream, entry, style, args.utc)
            if related is not None:
                title = "response" if entry.kind == "request" else "request"
                stream.write("\n" + style(f"--- the {title} ---", "bold") + "\n")
                _write(stream, related, style, args.utc)
            elif entry.kind == "request":
                stream.write("\n" + style("--- no response in the store ---", "yellow") + "\n")
            if shared > 1:
                stream.write(f"\n({shared} records share span {entry.span_id})\n")
    return 0


def _write(stream: IO[str], e: LogEntry, style: Style, utc: bool) -> None:
    facts: list[tuple[str, object]] = [
        ("record", e.id),
        ("time", f"{format_local(e.ts, utc=utc)}  ({format_rfc3339(e.ts)})"),
        ("event", e.event),
        ("server", e.service),
        ("session", e.session_id),
        ("direction", e.direction),
        ("method", e.method),
        ("tool", e.target),
        ("json-rpc id", e.request_id),
        ("latency", format_duration_ms(e.latency_ms) or None),
        ("status", codec.status_text(e) or None),
        ("trace id", e.trace_id),
        ("span id", e.span_id),
    ]
    for label, value in facts:
        if value is None or value == "":
            continue
        stream.write(f"{style(label.ljust(12), 'dim')} {printable(str(value))}\n")
    stream.write(style("attributes", "dim") + "\n")
    for key, value in e.attributes.items():
        stream.write(f"  {printable(key)} = {printable(dumps(value))}\n")
    stream.write(style("body", "dim") + "\n")
    if e.body_json is None:
        stream.write("  (none)\n")
    else:
        try:
            pretty = orjson.dumps(orjson.loads(e.body_json), option=orjson.OPT_INDENT_2)
            text = pretty.decode("utf-8")
        except orjson.JSONDecodeError:
            text = e.body_json
        for line in text.splitlines():
            stream.write("  " + printable(line) + "\n")
