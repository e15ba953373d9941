"""OTLP protobuf encoding of this worker's spans and log records, written out directly.

The SDK's encoders build a protobuf object per span, attribute and value, and hash the
resource of every record; on these machines that was 40% of the worker's time. The records
here come from one `Recorder`: one resource, one scope, and attribute pairs that repeat from
call to call (method, tool, direction, protocol version...). So the resource and scope are
encoded once, repeating attribute pairs come from a small cache, and everything else is
written with a handful of varint helpers. The output parses to the same messages as the
SDK's (``tests/telemetry/test_otlp_encoding.py`` checks this against the SDK's own encoder).

Wire format reference: opentelemetry-proto ``trace.proto``, ``logs.proto``, ``common.proto``.
Integers outside int64 become strings (the SDK would fail the whole batch on them).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, cast

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_CACHE_LIMIT = 8192  # cached attribute fields
_DISTINCT_LIMIT = 64  # distinct values of one key before it is no longer cached
_CACHEABLE_LEN = 128
# Span.flags: the SDK always says whether the parent is remote (SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE)
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200


def _varint(value: int) -> bytes:
    if value < 0:
        value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [_varint(i) for i in range(256)]


def _field(out: bytearray, tag: int, payload: bytes | bytearray) -> None:
    """A length-delimited field (``tag`` is the whole first byte: field << 3 | 2)."""
    n = len(payload)
    out.append(tag)
    out += _SMALL[n] if n < 256 else _varint(n)
    out += payload


def _wrapped(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_SMALL[n] if n < 256 else _varint(n)) + payload


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")


def any_value(value: Any) -> bytes:
    """An ``AnyValue`` message body."""
    kind = cast("type[object]", type(value))
    if kind is str:
        return _wrapped(b"\x0a", value.encode("utf-8", "replace"))
    if value is None:
        return b""
    if kind is dict:
        return _wrapped(
            b"\x32",
            b"".join([_wrapped(b"\x0a", key_value(str(k), v)) for k, v in value.items()]),  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType,reportUnknownMemberType]
        )
    if kind is list:
        return _wrapped(b"\x2a", b"".join([_wrapped(b"\x0a", any_value(v)) for v in value]))  # pyright: ignore[reportUnknownVariableType]
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return b"\x18" + _varint(value)
        return _wrapped(b"\x0a", str(value).encode())
    if kind is float:
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, (bytes, bytearray)):
        return _wrapped(b"\x3a", bytes(value))
    if isinstance(value, Mapping):
        return any_value(dict(value))  # pyright: ignore[reportUnknownArgumentType]
    if isinstance(value, Sequence):
        return any_value(list(value))  # pyright: ignore[reportUnknownArgumentType]
    if isinstance(value, bool):
        return any_value(bool(value))
    if isinstance(value, int):
        return any_value(int(value))
    if isinstance(value, float):
        return any_value(float(value))
    return any_value(str(value))


def key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message body."""
    return _wrapped(b"\x0a", key.encode("utf-8", "replace")) + _wrapped(b"\x12", any_value(value))


class OtlpEncoder:
    """Encodes batches into ``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest`` bytes."""

    def __init__(self) -> None:
        self._fields: dict[tuple[int, str, Any, type], bytes] = {}
        self._distinct: dict[str, int] = {}  # distinct values cached per key
        self._uncached: set[str] = set()
        # (id(resource), id(scope)) -> encoded fields, and the objects (so the ids stay theirs)
        self._headers: dict[tuple[int, int], tuple[bytes, bytes, object, object]] = {}

    # -- shared pieces ----------------------------------------------------------------------
    def _attributes(self, out: bytearray, tag: int, attributes: Mapping[str, Any] | None) -> None:
        """Append ``attributes`` as repeated KeyValue fields numbered by ``tag``.

        Pairs that repeat (method, tool, direction...) come from a cache of whole fields; a key
        whose values keep changing (request ids, sizes) stops being cached."""
        if not attributes:
            return
        fields, seen, uncached = self._fields, self._distinct, self._uncached
        for key, value in attributes.items():
            kind = cast("type[object]", type(value))
            if key in uncached or not (kind is str or kind is int or kind is bool):
                _field(out, tag, key_value(key, value))
                continue
            cache_key = (tag, key, value, kind)
            field = fields.get(cache_key)
            if field is None:
                field = _wrapped(bytes((tag,)), key_value(key, value))
                count = seen[key] = seen.get(key, 0) + 1
                if count > _DISTINCT_LIMIT or (kind is str and len(value) > _CACHEABLE_LEN):
                    uncached.add(key)
                elif len(fields) < _CACHE_LIMIT:
                    fields[cache_key] = field
            out += field

    def _header(
        self, resource: Resource, scope: InstrumentationScope | None
    ) -> tuple[bytes, bytes]:
        """The encoded ``Resource`` and ``InstrumentationScope`` fields, made once."""
        ident = (id(resource), id(scope))
        cached = self._headers.get(ident)
        if cached is None:
            res = bytearray()
            self._attributes(res, 0x0A, resource.attributes)
            head = bytearray()
            _field(head, 0x0A, res)
            sc = bytearray()
            if scope is not None:
                if scope.name:
                    _field(sc, 0x0A, _text(scope.name))
                if scope.version:
                    _field(sc, 0x12, _text(scope.version))
                self._attributes(sc, 0x1A, scope.attributes)
            scope_field = bytearray()
            _field(scope_field, 0x0A, sc)
            cached = self._headers[ident] = (bytes(head), bytes(scope_field), resource, scope)
        return cached[0], cached[1]

    def _grouped(
        self, encoded: Sequence[tuple[Resource, InstrumentationScope | None, bytes]], tag: int
    ) -> bytes:
        """Group by (resource, scope) in order of first appearance; return the request."""
        groups: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, bytearray]] = {}
        for resource, scope, item in encoded:
            ident = (id(resource), id(scope))
            group = groups.get(ident)
            if group is None:
                group = groups[ident] = (resource, scope, bytearray())
            _field(group[2], tag, item)
        out = bytearray()
        for resource, scope, body in groups.values():
            head, scope_field = self._header(resource, scope)
            scoped = bytearray(scope_field)
            scoped += body
            if scope is not None and scope.schema_url:
                _field(scoped, 0x1A, _text(scope.schema_url))
            block = bytearray(head)
            _field(block, 0x12, scoped)
            if resource.schema_url:
                _field(block, 0x1A, _text(resource.schema_url))
            _field(out, 0x0A, block)
        return bytes(out)

    # -- spans ------------------------------------------------------------------------------
    def spans(self, spans: Sequence[ReadableSpan]) -> bytes:
        return self._grouped(
            [(s.resource, s.instrumentation_scope, self._span(s)) for s in spans], 0x12
        )

    def _span(self, span: ReadableSpan) -> bytes:
        out = bytearray()
        context = span.context
        assert context is not None
        out += b"\x0a\x10" + context.trace_id.to_bytes(16, "big")
        out += b"\x12\x08" + context.span_id.to_bytes(8, "big")
        state = context.trace_state.to_header() if context.trace_state else ""
        if state:
            _field(out, 0x1A, _text(state))
        parent = span.parent
        if parent is not None and parent.span_id:
            out += b"\x22\x08" + parent.span_id.to_bytes(8, "big")
        _field(out, 0x2A, _text(span.name))
        out += b"\x30" + _SMALL[span.kind.value + 1]
        out += b"\x39" + _FIXED64.pack(span.start_time or 0)
        out += b"\x41" + _FIXED64.pack(span.end_time or 0)
        self._attributes(out, 0x4A, span.attributes)
        if span.dropped_attributes:
            out += b"\x50" + _varint(span.dropped_attributes)
        for event in span.events:
            ev = bytearray(b"\x09" + _FIXED64.pack(event.timestamp))
            _field(ev, 0x12, _text(event.name))
            self._attributes(ev, 0x1A, event.attributes)
            _field(out, 0x5A, ev)
        for link in span.links:
            lk = bytearray(b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big"))
            lk += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
            self._attributes(lk, 0x22, link.attributes)
            link_flags = _HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0)
            lk += b"\x35" + _FIXED32.pack(link_flags)
            _field(out, 0x6A, lk)
        status = span.status
        st = bytearray()
        if status.description:
            _field(st, 0x12, _text(status.description))
        if status.status_code.value:
            st += b"\x18" + _SMALL[status.status_code.value]
        _field(out, 0x7A, st)
        flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
        out += b"\x85\x01" + _FIXED32.pack(flags)
        return bytes(out)

    # -- log records ------------------------------------------------------------------------
    def logs(self, records: Sequence[ReadableLogRecord]) -> bytes:
        return self._grouped(
            [(r.resource, r.instrumentation_scope, self._log(r)) for r in records], 0x12
        )

    def _log(self, readable: ReadableLogRecord) -> bytes:
        record = readable.log_record
        out = bytearray()
        if record.timestamp:
            out += b"\x09" + _FIXED64.pack(record.timestamp)
        severity = record.severity_number
        if severity is not None and severity.value:
            out += b"\x10" + _SMALL[severity.value]
        if record.severity_text:
            _field(out, 0x1A, _text(record.severity_text))
        _field(out, 0x2A, any_value(record.body))
        self._attributes(out, 0x32, record.attributes)
        if readable.dropped_attributes:
            out += b"\x38" + _varint(readable.dropped_attributes)
        flags = int(record.trace_flags)
        if flags:
            out += b"\x45" + _FIXED32.pack(flags)
        if record.trace_id:
            out += b"\x4a\x10" + record.trace_id.to_bytes(16, "big")
        if record.span_id:
            out += b"\x52\x08" + record.span_id.to_bytes(8, "big")
        if record.observed_timestamp:
            out += b"\x59" + _FIXED64.pack(record.observed_timestamp)
        if record.event_name:
            _field(out, 0x62, _text(record.event_name))
        return bytes(out)
