"""One session's calls: how many, how many failed, latency percentiles, and the requests still
waiting for an answer (in flight while the session runs; unanswered once it ended)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from helmet_otel import semconv as sc
from helmet_otel.percentile import percentile
from helmet_otel.store.pages import read_rows
from helmet_otel.store.query import Reader

__all__ = ["Pending", "SessionCalls", "session_calls"]


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    ts: int
    direction: str | None
    method: str | None
    target: str | None
    request_id: str


@dataclass(frozen=True, slots=True)
class SessionCalls:
    records: int
    requests: int
    answered: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    pending: list[Pending]  # oldest first


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def session_calls(reader: Reader, session_id: str) -> SessionCalls:
    rows = read_rows(
        reader,
        "SELECT id, ts, kind, direction, method, target, request_id, latency_ms, is_error, event"
        " FROM logs WHERE session_id = ? ORDER BY ts, id",
        (session_id,),
    )
    waiting: dict[tuple[object, object], Pending] = {}
    latencies: list[float] = []
    requests = answered = errors = 0
    for rid, ts, kind, direction, method, target, request_id, latency, is_error, event in rows:
        if kind == "request" and request_id is not None:
            requests += 1
            waiting[(direction, request_id)] = Pending(
                cast(int, rid), cast(int, ts), _text(direction), _text(method), _text(target),
                str(request_id),
            )  # fmt: skip
        elif kind in ("response", "error") and event == sc.EVENT_RESPONSE:
            # a JSON-RPC error also has a helmet.error record: count the helmet.response
            other = sc.DIRECTION_C2S if direction == sc.DIRECTION_S2C else sc.DIRECTION_S2C
            if waiting.pop((other, request_id), None) is not None:
                answered += 1
            if is_error:
                errors += 1
            if isinstance(latency, float | int):
                latencies.append(float(latency))
    latencies.sort()
    return SessionCalls(
        records=len(rows),
        requests=requests,
        answered=answered,
        errors=errors,
        p50_ms=percentile(latencies, 0.5) if latencies else None,
        p95_ms=percentile(latencies, 0.95) if latencies else None,
        max_ms=latencies[-1] if latencies else None,
        pending=sorted(waiting.values(), key=lambda p: (p.ts, p.id)),
    )
