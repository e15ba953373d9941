"""The export schemas of ``helmet-otel logs`` (json, ndjson, csv) and the ndjson import.

An exported record is self-contained and stable (documented in ``docs/store.md``)::

    {"time": "2026-11-24T10:56:01.123456789Z", "time_unix_nano": 1795518961123456789,
     "event": "helmet.request", "session_id": "...", "service": "everything",
     "severity_text": "INFO", "severity_number": 9, "trace_id": "...", "span_id": "...",
     "attributes": {...every attribute, sorted by key...}, "body": ...}

Store-internal row ids are not exported, so exporting, importing into another store and
exporting again gives the same bytes, and two exports of one session diff cleanly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson

from helmet_otel.store.model import LogRow, log_row
from helmet_otel.store.query import LogEntry
from helmet_otel.store.timefmt import format_rfc3339

__all__ = [
    "CSV_FIELDS",
    "EXPORT_FIELDS",
    "body_preview",
    "csv_row",
    "export_record",
    "import_record",
    "ndjson_line",
    "status_text",
]

EXPORT_FIELDS: Final = (
    "time",
    "time_unix_nano",
    "event",
    "session_id",
    "service",
    "severity_text",
    "severity_number",
    "trace_id",
    "span_id",
    "attributes",
    "body",
)
CSV_FIELDS: Final = (
    "time",
    "session_id",
    "event",
    "direction",
    "method",
    "target",
    "request_id",
    "latency_ms",
    "status",
    "error",
    "size",
    "severity",
    "service",
    "trace_id",
    "span_id",
    "body",
)


def export_record(entry: LogEntry) -> dict[str, object]:
    """The json/ndjson object for one record (``body`` embedded as stored, not re-encoded)."""
    return {
        "time": format_rfc3339(entry.ts),
        "time_unix_nano": entry.ts,
        "event": entry.event,
        "session_id": entry.session_id,
        "service": entry.service,
        "severity_text": entry.severity_text,
        "severity_number": entry.severity_number,
        "trace_id": entry.trace_id,
        "span_id": entry.span_id,
        "attributes": entry.attributes,
        "body": orjson.Fragment(entry.body_json) if entry.body_json is not None else None,
    }


def ndjson_line(entry: LogEntry) -> bytes:
    return orjson.dumps(export_record(entry)) + b"\n"


def error_text(entry: LogEntry) -> str:
    """What went wrong, short: ``error.type``, else the status code, else ``error``."""
    if not entry.is_error:
        return ""
    if entry.error_type:
        return entry.error_type
    code = entry.status_code
    return str(code) if code is not None else "error"


def status_text(entry: LogEntry) -> str:
    """``ok`` for a successful response, the error for a failed one, empty otherwise."""
    if entry.is_error:
        return error_text(entry)
    return "ok" if entry.kind == "response" else ""


def body_preview(entry: LogEntry) -> str:
    """The body on one line: a string body as it is without its leading and trailing
    whitespace (an indented stderr line), anything else as compact JSON."""
    text = entry.body_json
    if text is None:
        return ""
    if text.startswith('"'):
        value = entry.body
        if isinstance(value, str):
            text = value.strip()
    return " ".join(text.split()) if ("\n" in text or "\r" in text or "\t" in text) else text


def csv_row(entry: LogEntry) -> list[str]:
    def s(value: object) -> str:
        return "" if value is None else str(value)

    return [
        format_rfc3339(entry.ts),
        s(entry.session_id),
        s(entry.event),
        s(entry.direction),
        s(entry.method),
        s(entry.target),
        s(entry.request_id),
        s(entry.latency_ms),
        "error" if entry.is_error else ("ok" if entry.kind == "response" else ""),
        error_text(entry),
        s(entry.size),
        s(entry.severity_text),
        s(entry.service),
        s(entry.trace_id),
        s(entry.span_id),
        body_preview(entry) if entry.body_json is not None else "",
    ]


def _opt_str(obj: Mapping[str, object], key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{key!r} must be a string or null")


def import_record(obj: object) -> LogRow:
    """One exported object back into a row. Raises ``ValueError`` when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    record: dict[str, object] = obj  # pyright: ignore[reportUnknownVariableType]
    ts = record.get("time_unix_nano")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise ValueError("'time_unix_nano' must be an integer")
    raw_attributes = record.get("attributes")
    if raw_attributes is None:
        raw_attributes = {}
    if not isinstance(raw_attributes, dict):
        raise ValueError("'attributes' must be an object")
    attributes: dict[str, object] = raw_attributes  # pyright: ignore[reportUnknownVariableType]
    severity = record.get("severity_number")
    if severity is not None and (not isinstance(severity, int) or isinstance(severity, bool)):
        raise ValueError("'severity_number' must be an integer or null")
    return log_row(
        ts=ts,
        event=_opt_str(record, "event"),
        severity_number=severity,
        severity_text=_opt_str(record, "severity_text"),
        service=_opt_str(record, "service"),
        trace_id=_opt_str(record, "trace_id"),
        span_id=_opt_str(record, "span_id"),
        body=record.get("body"),
        has_body=record.get("body") is not None,
        attributes=attributes,
    )
