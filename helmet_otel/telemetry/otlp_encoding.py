"""OTLP protobuf encoding of this worker's spans and log records, written out directly.

The SDK's encoders build a protobuf object per span, attribute and value, and hash the
resource of every record; on these machines that was 40% of the worker's time. The records
here (``helmet_otel.store.records``: `Span`, `Log`) come from one `Recorder`: one origin (a
resource and a scope), and attribute pairs that repeat from
call to call (method, tool, direction, protocol version...). So the resource and scope are
encoded once, repeating attribute pairs come from a small cache, and everything else is
written with a handful of varint helpers. The output parses to the same messages as the
SDK's (``tests/telemetry/test_otlp_encoding.py`` checks this against the SDK's own encoder).

Wire format reference: opentelemetry-proto ``trace.proto``, ``logs.proto``, ``common.proto``.
Integers outside int64 become strings (the SDK would fail the whole batch on them).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

from helmet_otel.store.records import AttributeHead, Log, Origin, Span
from helmet_otel.telemetry.otlp_values import (
    CACHEABLE_LEN,
    DOUBLE,
    INT64_MAX,
    INT64_MIN,
    SMALL,
    TEMPLATES,
    any_value,
    inline,
    inline_with,
    key_field,
    key_value,
    put_field,
    to_varint,
    wrapped,
)

_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_CACHE_LIMIT = 8192  # cached attribute fields
_DISTINCT_LIMIT = 64  # distinct values of one key before it is no longer cached
# Span.flags: the SDK always says whether the parent is remote (SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE)
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_BODY_CACHE_LEN = 256  # log bodies whose JSON text is at most this long are remembered
_BODY_CACHE_MAX = 1024
Encoded = bytes | bytearray  # an encoded request (`OtlpEncoder._request`: a bytearray)


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")


class OtlpEncoder:
    """Encodes batches into ``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest`` bytes."""

    def __init__(self) -> None:
        self._fields: dict[tuple[int, str, Any, type], bytes] = {}
        self._distinct: dict[str, int] = {}  # distinct values cached per key
        self._uncached: set[str] = set()
        # id(origin) -> encoded resource and scope fields, and the origin (so the id stays its)
        self._headers: dict[int, tuple[bytes, bytes, Origin]] = {}
        # a small log body's JSON text -> its encoded body field (a JSON text is one AnyValue)
        self._bodies: dict[str, bytes] = {}
        self._span_names: dict[str, bytes] = {}  # encoded name fields
        self._events: dict[str, bytes] = {}  # encoded event name fields
        # (head, severity, its text, event) -> those fields of a log record, encoded
        self._shared_logs: dict[tuple[Any, ...], bytes] = {}
        # (head, name, status, parent remote) -> those fields of a span, encoded
        self._shared_spans: dict[tuple[Any, ...], bytes] = {}

    # -- shared pieces ----------------------------------------------------------------------
    def _attributes(
        self, out: bytearray, tag: int, attributes: Mapping[str, Any] | None,
        head: AttributeHead | None = None,
    ) -> None:  # fmt: skip
        """Append ``attributes`` as repeated KeyValue fields numbered by ``tag``; ``head``:
        what they begin with (`AttributeHead`), encoded once and kept in it."""
        if not attributes:
            return
        if head is None:
            self._items(out, tag, attributes.items())
            return
        encoded = head.encoded.get(tag)
        if encoded is None:
            part = bytearray()
            self._items(part, tag, head.attributes.items())
            encoded = head.encoded[tag] = bytes(part)
        out += encoded
        if len(attributes) > head.size:
            inline(out, tag, islice(attributes.items(), head.size, None))

    def _items(self, out: bytearray, tag: int, items: Iterable[tuple[str, Any]]) -> None:
        """Pairs that repeat (method, tool, direction...) come from a cache of whole fields; a
        key whose values keep changing (request ids, sizes) stops being cached."""
        fields, seen, uncached = self._fields, self._distinct, self._uncached
        for key, value in items:
            kind: type[object] = type(value)  # pyright: ignore[reportUnknownVariableType]
            if key in uncached or not (kind is str or kind is int or kind is bool):
                # (inlined `key_value` for the scalars that change from record to record)
                if kind is str:
                    text = value.encode("utf-8", "replace")
                    n = len(text)
                    item = b"\x0a" + (SMALL[n] if n < 256 else to_varint(n)) + text
                elif kind is float:
                    item = b"\x21" + DOUBLE.pack(value)
                elif kind is int and INT64_MIN <= value <= INT64_MAX:
                    item = b"\x18" + to_varint(value)
                else:
                    put_field(out, tag, key_value(key, value))
                    continue
                n = len(item)
                pair = key_field(key) + b"\x12" + (SMALL[n] if n < 256 else to_varint(n)) + item
                n = len(pair)
                out.append(tag)
                out += SMALL[n] if n < 256 else to_varint(n)
                out += pair
                continue
            cache_key = (tag, key, value, kind)
            field = fields.get(cache_key)
            if field is None:
                field = wrapped(bytes((tag,)), key_value(key, value))
                count = seen[key] = seen.get(key, 0) + 1
                if count > _DISTINCT_LIMIT or (kind is str and len(value) > CACHEABLE_LEN):
                    uncached.add(key)
                elif len(fields) < _CACHE_LIMIT:
                    fields[cache_key] = field
            out += field

    def _header(self, origin: Origin) -> tuple[bytes, bytes]:
        """The encoded ``Resource`` and ``InstrumentationScope`` fields, made once."""
        cached = self._headers.get(id(origin))
        if cached is None:
            resource, scope = origin.resource, origin.scope
            res = bytearray()
            self._attributes(res, 0x0A, resource.attributes)
            head = bytearray()
            put_field(head, 0x0A, res)
            sc = bytearray()
            if scope is not None:
                if scope.name:
                    put_field(sc, 0x0A, _text(scope.name))
                if scope.version:
                    put_field(sc, 0x12, _text(scope.version))
                self._attributes(sc, 0x1A, scope.attributes)
            scope_field = bytearray()
            put_field(scope_field, 0x0A, sc)
            cached = self._headers[id(origin)] = (bytes(head), bytes(scope_field), origin)
        return cached[0], cached[1]

    def _request(self, records: Sequence[Span] | Sequence[Log], write: Any) -> Encoded:
        """The request of ``records``, grouped by origin: ``write(records, out, origin)``
        appends them as fields of their ``ScopeSpans`` / ``ScopeLogs`` (False: one is not of
        ``origin``). Each record is written in place by the writer's own loop (no call per
        record), after room for the two-byte length most records' lengths take (128 to 16,383
        bytes), which is then filled in (`_fit`).

        The records of one origin are written after room for what precedes them (the
        resource, the scope, their lengths), filled in at the end; the room left over is cut
        off the front, which moves the start of the bytearray without copying it. So a request
        is one buffer, not copied again into a `bytes` (a copy of this size also costs the
        page faults of a fresh allocation: about 80 us per 512 log records)."""
        if not records:
            return b""
        origin = records[0].origin
        head, scope_field = self._header(origin)
        room = len(head) + len(scope_field) + 2 * (1 + _MAX_LENGTH)
        body = bytearray(room)
        if not write(records, body, origin):  # (the worker has one origin: never there)
            return self._grouped([(r.origin, self._alone(write, r)) for r in records])
        prefix, suffix = self._framing(origin, len(body) - room)
        start = room - len(prefix)
        body[start:room] = prefix  # (as long as what it replaces: no resizing)
        del body[:start]
        if suffix:
            body += suffix
        return body

    @staticmethod
    def _alone(write: Any, record: Span | Log) -> bytes:
        """``record``'s field in its ``ScopeSpans`` / ``ScopeLogs``."""
        out = bytearray()
        write((record,), out, record.origin)
        return bytes(out)

    def _grouped(self, fields: Sequence[tuple[Origin, bytes]]) -> bytes:
        """Group records' fields by origin in order of first appearance; return the request."""
        groups: dict[int, tuple[Origin, bytearray]] = {}
        for origin, item in fields:
            group = groups.get(id(origin))
            if group is None:
                group = groups[id(origin)] = (origin, bytearray())
            group[1].extend(item)
        return b"".join([self._block(origin, body) for origin, body in groups.values()])

    def _block(self, origin: Origin, body: bytearray) -> bytes:
        """One ``ResourceSpans`` / ``ResourceLogs`` field: ``origin``'s, holding ``body``."""
        prefix, suffix = self._framing(origin, len(body))
        return b"".join((prefix, body, suffix))

    def _framing(self, origin: Origin, size: int) -> tuple[bytes, bytes]:
        """What precedes and what follows ``size`` bytes of ``origin``'s records in their
        ``ResourceSpans`` / ``ResourceLogs`` field (at most `_MAX_LENGTH` bytes a length)."""
        resource, scope = origin.resource, origin.scope
        head, scope_field = self._header(origin)
        scope_url = (
            wrapped(b"\x1a", _text(scope.schema_url))
            if scope is not None and scope.schema_url
            else b""
        )
        resource_url = wrapped(b"\x1a", _text(resource.schema_url)) if resource.schema_url else b""
        scoped = len(scope_field) + size + len(scope_url)  # ScopeSpans / ScopeLogs
        scoped_length = to_varint(scoped)
        block = len(head) + 1 + len(scoped_length) + scoped + len(resource_url)
        prefix = b"".join((b"\x0a", to_varint(block), head, b"\x12", scoped_length, scope_field))
        return prefix, scope_url + resource_url

    def _named(self, cache: dict[str, bytes], tag: bytes, text: str) -> bytes:
        """A string field whose values repeat (span names, event names), cached."""
        field = cache.get(text)
        if field is None:
            field = wrapped(tag, _text(text))
            if len(cache) < _NAMES_MAX and len(text) <= CACHEABLE_LEN:
                cache[text] = field
        return field

    # -- spans ------------------------------------------------------------------------------
    def spans(self, spans: Sequence[Span]) -> Encoded:
        return self._request(spans, self._write_spans)

    def _write_spans(self, spans: Sequence[Span], out: bytearray, origin: Origin) -> bool:
        """Append ``spans`` as ``Span`` fields (`_request`). (Field order is free in protobuf:
        the ids and the kind first; then the times, what the span shares with the others of
        its head, name and outcome, cached as one piece (those fields and the head's
        attributes), and its own attributes. `_span_fields` writes the same order.) A call's
        CLIENT span and its SERVER span come one after the other and mostly differ only in
        their ids and kind: what follows those is then copied from the first (``common``)."""
        shared_spans, templates = self._shared_spans, TEMPLATES[0x4A]
        ids_parent_kind, times, opening = _SPAN_START.pack, _TIMES.pack, _SPAN_OPENING
        last_trace, trace = 0, b""  # a trace id and its bytes (a batch holds a few traces)
        last: Span | None = None  # the span just written with a head (a pair is looked for)
        common = b""  # what followed its ids and kind
        # whether it had no own attribute (after its head's) or one string: an equal map then
        # is written the same (a string equals only strings; 1, 1.0 and True are equal but
        # encode apart; the order of two or more may differ in equal maps)
        texts = False
        for span in spans:
            if span.origin is not origin:
                return False
            head, parent = span.head, span.parent
            if (
                head is None or not parent or span.description or span.events or span.links
                or span.trace_state
            ):  # fmt: skip
                out += b"\x12\x80\x01"
                at = len(out)
                self._span_fields(span, out)
                last = None
            else:
                trace_id = span.trace_id
                if trace_id != last_trace:
                    last_trace, trace = trace_id, trace_id.to_bytes(16, "big")
                out += ids_parent_kind(opening, trace, 0x1208, span.span_id, 0x2208, parent, 0x30,
                                       span.kind + 1)  # fmt: skip
                at = len(out) - _SPAN_START_FIELDS
                attributes, start, end = span.attributes, span.start, span.end
                if (
                    last is not None and texts and last.start == start and last.end == end
                    and last.head is head and last.name == span.name
                    and last.status == span.status and last.parent_remote == span.parent_remote
                    and last.attributes == attributes
                ):  # fmt: skip
                    out += common
                    last = None  # (a pair is two)
                else:
                    key = (head, span.name, span.status, span.parent_remote)
                    shared = shared_spans.get(key)
                    if shared is None:
                        shared = self._span_shared(span, head, key)
                    begin = len(out)
                    out += times(0x39, start, 0x41, end)
                    out += shared
                    own = len(attributes) - head.size
                    if own:
                        texts = inline_with(
                            out, templates, islice(attributes.items(), head.size, None)
                        )
                        texts = texts and own == 1
                    else:
                        texts = True
                    last = span
                    common = out[begin:]
            _fit(out, at)
        return True

    def _span_shared(self, span: Span, head: AttributeHead, key: tuple[Any, ...]) -> bytes:
        """What a span shares with the others of its head, name and outcome: those fields,
        encoded (cached)."""
        out = bytearray(self._named(self._span_names, b"\x2a", span.name))
        out += _ENDS[span.status * 2 + span.parent_remote]
        self._attributes(out, 0x4A, head.attributes, head)
        return _remember(self._shared_spans, key, bytes(out))

    def _span_fields(self, span: Span, out: bytearray) -> None:
        """A span, field by field (in `_write_spans`' order)."""
        trace_id, parent = span.trace_id, span.parent
        out += _IDS.pack(0x0A, 0x10, trace_id >> 64, trace_id & _LOW64, 0x12, 0x08,
                         span.span_id)  # fmt: skip
        if span.trace_state:
            put_field(out, 0x1A, _text(span.trace_state))
        if parent:
            out += _PARENT.pack(0x22, 0x08, parent)
        out += _KINDS[span.kind]
        out += _TIMES.pack(0x39, span.start, 0x41, span.end)
        out += self._named(self._span_names, b"\x2a", span.name)
        description = span.description
        if description:
            st = bytearray()
            put_field(st, 0x12, _text(description))
            if span.status:
                st += _STATUS_CODES[span.status]
            put_field(out, 0x7A, st)
            out += _REMOTE_FLAGS_FIELD if span.parent_remote else _LOCAL_FLAGS_FIELD
        else:  # (the status and the flags: one of six)
            out += _ENDS[span.status * 2 + span.parent_remote]
        if span.attributes:
            self._attributes(out, 0x4A, span.attributes, span.head)
        for event in span.events:
            ev = bytearray(b"\x09" + _FIXED64.pack(event.ts))
            put_field(ev, 0x12, _text(event.name))
            self._attributes(ev, 0x1A, event.attributes)
            put_field(out, 0x5A, ev)
        for link in span.links:
            lk = bytearray(b"\x0a\x10" + link.trace_id.to_bytes(16, "big"))
            lk += b"\x12\x08" + link.span_id.to_bytes(8, "big")
            self._attributes(lk, 0x22, link.attributes)
            lk += _REMOTE_FLAGS if link.remote else _LOCAL_FLAGS
            put_field(out, 0x6A, lk)

    # -- log records ------------------------------------------------------------------------
    def logs(self, records: Sequence[Log]) -> Encoded:
        return self._request(records, self._write_logs)

    def _write_logs(self, records: Sequence[Log], out: bytearray, origin: Origin) -> bool:
        """Append ``records`` as ``LogRecord`` fields (`_request`). (Field order is free in
        protobuf: the times, flags and ids first, then the body (a small one's field from a
        cache by its JSON text), then what the record shares with the others of its head,
        severity and event, cached as one piece: those fields and the head's attributes; then
        its own attributes. `_log_fields` writes the same order.)"""
        shared_logs, bodies, templates = self._shared_logs, self._bodies, TEMPLATES[0x32]
        start, opening, trace_tag, span_tag = _LOG_START.pack, _LOG_OPENING, _TRACE_TAG, _SPAN_TAG
        last_trace, trace = 0, b""  # a trace id and its bytes (a batch holds a few traces)
        for record in records:
            # (one unpacking instead of a named tuple's attribute look-ups: `_LOG_FIELDS`)
            ts, observed, trace_id, span_id, flags, severity, severity_text, event, _, \
                attributes, record_origin, text, head = record  # fmt: skip
            if record_origin is not origin:
                return False
            if (
                head is None or not (ts and observed and trace_id and span_id)
                or not 0 < flags < 0x100000000
            ):  # fmt: skip
                out += b"\x12\x80\x01"
                at = len(out)
                self._log_fields(record, out)
            else:
                if trace_id != last_trace:
                    last_trace, trace = trace_id, trace_id.to_bytes(16, "big")
                out += start(opening, ts, 0x59, observed, 0x45, flags, trace_tag, trace, span_tag,
                             span_id.to_bytes(8, "big"))  # fmt: skip
                at = len(out) - _LOG_START_FIELDS
                key = (head, severity, severity_text, event)
                shared = shared_logs.get(key)
                if shared is None:
                    shared = self._log_shared(record, head, key)
                field = bodies.get(text)  # pyright: ignore[reportArgumentType]
                out += field if field is not None else self._body(record)
                out += shared
                inline_with(out, templates, islice(attributes.items(), head.size, None))
            _fit(out, at)
        return True

    def _log_shared(self, record: Log, head: AttributeHead, key: tuple[Any, ...]) -> bytes:
        """What a log record shares with the others of its head, severity and event: those
        fields and the head's attributes, encoded (cached)."""
        out = bytearray()
        field = _SEVERITY_FIELDS.get((record.severity, record.severity_text))
        out += field if field is not None else _severity(record.severity, record.severity_text)
        if record.event:
            out += self._named(self._events, b"\x62", record.event)
        self._attributes(out, 0x32, head.attributes, head)
        return _remember(self._shared_logs, key, bytes(out))

    def _body(self, record: Log) -> bytes:
        """The body field (a small one's remembered by its JSON text: `_bodies`, looked up
        by the callers)."""
        field = wrapped(b"\x2a", any_value(record.body))
        text = record.body_json
        if text is not None and len(text) <= _BODY_CACHE_LEN:  # a small body: it may repeat
            bodies = self._bodies
            if len(bodies) >= _BODY_CACHE_MAX:
                bodies.clear()
            bodies[text] = field
        return field

    @staticmethod
    def _log_ids(record: Log, out: bytearray) -> None:
        """A log record's times, trace flags and ids, each when there is one. Without a trace
        id a record is in no trace: no flags and no span id either, as the SDK writes it."""
        if record.ts:
            out += _STAMP.pack(0x09, record.ts)
        if record.observed:
            out += _STAMP.pack(0x59, record.observed)
        trace_id, span_id = record.trace_id, record.span_id
        if not trace_id:
            return
        flags = record.flags
        if flags:
            out += _FLAGS[flags] if flags < 256 else b"\x45" + _FIXED32.pack(flags)
        if span_id:
            out += _IDS.pack(0x4A, 0x10, trace_id >> 64, trace_id & _LOW64, 0x52, 0x08, span_id)
        else:
            out += b"\x4a\x10"
            out += trace_id.to_bytes(16, "big")

    def _log_fields(self, record: Log, out: bytearray) -> None:
        """A log record field by field (in `_write_logs`' order): without a head, or without
        all of its times and ids."""
        self._log_ids(record, out)
        text = record.body_json
        field = (
            self._bodies.get(text) if text is not None and len(text) <= _BODY_CACHE_LEN else None
        )
        out += field if field is not None else self._body(record)
        severity, severity_text = record.severity, record.severity_text
        field = _SEVERITY_FIELDS.get((severity, severity_text))
        out += field if field is not None else _severity(severity, severity_text)
        if record.event:
            out += self._named(self._events, b"\x62", record.event)
        if record.attributes:
            self._attributes(out, 0x32, record.attributes, record.head)


# the fields of `Log` as `OtlpEncoder._write_logs` unpacks them
_LOG_FIELDS = ("ts", "observed", "trace_id", "span_id", "flags", "severity", "severity_text",
               "event", "body", "attributes", "origin", "body_json", "head")  # fmt: skip
if Log._fields != _LOG_FIELDS:  # pragma: no cover - a change to Log must change the writer too
    raise ImportError(f"OtlpEncoder._write_logs unpacks {_LOG_FIELDS}, not {Log._fields}")

# (severity number, text) -> their fields (a handful of pairs)
_SEVERITY_FIELDS: dict[tuple[int, str | None], bytes] = {}
_FLAGS = [b"\x45" + _FIXED32.pack(n) for n in range(256)]  # a log record's trace flags fields


def _severity(number: int, text: str | None) -> bytes:
    field = b"\x10" + to_varint(number) if number else b""
    if text:
        field += wrapped(b"\x1a", _text(text))
    if len(_SEVERITY_FIELDS) < 64:
        _SEVERITY_FIELDS[(number, text)] = field
    return field


_NAMES_MAX = 1024  # span and event names remembered


def _remember(cache: dict[tuple[Any, ...], bytes], key: tuple[Any, ...], shared: bytes) -> bytes:
    """``shared`` kept in ``cache`` (emptied first when it holds `_NAMES_MAX`)."""
    if len(cache) >= _NAMES_MAX:
        cache.clear()
    cache[key] = shared
    return shared


def _fit(out: bytearray, at: int) -> None:
    """The length of the record written from ``at`` into the two bytes left for it before
    (or as many as it takes)."""
    n = len(out) - at
    if 0x7F < n < 0x4000:
        out[at - 2] = (n & 0x7F) | 0x80
        out[at - 1] = n >> 7
    else:
        out[at - 2 : at] = to_varint(n)


_LOW64 = (1 << 64) - 1
_MAX_LENGTH = 10  # bytes of a varint
_IDS = struct.Struct(">BBQQBBQ")  # a trace id and a span id field (ids are big-endian bytes)
_PARENT = struct.Struct(">BBQ")  # a span id field
# a span's field tag, room for its length (two bytes), its trace, span and parent span id
# fields, and its kind's (SpanKind + 1: one byte). (Tags that follow one another are one
# value: fewer arguments to pack.)
_SPAN_START = struct.Struct(">5s16sHQHQBB")
_SPAN_OPENING = b"\x12\x80\x01\x0a\x10"  # the tag, the room, the trace id's tag and length
_SPAN_START_FIELDS = _SPAN_START.size - 3  # what follows the length
_STAMP = struct.Struct("<BQ")  # a fixed64 field (a timestamp)
# a log record's field tag, room for its length (two bytes), its time, observed time, trace
# flags, trace id and span id fields (as `_SPAN_START`: tags that follow one another are one
# little-endian value)
_LOG_START = struct.Struct("<IQBQBIH16sH8s")
_LOG_OPENING = int.from_bytes(b"\x12\x80\x01\x09", "little")  # the tag, the room, the time's tag
_TRACE_TAG = int.from_bytes(b"\x4a\x10", "little")  # a trace id's tag and length
_SPAN_TAG = int.from_bytes(b"\x52\x08", "little")  # a span id's tag and length
_LOG_START_FIELDS = _LOG_START.size - 3  # what follows the length
_KINDS = [b"\x30" + SMALL[kind + 1] for kind in range(5)]  # Span.kind is SpanKind + 1
_TIMES = struct.Struct("<BQBQ")  # start and end time, as fields
_STATUS_CODES = [b"", b"\x18\x01", b"\x18\x02"]
_STATUS_FIELDS = [b"\x7a" + SMALL[len(code)] + code for code in _STATUS_CODES]
_LOCAL_FLAGS = b"\x35" + _FIXED32.pack(_HAS_IS_REMOTE)
_REMOTE_FLAGS = b"\x35" + _FIXED32.pack(_HAS_IS_REMOTE | _IS_REMOTE)
_LOCAL_FLAGS_FIELD = b"\x85\x01" + _FIXED32.pack(_HAS_IS_REMOTE)
_REMOTE_FLAGS_FIELD = b"\x85\x01" + _FIXED32.pack(_HAS_IS_REMOTE | _IS_REMOTE)
# by status * 2 + parent_remote: a span's status (no description) and flags fields
_ENDS = [
    status + flags
    for status in _STATUS_FIELDS
    for flags in (_LOCAL_FLAGS_FIELD, _REMOTE_FLAGS_FIELD)
]
