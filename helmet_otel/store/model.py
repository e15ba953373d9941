"""Rows as the writer stores them, and the mapping between OTel attributes and columns.

A few attributes are *promoted*: moved out of the attribute map into their own column so
filters can use an index. The rest stay in ``attrs`` (JSON). Promotion is lossless: a value is
only moved when its column can give it back with the same type, so ``full_attributes`` rebuilds
exactly the attribute map the record arrived with. ``dumps`` writes the JSON columns and
``decode`` reads them back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson

from helmet_otel import semconv as sc

__all__ = [
    "PROMOTED",
    "LogRow",
    "SpanRow",
    "coerce",
    "decode",
    "dumps",
    "error_message",
    "full_attributes",
    "log_row",
]

# attribute -> (column, python type the column gives back)
PROMOTED: Final[Mapping[str, tuple[str, type]]] = {
    sc.HELMET_SESSION_ID: ("session_id", str),
    sc.HELMET_DIRECTION: ("direction", str),
    sc.HELMET_MESSAGE_KIND: ("kind", str),
    sc.MCP_METHOD_NAME: ("method", str),
    sc.JSONRPC_REQUEST_ID: ("request_id", str),
    sc.HELMET_LATENCY_MS: ("latency_ms", float),
    sc.HELMET_MESSAGE_SIZE: ("size", int),
    sc.ERROR_TYPE: ("error_type", str),
}
# attribute -> (its column's place in `log_row`'s list, type)
_PROMOTED_AT: Final = {key: (i, kind) for i, (key, (_column, kind)) in enumerate(PROMOTED.items())}
_PROMOTED_COLUMNS: Final = (
    "session_id", "direction", "kind", "method", "request_id", "latency_ms", "size", "error_type",
)  # fmt: skip
assert tuple(column for column, _kind in PROMOTED.values()) == _PROMOTED_COLUMNS
# the "target" column: what a span name calls the target (not promoted, derived)
_TARGET_KEYS: Final = (sc.GEN_AI_TOOL_NAME, sc.GEN_AI_PROMPT_NAME, sc.MCP_RESOURCE_URI)
_SEVERITY_ERROR: Final = 17


def _default(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return "base64:" + base64.b64encode(value).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(str(v) for v in value)  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType]
    return str(value)


def dumps(value: object, *, sort_keys: bool = False) -> str:
    """Compact JSON, UTF-8, never raising (unknown types become strings)."""
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, default=_default, option=option).decode("utf-8")
    except (orjson.JSONEncodeError, RecursionError):  # huge ints, nesting deeper than 254
        try:
            return json.dumps(
                value,
                default=_default,
                sort_keys=sort_keys,
                ensure_ascii=False,
                separators=(",", ":"),
            )
        except (TypeError, ValueError, RecursionError):
            return json.dumps(str(value), ensure_ascii=False)


def decode(text: str | None) -> object:
    """A JSON column's value; text that is not JSON as it is; None for NULL."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def error_message(attrs: Mapping[str, object], body: object, error_type: str | None) -> str:
    """What a failed answer says: ``helmet.error.message``, the JSON-RPC error's message, the
    text of a tool error, else its error type."""
    message = attrs.get(sc.HELMET_ERROR_MESSAGE)
    if isinstance(message, str) and message:
        return message
    if isinstance(body, dict):
        fields: dict[str, object] = body  # pyright: ignore[reportUnknownVariableType]
        text = fields.get("message")
        if isinstance(text, str) and text:
            return text
        content = fields.get("content")
        if isinstance(content, list):
            for part in content:  # pyright: ignore[reportUnknownVariableType]
                if isinstance(part, dict) and isinstance(part.get("text"), str):  # pyright: ignore[reportUnknownMemberType]
                    return str(part["text"])  # pyright: ignore[reportUnknownArgumentType]
    return error_type or "error"


def _no_attrs() -> dict[str, object]:  # a plain function: calling dict[str, object] is slow
    return {}


@dataclass(slots=True)
class LogRow:
    """One log record, ready for ``INSERT INTO logs``."""

    ts: int
    event: str | None
    severity_number: int | None
    severity_text: str | None
    service: str | None
    trace_id: str | None
    span_id: str | None
    body: str | None  # JSON text, or None when the record had no body
    attrs: dict[str, object] = field(default_factory=_no_attrs)  # not promoted
    session_id: str | None = None
    direction: str | None = None
    kind: str | None = None
    method: str | None = None
    target: str | None = None
    request_id: str | None = None
    latency_ms: float | None = None
    size: int | None = None
    error_type: str | None = None
    is_error: bool = False

    def values(self) -> tuple[object, ...]:
        """In the column order of ``writer.INSERT_LOG`` after ``id``."""
        return self.params(0)[1:]

    def params(self, row_id: int) -> tuple[object, ...]:
        """``row_id`` and the values, in the column order of ``writer.INSERT_LOG`` (one tuple
        built once: this runs for every record the store takes)."""
        return (
            row_id,
            self.ts,
            self.session_id,
            self.event,
            self.severity_number,
            self.severity_text,
            self.direction,
            self.kind,
            self.method,
            self.target,
            self.request_id,
            self.latency_ms,
            self.size,
            1 if self.is_error else 0,
            self.error_type,
            self.service,
            self.trace_id,
            self.span_id,
            self.body,
            dumps(self.attrs, sort_keys=True) if self.attrs else None,
        )


def log_row(
    *,
    ts: int,
    event: str | None,
    severity_number: int | None,
    severity_text: str | None,
    service: str | None,
    trace_id: str | None,
    span_id: str | None,
    body: object,
    has_body: bool,
    attributes: Mapping[str, object],
    body_text: str | None = None,
) -> LogRow:
    """Split an attribute map into promoted columns and the rest; encode the body
    (``body_text``: its JSON, already made: what ``dumps`` would give)."""
    columns: list[object] = [None] * len(_PROMOTED_AT)
    rest: dict[str, object] = {}
    promoted_at = _PROMOTED_AT
    for key, value in attributes.items():
        promoted = promoted_at.get(key)
        if promoted is not None and type(value) is promoted[1]:
            columns[promoted[0]] = value
        else:
            rest[key] = value
            if promoted is not None and value is not None:
                # keep the original in attrs, still filter on a best-effort column value
                columns[promoted[0]] = coerce(promoted[1], value)
    target = None
    for key in _TARGET_KEYS:
        value = rest.get(key)
        if isinstance(value, str) and value:
            target = value
            break
    session_id, direction, kind, method, request_id, latency_ms, size, error_type = columns
    return LogRow(
        ts, event, severity_number, severity_text, service, trace_id, span_id,
        body_text if body_text is not None else dumps(body) if has_body else None,
        rest, session_id, direction, kind, method, target, request_id, latency_ms, size,  # pyright: ignore[reportArgumentType]
        error_type,  # pyright: ignore[reportArgumentType]
        event == sc.EVENT_ERROR
        or error_type is not None
        or sc.RPC_RESPONSE_STATUS_CODE in rest
        or (severity_number is not None and severity_number >= _SEVERITY_ERROR),
    )  # fmt: skip


def coerce(kind: type, value: object) -> object:
    """A best-effort column value for an attribute of an unexpected type (None if hopeless)."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        if kind is float:
            return float(value)
        if kind is int:
            return int(float(value))
    except ValueError:
        return None
    return str(value)


def full_attributes(
    columns: Mapping[str, object], attrs: Mapping[str, object]
) -> dict[str, object]:
    """Rebuild the record's attribute map from its promoted columns plus ``attrs``, sorted."""
    merged: dict[str, object] = {}
    for key, (column, _kind) in PROMOTED.items():
        value = columns.get(column)
        if value is not None:
            merged[key] = value
    merged.update(attrs)  # an original that was not promoted wins
    return dict(sorted(merged.items()))


@dataclass(slots=True)
class SpanRow:
    """One ended span, ready for ``INSERT INTO spans``."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ts: int
    end_ts: int | None
    status: str
    status_message: str | None
    session_id: str | None
    segment: int | None
    service: str | None
    attrs: dict[str, object]
    links: list[dict[str, object]]

    def values(self) -> tuple[object, ...]:
        """In the column order of ``writer.INSERT_SPAN``."""
        return (
            self.trace_id,
            self.span_id,
            self.parent_span_id,
            self.name,
            self.kind,
            self.start_ts,
            self.end_ts,
            self.status,
            self.status_message,
            self.session_id,
            self.segment,
            self.service,
            dumps(self.attrs, sort_keys=True) if self.attrs else None,
            dumps(self.links) if self.links else None,
        )
