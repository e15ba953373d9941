"""The viewer's JSON routes: each a function of a store ``Reader`` and the URL query that returns
plain data (``app`` runs them in worker threads and encodes the result with orjson).

Timestamps travel as milliseconds (``t``, a float JavaScript holds exactly enough) and, where
a cursor needs them exact, as nanosecond strings. Every value is data for the page to render as
text; nothing here is markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import orjson

from helmet_otel import semconv as sc
from helmet_otel.store import codec
from helmet_otel.store.calls import other_half
from helmet_otel.store.pages import page, record, tail
from helmet_otel.store.query import LogEntry, LogFilter, Reader, SessionInfo
from helmet_otel.store.security import finding_type, security_summary
from helmet_otel.store.servers import (
    restrict_to_servers,
    server_latencies,
    server_name,
    summarize_servers,
)
from helmet_otel.store.session_calls import session_calls
from helmet_otel.store.traces import SpanEntry, build_traces
from helmet_otel.ui.filters import EVENTS, LogQuery, Params, parse_params

__all__ = ["ROUTES", "NotFoundError", "log_filter"]

Route = Callable[[Reader, Params], object]
PREVIEW_CHARS: Final = 400
MAX_PAGE: Final = 1000
MAX_SPANS: Final = 2000
_WINDOWS: Final = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "all": 0}


class NotFoundError(LookupError):
    """A route's object is not in the store (404)."""


def _ms(ts_ns: int | None) -> float | None:
    return None if ts_ns is None else ts_ns / 1e6


def log_row(e: LogEntry) -> dict[str, object]:
    preview = codec.body_preview(e)
    return {
        "id": e.id,
        "ts": str(e.ts),
        "t": _ms(e.ts),
        "session": e.session_id,
        "event": e.event,
        "dir": e.direction,
        "kind": e.kind,
        "method": e.method,
        "target": e.target,
        "rid": e.request_id,
        "latency": e.latency_ms,
        "status": codec.status_text(e),
        "error": e.is_error,
        "service": e.service,
        "preview": preview[:PREVIEW_CHARS],
        "cut": len(preview) > PREVIEW_CHARS,
    }


def log_filter(reader: Reader, query: LogQuery) -> LogFilter | None:
    """The store filter of a log query (servers become their sessions); None: nothing matches."""
    if not query.servers:
        return query.filter
    return restrict_to_servers(query.filter, query.servers, reader.sessions())


def _cursor(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    ts, _, rid = text.partition(":")
    try:
        return int(ts), int(rid)
    except ValueError:
        raise ValueError(f"before: expected TS:ID, got {text!r}") from None


def logs(reader: Reader, params: Params) -> object:
    flt = log_filter(reader, parse_params(params))
    limit = params.number("limit", 200, 1, MAX_PAGE)
    before = _cursor(params.one("before"))
    if flt is None:
        return {"records": [], "more": False, "cursor": reader.max_log_id()}
    found = page(reader, flt, before=before, limit=limit)
    return {
        "records": [log_row(e) for e in found.entries],
        "more": found.more,
        "cursor": found.top_id,
    }


def logs_tail(reader: Reader, params: Params) -> object:
    flt = log_filter(reader, parse_params(params))
    after = params.number("after", 0, 0, 2**62)
    limit = params.number("limit", MAX_PAGE, 1, MAX_PAGE)
    if flt is None:
        return {"records": [], "cursor": max(after, reader.max_log_id()), "gap": False}
    found = tail(reader, flt, after, limit=limit)
    return {
        "records": [log_row(e) for e in found.entries],
        "cursor": found.cursor,
        "gap": found.gap,
    }


def _full(e: LogEntry) -> dict[str, object]:
    text = orjson.dumps(codec.export_record(e), option=orjson.OPT_INDENT_2).decode("utf-8")
    return {"id": e.id, "row": log_row(e), "json": text}


def one_record(reader: Reader, params: Params) -> object:
    log_id = params.number("id", 0, 1, 2**62)
    entry = record(reader, log_id)
    if entry is None:
        raise NotFoundError(f"no record {log_id} in the store")
    pair = other_half(reader, entry)
    return {"record": _full(entry), "pair": _full(pair) if pair is not None else None}


def _session(info: SessionInfo) -> dict[str, object]:
    return {
        "id": info.session_id,
        "server": server_name(info),
        "command": info.server_command,
        "transport": info.transport,
        "client": info.client,
        "server_version": info.server_version,
        "protocol": info.protocol_version,
        "era": info.era,
        "status": info.status,
        "t": _ms(info.started_ts),
        "last": _ms(info.last_ts),
        "end": _ms(info.end_ts),
        "duration_ms": info.duration_ms,
        "requests": info.requests,
        "errors": info.errors,
        "exit_status": info.exit_status,
        "exit_reason": info.exit_reason,
        "pid": info.proxy_pid,
    }


def sessions(reader: Reader, params: Params) -> object:
    limit = params.number("limit", 500, 1, 100_000)
    wanted = set(params.many("server"))
    infos = [i for i in reader.sessions() if not wanted or server_name(i) in wanted]
    infos.sort(key=lambda i: (i.started_ts, i.session_id), reverse=True)
    return {"sessions": [_session(i) for i in infos[:limit]], "total": len(infos)}


def _span(span: SpanEntry, depth: int, t0: int) -> dict[str, object]:
    return {
        "name": span.name,
        "kind": span.kind,
        "depth": depth,
        "offset_ms": (span.start_ts - t0) / 1e6,
        "duration_ms": span.duration_ms,
        "status": span.status,
        "message": span.status_message,
        "span_id": span.span_id,
        "trace_id": span.trace_id,
    }


def _zoom(params: Params, span_ms: float) -> tuple[float, float]:
    """The waterfall's range (``from``/``to``: ms after the session's start); all of it when
    not given."""
    bounds: list[float] = []
    for name, default in (("from", 0.0), ("to", span_ms)):
        text = params.one(name)
        try:
            bounds.append(default if text is None else float(text))
        except ValueError:
            raise ValueError(
                f"{name}: expected milliseconds after the start, got {text!r}"
            ) from None
    low, high = max(0.0, bounds[0]), min(span_ms, bounds[1])
    if not low < high:
        return 0.0, span_ms
    return low, high


def session(reader: Reader, params: Params) -> object:
    wanted = params.one("id")
    if wanted is None:
        raise ValueError("id: a session id is needed")
    matches = [wanted] if wanted in reader.resolve_sessions(wanted) else []
    matches = matches or reader.resolve_sessions(wanted, include_spans=True)
    if len(matches) != 1:
        raise NotFoundError(f"no session {wanted!r}" if not matches else f"{wanted!r} is ambiguous")
    sid = matches[0]
    info = next((i for i in reader.sessions() if i.session_id == sid), None)
    spans = reader.spans(sid)
    calls = session_calls(reader, sid)
    starts: list[int] = [s.start_ts for s in spans] + [p.ts for p in calls.pending]
    if info is not None:
        starts.append(info.started_ts)
    t0 = min(starts, default=0)
    ends: list[int] = [s.end_ts or s.start_ts for s in spans] + [p.ts for p in calls.pending]
    end = max(ends, default=t0)
    if info is not None and info.status == "active":
        end = max(end, time.time_ns())
    span_ms = (end - t0) / 1e6
    low, high = _zoom(params, span_ms)
    rows: list[dict[str, object]] = []
    shown = 0  # the spans in the zoomed range
    for tree in build_traces(spans):
        for root in tree.roots:
            for depth, node in root.walk():
                row = _span(node.span, depth, t0)
                start_ms = float(row["offset_ms"])  # pyright: ignore[reportArgumentType]
                if start_ms > high or start_ms + (node.span.duration_ms or 0.0) < low:
                    continue
                shown += 1
                if len(rows) < MAX_SPANS:
                    rows.append(row)
    pending: list[dict[str, object]] = [
        {"id": p.id, "offset_ms": (p.ts - t0) / 1e6, "method": p.method, "target": p.target,
         "rid": p.request_id, "dir": p.direction}
        for p in calls.pending if (p.ts - t0) / 1e6 <= high
    ]  # fmt: skip
    numbers: dict[str, object] = {
        "records": calls.records, "requests": calls.requests, "answered": calls.answered,
        "errors": calls.errors, "p50_ms": calls.p50_ms, "p95_ms": calls.p95_ms,
        "max_ms": calls.max_ms,
    }  # fmt: skip
    return {
        "session": _session(info) if info is not None else {"id": sid, "server": None},
        "t0": _ms(t0),
        "span_ms": span_ms,
        "zoom": None if (low, high) == (0.0, span_ms) else [low, high],
        "spans": rows,
        "spans_in_range": shown,
        "spans_total": len(spans),
        "pending": pending,
        "numbers": numbers,
    }


def servers(reader: Reader, params: Params) -> object:
    return {
        "servers": [
            {"name": s.name, "command": s.command, "transport": s.transport,
             "sessions": s.sessions, "active": s.active, "calls": s.calls, "errors": s.errors,
             "error_rate": s.error_rate, "p95_ms": s.p95_ms, "last": _ms(s.last_seen_ns) or None,
             "findings": s.findings}
            for s in summarize_servers(reader, latency=False)
        ]
    }  # fmt: skip


def servers_p95(reader: Reader, params: Params) -> object:
    """Apart from ``servers``: the page shows the list first and the p95 column when it comes."""
    return {"p95_ms": server_latencies(reader, reader.sessions())}


def _window(params: Params) -> tuple[str, int | None]:
    name = params.one("window") or "1h"
    seconds = _WINDOWS.get(name)
    if seconds is None:
        raise ValueError(f"window: expected one of {', '.join(_WINDOWS)}, got {name!r}")
    return name, (time.time_ns() - seconds * 1_000_000_000) if seconds else None


def stats(reader: Reader, params: Params) -> object:
    window, since = _window(params)
    by_text = params.one("by") or "method"
    by: Literal["method", "tool"] = "tool" if by_text == "tool" else "method"
    if by_text not in ("method", "tool"):
        raise ValueError(f"by: expected method or tool, got {by_text!r}")
    result = reader.stats(by=by, since_ns=since)
    return {
        "window": window,
        "by": by,
        "rows": [
            {"method": r.method, "target": r.target, "calls": r.calls, "errors": r.errors,
             "error_rate": r.error_rate, "bytes": r.bytes, "p50_ms": r.p50_ms, "p95_ms": r.p95_ms,
             "p99_ms": r.p99_ms, "max_ms": r.max_ms}
            for r in result.rows
        ],
        "errors": [
            {"method": e.method, "target": e.target, "error": e.error, "count": e.count,
             "t": _ms(e.last_ts)}
            for e in result.errors
        ],
    }  # fmt: skip


def security(reader: Reader, params: Params) -> object:
    window, since = _window(params)
    found = security_summary(reader, since_ns=since)
    latest: list[dict[str, object]] = []
    for e in found.latest:
        attrs = e.extra_attributes
        latest.append({**log_row(e), "type": finding_type(e),
                       "severity": attrs.get(sc.HELMET_SECURITY_SEVERITY),
                       "rule": attrs.get(sc.HELMET_SECURITY_RULE)})  # fmt: skip
    return {
        "window": window,
        "total": found.total,
        "blocks": found.blocks,
        "shadow_blocks": found.shadow_blocks,
        "by_type": [{"type": c.type, "severity": c.severity, "count": c.count, "t": _ms(c.last_ts)}
                    for c in found.by_type],
        "blocks_by_rule": [{"rule": b.rule, "tool": b.tool, "server": b.server,
                            "enforced": b.enforced, "shadow": b.shadow, "t": _ms(b.last_ts)}
                           for b in found.blocks_by_rule],
        "latest": latest,
    }  # fmt: skip


def page_meta(store: Path) -> dict[str, object]:
    """What the page needs before any query (it is put into the page itself)."""
    return {"events": list(EVENTS), "store": str(store), "windows": list(_WINDOWS)}


def meta(reader: Reader, params: Params) -> object:
    return page_meta(reader.path)


ROUTES: Final[dict[str, Route]] = {
    "/api/meta": meta,
    "/api/servers": servers,
    "/api/servers/p95": servers_p95,
    "/api/logs": logs,
    "/api/tail": logs_tail,
    "/api/record": one_record,
    "/api/sessions": sessions,
    "/api/session": session,
    "/api/stats": stats,
    "/api/security": security,
}
