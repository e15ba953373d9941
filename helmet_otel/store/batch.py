"""The store's write boundary: batches of rows as plain tuples.

``log_batch(records)`` and ``span_batch(spans)`` turn the telemetry worker's records
(``store.records.Log``/``Span``) into everything the writer's transaction needs, worked out
once per batch: the parameter tuple of every row, each session's upsert and the failed requests
of the batch. They are pure (no store, no clock but a missing timestamp's) and what they return
holds only ``None``, ``str``, ``int`` and ``float``: it pickles, so a store writer in a process of
its own can take it. ``Store.write_batches`` (``write_log_batch``, ``write_span_batch``) writes
such batches in one transaction.

A call's CLIENT span (the proxy's call to the server) usually differs from its SERVER span (the
client's call to the proxy) only in its id, kind and parent: such a pair is one row of
``spans``, the SERVER's, with the CLIENT's id in ``client_span_id``; readers expand it again
(``query.Reader.spans``). Any other difference keeps them two rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from itertools import islice
from operator import is_
from typing import Final, NamedTuple

import orjson

from helmet_otel import semconv as sc
from helmet_otel.store.model import PROMOTED, LogRow, SpanRow, coerce, dumps
from helmet_otel.store.records import KIND_NAMES, STATUS_NAMES, AttributeHead, Log, Span

__all__ = [
    "LOG_FIELDS",
    "SPAN_FIELDS",
    "LogBatch",
    "SpanBatch",
    "log_batch",
    "log_batch_of_rows",
    "span_batch",
    "span_batch_of_rows",
]

# A log row: the columns of ``logs`` after ``id``, in this order.
LOG_FIELDS: Final = (
    "ts", "session_id", "event", "severity_number", "severity_text", "direction", "kind",
    "method", "target", "request_id", "latency_ms", "size", "is_error", "error_type", "service",
    "trace_id", "span_id", "body", "attrs",
)  # fmt: skip
# A span row: the columns of ``spans`` after ``id``, in this order.
SPAN_FIELDS: Final = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ts", "end_ts", "status",
    "status_message", "session_id", "segment", "service", "attrs", "links", "client_span_id",
)  # fmt: skip

Row = tuple[object, ...]


class LogBatch(NamedTuple):
    """What the writer inserts for a batch of log records."""

    rows: list[Row]  # ``LOG_FIELDS``
    sessions: list[Row]  # ``writer.UPSERT_SESSION`` parameters, one per session
    errors: list[tuple[str, str]]  # (session, failed request) for the live error counts
    failed: int = 0  # records that could not be converted (the writer counts them dropped)


class SpanBatch(NamedTuple):
    """What the writer inserts for a batch of ended spans."""

    rows: list[Row]  # ``SPAN_FIELDS``
    spans: int  # how many spans the rows hold (a CLIENT/SERVER pair is one row)
    failed: int = 0


# attribute -> its place in PROMOTED, and the type its column gives back
_PROMOTED_AT: Final = {key: (i, kind) for i, (key, (_column, kind)) in enumerate(PROMOTED.items())}
_TARGET_KEYS: Final = (sc.GEN_AI_TOOL_NAME, sc.GEN_AI_PROMPT_NAME, sc.MCP_RESOURCE_URI)
_SEVERITY_ERROR: Final = 17
_SORTED: Final = orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
_TS, _SID, _EVENT, _SEVERITY, _DIRECTION, _KIND = 0, 1, 2, 3, 5, 6
_REQUEST_ID, _IS_ERROR, _SERVICE = 9, 12, 14
_RESPONSE_KINDS: Final = ("response", "error")


def _attrs_json(rest: dict[str, object]) -> str:
    try:
        return orjson.dumps(rest, option=_SORTED).decode("utf-8")
    except TypeError:  # a value orjson has no type for, an int beyond 64 bits, deep nesting
        return dumps(rest, sort_keys=True)


def _promote(
    items: Iterable[tuple[str, object]], columns: list[object], rest: dict[str, object]
) -> None:
    """Attributes into their promoted ``columns`` (as in PROMOTED) or ``rest`` (``model.log_row``'s
    rules)."""
    promoted_at = _PROMOTED_AT
    for key, value in items:
        promoted = promoted_at.get(key)
        if promoted is None:
            rest[key] = value
        elif type(value) is promoted[1]:
            columns[promoted[0]] = value
        else:
            rest[key] = value
            if value is not None:
                columns[promoted[0]] = coerce(promoted[1], value)


def _target_and_json(rest: dict[str, object]) -> tuple[str | None, str | None]:
    """The ``target`` column and the ``attrs`` JSON of the attributes not promoted."""
    if not rest:
        return None, None
    for key in _TARGET_KEYS:
        value = rest.get(key)
        if isinstance(value, str) and value:
            return value, _attrs_json(rest)
    return None, _attrs_json(rest)


# what a head's attributes give every record that begins with them: (columns, rest, target,
# attrs JSON when the record adds nothing to rest)
_HeadRow = tuple[list[object], dict[str, object], str | None, str | None]


def _head_row(head: AttributeHead) -> _HeadRow:
    columns: list[object] = [None] * 8
    rest: dict[str, object] = {}
    _promote(head.attributes.items(), columns, rest)
    return columns, rest, *_target_and_json(rest)


def _own_row(record: Log, known: _HeadRow, size: int) -> _HeadRow:
    """A head's row with the record's own attributes after its ``size`` items."""
    head_columns, rest, target, attrs_json = known
    columns = head_columns.copy()
    own: dict[str, object] = {}
    _promote(islice(record.attributes.items(), size, None), columns, own)
    if own:
        rest = {**rest, **own}
        target, attrs_json = _target_and_json(rest)
    return columns, rest, target, attrs_json


_EVENT_ERROR: Final = sc.EVENT_ERROR
_STATUS_CODE: Final = sc.RPC_RESPONSE_STATUS_CODE
# what a message's record adds to its head, as it usually comes (all promoted as they are)
_SIZE, _RID, _LATENCY = sc.HELMET_MESSAGE_SIZE, sc.JSONRPC_REQUEST_ID, sc.HELMET_LATENCY_MS
assert [_PROMOTED_AT[key][1] for key in (_SIZE, _RID, _LATENCY)] == [int, str, float]


def _log_tuple(
    record: Log, hex_ids: _HexIds, heads: dict[int, _HeadRow]
) -> tuple[Row, dict[str, object]]:
    """One record's row, and its attributes that were not promoted (``model.log_row``'s rules).
    ``heads``: what each head of the batch gives (by ``id``: the records keep their heads
    alive), so a record's own attributes after its head are the only ones looked at: usually
    the size, the request id and the latency, set here without a call."""
    head = record.head
    if head is None:
        columns: list[object] = [None] * 8  # session_id .. error_type, as in PROMOTED
        rest: dict[str, object] = {}
        _promote(record.attributes.items(), columns, rest)
        target, attrs_json = _target_and_json(rest)
        session_id, direction, kind, method, request_id, latency_ms, size, error_type = columns
    else:
        known = heads.get(id(head))
        if known is None:
            known = heads[id(head)] = _head_row(head)
        columns, rest, target, attrs_json = known
        session_id, direction, kind, method, request_id, latency_ms, size, error_type = columns
        for key, value in islice(record.attributes.items(), head.size, None):
            if key == _SIZE and type(value) is int:
                size = value
            elif key == _RID and type(value) is str:
                request_id = value
            elif key == _LATENCY and type(value) is float:
                latency_ms = value
            else:  # anything else: every own attribute by `_promote`'s rules
                columns, rest, target, attrs_json = _own_row(record, known, head.size)
                session_id, direction, kind, method, request_id, latency_ms, size, error_type = (
                    columns
                )
                break
    event = record.event or None
    severity = record.severity or None
    body = record.body_json
    if body is None and record.body is not None:
        body = dumps(record.body)
    trace_id = record.trace_id
    if trace_id != hex_ids.trace:
        hex_ids.trace = trace_id
        hex_ids.trace_hex = f"{trace_id:032x}" if trace_id else None
    span_id = record.span_id  # (a call's request and answer: a few records apart)
    span_hex = hex_ids.spans.get(span_id)
    if span_hex is None and span_id:
        span_hex = hex_ids.spans[span_id] = f"{span_id:016x}"
    if error_type is not None or event == _EVENT_ERROR or _STATUS_CODE in rest:
        is_error = 1
    else:
        is_error = 1 if severity is not None and severity >= _SEVERITY_ERROR else 0
    row = (
        record.ts or record.observed or time.time_ns(), session_id, event, severity,
        record.severity_text, direction, kind, method, target, request_id, latency_ms, size,
        is_error, error_type, record.origin.service, hex_ids.trace_hex, span_hex, body,
        attrs_json,
    )  # fmt: skip
    return row, rest


# session column <- attribute, taken from any record that carries it (latest wins)
_SESSION_ATTRS: Final = (
    ("server_name", sc.HELMET_SERVER_NAME),
    ("server_command", sc.HELMET_SERVER_COMMAND),
    ("transport", sc.HELMET_TRANSPORT),
    ("proxy_pid", sc.HELMET_PROXY_PID),
    ("proxy_host", sc.HELMET_PROXY_HOST),
    ("client_name", sc.HELMET_CLIENT_NAME),
    ("client_version", sc.HELMET_CLIENT_VERSION),
    ("server_info_name", sc.HELMET_SERVER_INFO_NAME),
    ("server_version", sc.HELMET_SERVER_VERSION),
    ("protocol_version", sc.MCP_PROTOCOL_VERSION),
    ("era", sc.HELMET_ERA),
)
# only from helmet.session_end
_END_ATTRS: Final = (
    ("duration_ms", sc.HELMET_SESSION_DURATION_MS),
    ("requests", sc.HELMET_SESSION_REQUESTS),
    ("errors", sc.HELMET_SESSION_ERRORS),
    ("exit_status", sc.HELMET_EXIT_STATUS),
    ("exit_reason", sc.HELMET_EXIT_REASON),
)
# from any record that carries them; the largest value wins (both only grow)
_USAGE_ATTRS: Final = (
    ("cpu_s", sc.HELMET_SERVER_CPU_TIME),
    ("peak_memory", sc.HELMET_SERVER_MEMORY_PEAK),
)
_SESSION_KEYS: Final = {key: column for column, key in _SESSION_ATTRS}
_USAGE_KEYS: Final = {key: column for column, key in _USAGE_ATTRS}
# the upsert's columns after (session_id, first_ts, last_ts, seen_requests)
SESSION_COLUMNS: Final = (
    "service",
    *(c for c, _ in _SESSION_ATTRS),
    "start_ts",
    "end_ts",
    *(c for c, _ in _END_ATTRS),
    *(c for c, _ in _USAGE_ATTRS),
)
ERA_UNKNOWN: Final = "unknown"
_C2S: Final = sc.DIRECTION_C2S
_SESSION_START, _SESSION_END = sc.EVENT_SESSION_START, sc.EVENT_SESSION_END


def _sql_value(value: object) -> object:
    """Attribute values SQLite can bind as they are; anything else as text."""
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def session_updates(
    rows: Iterable[tuple[Row, dict[str, object]]],
) -> tuple[list[Row], list[tuple[str, str]]]:
    """One upsert per session in the batch (first/last ts, requests seen, metadata seen), and
    the (session, failed request) pairs for the live error count, from log rows and their
    attributes that were not promoted.

    Per row it looks at the few attributes the row has (not at every attribute sessions
    keep): this runs for every record the store takes."""
    bounds: dict[str, list[int]] = {}
    requests: dict[str, int] = {}
    meta: dict[str, dict[str, object]] = {}
    errors: list[tuple[str, str]] = []
    session_keys, usage_keys = _SESSION_KEYS, _USAGE_KEYS
    for row, attrs in rows:
        sid: str | None = row[_SID]  # pyright: ignore[reportAssignmentType]
        if sid is None:
            continue
        ts: int = row[_TS]  # pyright: ignore[reportAssignmentType]
        seen = bounds.get(sid)
        if seen is None:
            bounds[sid] = [ts, ts]
            entry = meta[sid] = {}
        else:
            if ts < seen[0]:
                seen[0] = ts
            elif ts > seen[1]:
                seen[1] = ts
            entry = meta[sid]
        kind = row[_KIND]
        event = row[_EVENT]
        if kind == "request" and row[_DIRECTION] == _C2S:
            requests[sid] = requests.get(sid, 0) + 1
        if row[_IS_ERROR] and (kind in _RESPONSE_KINDS or event == _EVENT_ERROR):
            # a JSON-RPC error is reported twice (helmet.response + helmet.error): count it once
            request_id = row[_REQUEST_ID]
            key = f"{row[_DIRECTION]}|{request_id}" if request_id is not None else f"{event}|{ts}"
            errors.append((sid, key))
        service = row[_SERVICE]
        if service is not None:
            entry["service"] = service
        if attrs:
            for key, value in attrs.items():
                column = session_keys.get(key)
                if column is not None:
                    if value is not None and not (
                        column == "era" and value == ERA_UNKNOWN and column in entry
                    ):
                        entry[column] = _sql_value(value)
                    continue
                column = usage_keys.get(key)
                if (
                    column is not None
                    and isinstance(value, int | float)
                    and not isinstance(value, bool)
                ):
                    known = entry.get(column)
                    entry[column] = (
                        value if not isinstance(known, int | float) else max(known, value)
                    )
        if event == _SESSION_START:
            entry["start_ts"] = ts
        elif event == _SESSION_END:
            entry["end_ts"] = ts
            for column, key in _END_ATTRS:
                value = attrs.get(key)
                if value is not None:
                    entry[column] = _sql_value(value)
    updates = [
        (sid, first, last, requests.get(sid, 0), *(meta[sid].get(c) for c in SESSION_COLUMNS))
        for sid, (first, last) in bounds.items()
    ]
    return updates, errors


def log_batch(records: Iterable[Log]) -> LogBatch:
    """The rows of the worker's log records, and their sessions' updates. A record that cannot
    be converted is left out and counted in ``failed``."""
    converted: list[tuple[Row, dict[str, object]]] = []
    failed = 0
    hex_ids = _HexIds()
    heads: dict[int, _HeadRow] = {}
    for record in records:
        try:
            converted.append(_log_tuple(record, hex_ids, heads))
        except Exception:  # a malformed record never costs the batch
            failed += 1
    sessions, errors = session_updates(converted)
    return LogBatch([row for row, _ in converted], sessions, errors, failed)


class _HexIds:
    """The text of the last trace and span id converted (a batch's records share a few)."""

    __slots__ = ("span", "span_hex", "spans", "trace", "trace_hex")

    def __init__(self) -> None:
        self.trace = self.span = -1  # no id is negative
        self.trace_hex: str | None = None
        self.span_hex: str | None = None
        self.spans: dict[int, str] = {}  # a log batch's span ids


def log_batch_of_rows(rows: Iterable[LogRow]) -> LogBatch:
    """The same for ``LogRow`` values (the SDK's records, imports, tests)."""
    converted = [(row.values(), row.attrs) for row in rows]
    sessions, errors = session_updates(converted)
    return LogBatch([row for row, _ in converted], sessions, errors)


def _span_tuple(span: Span, client_span_id: str | None, hex_ids: _HexIds) -> Row:
    """One span's row (``exporters.span_row_from_record``'s rules); ``hex_ids``: the last trace
    and parent id's text (a batch's spans share a few)."""
    rest = dict(span.attributes)
    session_id = rest.pop(sc.HELMET_SESSION_ID, None)
    segment = rest.get(sc.HELMET_TRACE_SEGMENT)
    if span.events:
        rest["span.events"] = [
            {"name": e.name, "time_unix_nano": e.ts, **e.attributes} for e in span.events
        ]
    links = None
    if span.links:
        entries: list[dict[str, object]] = []
        for link in span.links:
            entry: dict[str, object] = {
                "trace_id": f"{link.trace_id:032x}",
                "span_id": f"{link.span_id:016x}",
            }
            if link.attributes:
                entry["attributes"] = dict(link.attributes)
            entries.append(entry)
        links = dumps(entries)
    trace_id = span.trace_id
    if trace_id != hex_ids.trace:
        hex_ids.trace = trace_id
        hex_ids.trace_hex = f"{trace_id:032x}"
    parent = span.parent
    if parent != hex_ids.span:  # (the parent, here)
        hex_ids.span = parent
        hex_ids.span_hex = f"{parent:016x}" if parent else None
    status = span.status
    return (
        hex_ids.trace_hex, f"{span.span_id:016x}", hex_ids.span_hex, span.name,
        KIND_NAMES[span.kind], span.start, span.end, STATUS_NAMES[status],
        span.description if status == 2 else None,
        session_id if session_id is None or isinstance(session_id, str) else str(session_id),
        segment if isinstance(segment, int) and not isinstance(segment, bool) else None,
        span.origin.service, _attrs_json(rest) if rest else None, links, client_span_id,
    )  # fmt: skip


_CLIENT, _SERVER = "CLIENT", "SERVER"


def _same_call_rows(client: Row, server: Row) -> bool:
    """``_same_call`` for rows (without ``client_span_id``): equal but for id, parent, kind."""
    return (
        client[4] == _CLIENT
        and server[4] == _SERVER
        and client[2] == server[1]
        and client[0] == server[0]
        and client[3] == server[3]
        and client[5:] == server[5:]
        and client[13] is None
    )


def _paired(rows: Iterable[Row]) -> tuple[list[Row], int]:
    """Rows with ``client_span_id``: a CLIENT row next to the SERVER row of its parent (either
    first) that differs from it only in id, parent and kind become that SERVER row with the
    CLIENT's id. -> (rows, how many spans they hold)."""
    out: list[Row] = []
    spans = 0
    held: Row | None = None  # a CLIENT or SERVER row waiting for the other of its call
    for row in rows:
        spans += 1
        if held is not None:
            first, held = held, None
            if _same_call_rows(first, row):
                out.append((*row, first[1]))
                continue
            if _same_call_rows(row, first):
                out.append((*first, row[1]))
                continue
            out.append((*first, None))
        if row[4] == _CLIENT or row[4] == _SERVER:
            held = row
        else:
            out.append((*row, None))
    if held is not None:
        out.append((*held, None))
    return out, spans


def _same_call(client: Span, server: Span) -> bool:
    """Whether ``client`` is the CLIENT span of ``server``'s call and differs from it only in
    id, kind and parent: the same attribute objects in the same order (the recorder copies one
    map into the other; identity, so equal values of other types, 1 and True, never pass; the
    items of a head both spans still begin with are the head's), no events, no links."""
    if (
        client.kind != _CLIENT_KIND
        or server.kind != _SERVER_KIND
        or client.parent != server.span_id
        or client.trace_id != server.trace_id
        or client.end != server.end
        or client.start != server.start
        or client.status != server.status
        or client.name != server.name
        or client.events
        or server.events
        or client.links
        or server.links
        or client.origin.service != server.origin.service
        or (client.status == 2 and client.description != server.description)
    ):
        return False
    ours, theirs = client.attributes, server.attributes
    head = client.head
    if head is not None and head is server.head and len(ours) == len(theirs):
        # Both begin with exactly the head's items (`AttributeHead`: a span whose leading
        # attributes change drops its head), so only what follows them is compared; usually
        # one item (the request id).
        own = len(ours) - head.size
        if own == 0:
            return True
        if own == 1:
            key, value = next(reversed(ours.items()))
            their_key, their_value = next(reversed(theirs.items()))
            return key == their_key and value is their_value
    return list(ours) == list(theirs) and all(map(is_, ours.values(), theirs.values()))


_CLIENT_KIND, _SERVER_KIND = KIND_NAMES.index("CLIENT"), KIND_NAMES.index("SERVER")


def span_batch(spans: Sequence[Span]) -> SpanBatch:
    """The rows of the worker's ended spans (a call's CLIENT/SERVER pair, next to each other in
    either order, in one row where they agree). A span that cannot be converted is left out and
    counted in ``failed``."""
    converted: list[Row] = []
    failed = paired = 0
    hex_ids = _HexIds()
    held: Span | None = None  # a CLIENT or SERVER span waiting for the other of its call
    for span in [*spans, None]:
        if held is not None:
            first, held = held, None
            try:
                if span is not None:
                    if _same_call(first, span):
                        converted.append(_span_tuple(span, f"{first.span_id:016x}", hex_ids))
                        paired += 1
                        continue
                    if _same_call(span, first):
                        converted.append(_span_tuple(first, f"{span.span_id:016x}", hex_ids))
                        paired += 1
                        continue
            except Exception:
                failed += 2
                continue
            try:
                converted.append(_span_tuple(first, None, hex_ids))
            except Exception:
                failed += 1
        if span is None:
            break
        try:
            if span.kind == _CLIENT_KIND or span.kind == _SERVER_KIND:
                held = span
            else:
                converted.append(_span_tuple(span, None, hex_ids))
        except Exception:
            failed += 1
    return SpanBatch(converted, len(converted) + paired, failed)


def span_batch_of_rows(rows: Iterable[SpanRow]) -> SpanBatch:
    """The same for ``SpanRow`` values (the SDK's spans, imports, tests)."""
    paired, count = _paired(row.values() for row in rows)
    return SpanBatch(paired, count)
