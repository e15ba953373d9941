"""Calls: a request joined with its answer (``logs --calls``, ``show``, ``sessions --active``).

A call is a ``kind = request`` record and the first answer (``response`` or ``error``) in the
other direction with the same session and JSON-RPC id at or after it. The telemetry worker
writes a call's request and answers in the call's span, so the answer is looked for among the
records of the request's span first (``logs_spans``: a few rows); where that finds none (a
record without a span id, an answer written elsewhere, none at all), among the session's
records after the request (``logs(session_id, ts)``: those between a request and its answer).
A JSON-RPC error comes as ``helmet.response`` and ``helmet.error``; the response is the
answer. A request with no answer is ``pending`` while its session runs and
``no response`` once it has ended (the telemetry worker also writes a ``helmet.error`` with
``error.type = no_response`` for it, which then is its answer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, cast

from helmet_otel import semconv as sc
from helmet_otel.store.model import dumps
from helmet_otel.store.model import error_message as model_error_message
from helmet_otel.store.query import LOG_COLUMNS, LogEntry, LogFilter, Reader

__all__ = [
    "CallEntry",
    "answer_of",
    "argument_summary",
    "arguments",
    "calls",
    "error_message",
    "other_half",
    "pending_calls",
    "request_of",
]

_ANSWER_ORDER: Final = f"ORDER BY ts, event = '{sc.EVENT_ERROR}', id"
# an error answer that is the helmet.error twin of a helmet.response is not a call of its own
_NOT_A_TWIN: Final = (
    f"NOT (event = '{sc.EVENT_ERROR}' AND request_id IS NOT NULL AND EXISTS ("
    "SELECT 1 FROM logs d WHERE d.session_id IS logs.session_id AND d.request_id = logs.request_id"
    f" AND d.ts = logs.ts AND d.event = '{sc.EVENT_RESPONSE}'))"
)


@dataclass(frozen=True, slots=True)
class CallEntry:
    """A request and its answer; either may be missing (an answer to an unknown request)."""

    request: LogEntry | None
    answer: LogEntry | None
    active: bool  # the session still runs (an unanswered call is in flight, not failed)

    @property
    def first(self) -> LogEntry:
        record = self.request if self.request is not None else self.answer
        assert record is not None
        return record

    @property
    def status(self) -> str:
        """``ok``, ``error``, ``pending`` (in flight) or ``no response`` (session ended)."""
        if self.answer is None:
            return "pending" if self.active else "no response"
        if self.answer.error_type == sc.ERROR_TYPE_NO_RESPONSE:  # the session ended first
            return "no response"
        return "error" if self.answer.is_error else "ok"

    @property
    def failed(self) -> bool:
        return self.status in ("error", "no response")

    @property
    def latency_ms(self) -> float | None:
        return self.answer.latency_ms if self.answer is not None else None

    @property
    def method(self) -> str | None:
        return self.first.method or (self.answer.method if self.answer is not None else None)

    @property
    def target(self) -> str | None:
        return self.first.target or (self.answer.target if self.answer is not None else None)

    @property
    def error(self) -> str:
        """The error message ('' when the call did not fail)."""
        if self.answer is None:
            return "" if self.active else "the session ended before an answer"
        return error_message(self.answer) if self.answer.is_error else ""


# How many of a span's records the span look-up reads (a call's span holds its request, its
# answer, an error's twin and the odd finding; a session's root span holds many more).
_SPAN_RECORDS: Final = 64


def _other_half(reader: Reader, entry: LogEntry, where: str, order: str) -> LogEntry | None:
    """The first record in ``order`` of ``entry``'s session that meets ``where`` (whose
    parameters are the session, the request id, the time and the direction of ``entry``):
    looked for among the records of ``entry``'s span first, then along the session's time."""
    args: list[object] = [entry.session_id, entry.request_id, entry.ts, entry.direction]
    of_span = None
    if entry.span_id is not None:
        of_span = reader.span_records(entry.span_id, first=_SPAN_RECORDS)
    if of_span is not None:
        source, span_args = of_span
        rows = reader.run(
            f"SELECT {LOG_COLUMNS} FROM {source} AND {where} {order} LIMIT 1",
            [*span_args, *args],
        )
        if rows:
            return LogEntry.from_row(rows[0])
    rows = reader.run(
        f"SELECT {LOG_COLUMNS} FROM logs INDEXED BY logs_session_ts WHERE {where} {order} LIMIT 1",
        args,
    )
    return LogEntry.from_row(rows[0]) if rows else None


_ANSWER: Final = (
    "session_id = ? AND request_id = ? AND ts >= ? AND kind IN ('response', 'error')"
    " AND direction IS NOT ?"
)
_REQUEST: Final = (
    "session_id = ? AND request_id = ? AND ts <= ? AND kind = 'request' AND direction IS NOT ?"
)


def answer_of(reader: Reader, request: LogEntry) -> LogEntry | None:
    """The first answer to ``request`` (same session and id, the other direction)."""
    if request.request_id is None or request.session_id is None or request.kind != "request":
        return None
    return _other_half(reader, request, _ANSWER, _ANSWER_ORDER)


def request_of(reader: Reader, answer: LogEntry) -> LogEntry | None:
    """The request ``answer`` answers (the latest one with its id at or before it)."""
    if answer.request_id is None or answer.session_id is None:
        return None
    if answer.kind not in ("response", "error"):
        return None
    return _other_half(reader, answer, _REQUEST, "ORDER BY ts DESC, id DESC")


def other_half(reader: Reader, entry: LogEntry) -> LogEntry | None:
    """A request's answer, or an answer's request; None for any other record."""
    if entry.kind == "request":
        return answer_of(reader, entry)
    return request_of(reader, entry)


def calls(
    reader: Reader,
    flt: LogFilter,
    *,
    limit: int | None = None,
    active: frozenset[str] = frozenset(),
) -> Iterator[CallEntry]:
    """The calls the filter selects, oldest first (with ``limit``, the newest ``limit``).

    The filter applies to the requests; with ``errors`` it selects the failed answers instead
    (every failed call has one, an unanswered call of an ended session included). ``active``:
    the sessions still running, whose unanswered calls are pending.
    """
    resolved = reader.resolve(flt)
    if resolved.empty:
        return
    anchor_flt = dataclasses.replace(flt, events=(), exclude_events=())
    where, args = anchor_flt.where(resolved)
    if flt.errors:
        where += f" AND kind IN ('response', 'error') AND {_NOT_A_TWIN}"
    else:
        where += " AND kind = 'request'"
    order = "ORDER BY ts, id"
    if limit:
        sql = (
            f"SELECT {LOG_COLUMNS} FROM logs WHERE id IN (SELECT id FROM logs WHERE {where}"
            f" ORDER BY ts DESC, id DESC LIMIT ?) {order}"
        )
        rows = reader.run(sql, [*args, limit])
    else:
        rows = reader.run(f"SELECT {LOG_COLUMNS} FROM logs WHERE {where} {order}", args)
    for row in rows:
        entry = LogEntry.from_row(row)
        live = entry.session_id in active
        if flt.errors:
            yield CallEntry(request_of(reader, entry), entry, live)
        else:
            yield CallEntry(entry, answer_of(reader, entry), live)


PENDING_WINDOW: Final = 256


def pending_calls(
    reader: Reader, session_id: str, *, window: int = PENDING_WINDOW
) -> list[LogEntry]:
    """The requests of ``session_id`` that have no answer yet, oldest first, among its newest
    ``window`` requests (a live session's calls in flight are its latest ones; looking
    further back would read the answers of all of a long session's calls)."""
    rows = reader.run(
        f"SELECT {LOG_COLUMNS} FROM logs WHERE id IN (SELECT id FROM logs"
        " WHERE session_id = ? AND kind = 'request' AND request_id IS NOT NULL"
        " ORDER BY ts DESC, id DESC LIMIT ?) ORDER BY ts, id",
        (session_id, window),
    )
    requests = [LogEntry.from_row(r) for r in rows]
    if not requests:
        return []
    # the answers from the oldest of them on: one pass along the session's time
    answers: dict[object, list[tuple[int, object]]] = {}
    for request_id, ts, direction in reader.run(
        "SELECT request_id, ts, direction FROM logs INDEXED BY logs_session_ts"
        " WHERE session_id = ? AND ts >= ? AND kind IN ('response', 'error')"
        " AND request_id IS NOT NULL",
        (session_id, requests[0].ts),
    ):
        answers.setdefault(request_id, []).append((cast(int, ts), direction))
    return [
        r for r in requests
        if not any(ts >= r.ts and direction != r.direction
                   for ts, direction in answers.get(r.request_id, ()))
    ]  # fmt: skip


def error_message(answer: LogEntry) -> str:
    """What a failed answer says (``model.error_message``)."""
    return model_error_message(answer.extra_attributes, answer.body, answer.error_type)


def arguments(request: LogEntry | None) -> object:
    """A request's arguments: ``params.arguments`` of a tool or prompt call, else the params
    without ``_meta``."""
    if request is None:
        return None
    body = request.body
    if not isinstance(body, dict):
        return body
    params: dict[str, object] = body  # pyright: ignore[reportUnknownVariableType]
    if request.method in ("tools/call", "prompts/get") and "arguments" in params:
        return params["arguments"]
    rest = {k: v for k, v in params.items() if k != "_meta"}
    return rest or None


def argument_summary(request: LogEntry | None) -> str:
    """Arguments on one line: ``key=value`` pairs (values as compact JSON)."""
    args = arguments(request)
    if args is None:
        return ""
    if isinstance(args, dict):
        pairs: dict[str, object] = args  # pyright: ignore[reportUnknownVariableType]
        return " ".join(f"{k}={dumps(v)}" for k, v in pairs.items())
    return dumps(args)
