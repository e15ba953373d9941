"""``helmet-otel stats`` over the store: calls, errors, bytes and latency percentiles per method
(or per method and tool), and the most frequent errors. ``Reader.stats`` runs ``compute_stats``
on its connection; definitions in docs/store.md."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from helmet_otel import semconv as sc
from helmet_otel.percentile import percentile
from helmet_otel.store.model import decode, error_message

__all__ = ["ErrorCount", "Query", "StatRow", "Stats", "compute_stats"]

# How many calls a record stands for: more than one while the proxy traced only a sample
# (``helmet.sample.weight``, see docs/design.md). The ``instr`` test keeps the usual record,
# which has none, from paying for a JSON parse.
_WEIGHT: Final = (
    f"(CASE WHEN instr(attrs, '{sc.HELMET_SAMPLE_WEIGHT}') THEN"
    f" coalesce(json_extract(attrs, '$.\"{sc.HELMET_SAMPLE_WEIGHT}\"'), 1) ELSE 1 END)"
)
Key = tuple[str, str | None]  # (method, tool or None)
Query = Callable[[str, Sequence[object]], list[tuple[object, ...]]]
"""Runs SQL with its arguments and returns the rows (``Reader._query``)."""


@dataclass(slots=True)
class StatRow:
    method: str
    target: str | None
    calls: int
    errors: int
    bytes: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


@dataclass(slots=True)
class ErrorCount:
    method: str
    target: str | None
    error: str
    count: int
    last_ts: int
    sample: str = ""  # the message of the latest such error


@dataclass(slots=True)
class Stats:
    by: str
    since_ns: int | None
    until_ns: int | None
    rows: list[StatRow]
    errors: list[ErrorCount]


def compute_stats(
    query: Query,
    *,
    by: Literal["method", "tool"] = "method",
    since_ns: int | None = None,
    until_ns: int | None = None,
    top_errors: int = 10,
    session_ids: Sequence[str] | None = None,
    services: Sequence[str] | None = None,
) -> Stats:
    """Per method (or per method and tool): calls, errors, bytes, latency percentiles; of the
    given sessions and servers (``service.name``) when they are not None."""
    conds: list[str] = []
    args: list[object] = []
    for column, values in (("session_id", session_ids), ("service", services)):
        if values is not None:
            conds.append(f"{column} IN ({', '.join('?' for _ in values)})" if values else "0")
            args.extend(values)
    if since_ns is not None:
        conds.append("ts >= ?")
        args.append(since_ns)
    if until_ns is not None:
        conds.append("ts < ?")
        args.append(until_ns)
    if by == "tool":
        conds.append("target IS NOT NULL")
    extra = "".join(f" AND {c}" for c in conds)
    group = "coalesce(method, '(unknown)'), " + ("target" if by == "tool" else "NULL")
    calls: dict[Key, int] = {}
    size: dict[Key, int] = {}
    for method, target, n, nbytes in query(
        f"SELECT {group}, total({_WEIGHT}), total(size * {_WEIGHT}) FROM logs"
        f" WHERE kind = 'request'{extra} GROUP BY 1, 2",
        args,
    ):
        key: Key = (str(method), target if isinstance(target, str) else None)
        calls[key] = round(n)  # pyright: ignore[reportArgumentType]
        size[key] = round(nbytes)  # pyright: ignore[reportArgumentType]
    latency: dict[Key, list[float]] = {}
    answers: dict[Key, int] = {}
    failed: dict[Key, int] = {}
    errors: dict[tuple[str, str | None, str], list[int]] = {}
    samples: dict[tuple[str, str | None, str], tuple[int, object, object, object]] = {}
    seen_errors: set[tuple[object, ...]] = set()
    rows = query(
        f"SELECT {group}, kind, latency_ms, size, is_error, error_type,"
        " CASE WHEN is_error THEN attrs END, ts, session_id, direction, request_id, id,"
        f" {_WEIGHT}, CASE WHEN is_error THEN body END FROM logs WHERE kind IN ('response', 'error'){extra}",
        args,
    )
    for (
        method,
        target,
        kind,
        lat,
        nbytes,
        is_err,
        etype,
        attrs,
        ts,
        sid,
        direc,
        rid,
        rowid,
        weight,
        body,
    ) in rows:
        w = int(weight)  # pyright: ignore[reportArgumentType]
        key = (str(method), target if isinstance(target, str) else None)
        if kind == "error":
            # a JSON-RPC error comes twice (helmet.response and helmet.error): count it once
            ident = (sid, direc, rid) if rid is not None else (rowid,)
            if ident in seen_errors:
                continue
            seen_errors.add(ident)
        answers[key] = answers.get(key, 0) + w
        if isinstance(nbytes, int):
            size[key] = size.get(key, 0) + nbytes * w
        if isinstance(lat, float | int):
            latency.setdefault(key, []).append(float(lat))
        if is_err:
            failed[key] = failed.get(key, 0) + w
            ekey = (key[0], key[1], _error_label(etype, attrs))
            entry = errors.setdefault(ekey, [0, 0])
            entry[0] += w
            entry[1] = max(entry[1], int(ts))  # pyright: ignore[reportArgumentType]
            if ekey not in samples or samples[ekey][0] <= int(ts):  # pyright: ignore[reportArgumentType]
                samples[ekey] = (int(ts), etype, attrs, body)  # pyright: ignore[reportArgumentType]
    result: list[StatRow] = []
    for key in set(calls) | set(answers):
        values = sorted(latency.get(key, ()))
        result.append(
            StatRow(
                method=key[0],
                target=key[1],
                calls=max(calls.get(key, 0), answers.get(key, 0)),
                errors=failed.get(key, 0),
                bytes=size.get(key, 0),
                p50_ms=percentile(values, 0.50) if values else None,
                p95_ms=percentile(values, 0.95) if values else None,
                p99_ms=percentile(values, 0.99) if values else None,
                max_ms=values[-1] if values else None,
            )
        )
    result.sort(key=lambda r: (-(r.p95_ms or -1.0), -r.calls, r.method, r.target or ""))
    error_rows = [
        ErrorCount(method=m, target=t, error=label, count=c[0], last_ts=c[1])
        for (m, t, label), c in errors.items()
    ]
    error_rows.sort(key=lambda e: (-e.count, e.method, e.target or "", e.error))
    for e in error_rows[:top_errors]:  # decode only the samples shown
        _ts, etype, attrs, body = samples[(e.method, e.target, e.error)]
        extra = decode(attrs) if isinstance(attrs, str) else None
        e.sample = error_message(
            extra if isinstance(extra, dict) else {},  # pyright: ignore[reportUnknownArgumentType]
            decode(body) if isinstance(body, str) else None,
            etype if isinstance(etype, str) else None,
        )
    return Stats(
        by=by, since_ns=since_ns, until_ns=until_ns, rows=result, errors=error_rows[:top_errors]
    )


def _error_label(error_type: object, attrs: object) -> str:
    if isinstance(error_type, str) and error_type:
        return error_type
    if isinstance(attrs, str) and sc.RPC_RESPONSE_STATUS_CODE in attrs:
        decoded = decode(attrs)
        if isinstance(decoded, dict):
            code = decoded.get(sc.RPC_RESPONSE_STATUS_CODE)  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
            if code is not None:
                return str(code)  # pyright: ignore[reportUnknownArgumentType]
    return "error"
