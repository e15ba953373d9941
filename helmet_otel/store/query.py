"""The reading side of the store: filters, log listing and tailing, sessions, stats, traces.

``Reader`` opens the store query-only and never writes (except to upgrade an old schema, which
needs write access once). Every method returns plain dataclasses; rendering is the CLI's job.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from helmet_otel import semconv as sc
from helmet_otel.store.model import decode, full_attributes
from helmet_otel.store.procfs import pid_alive
from helmet_otel.store.schema import StoreError, connect_reader
from helmet_otel.store.stats import Stats, compute_stats

__all__ = [
    "LOST_EXIT_REASON",
    "LogEntry",
    "LogFilter",
    "Reader",
    "SessionInfo",
    "SpanEntry",
    "SpanNode",
    "TraceTree",
    "fts_query",
]

_LOG_COLUMNS: Final = (
    "id, ts, session_id, event, severity_number, severity_text, direction, kind, method, "
    "target, request_id, latency_ms, size, is_error, error_type, service, trace_id, span_id, "
    "body, attrs"
)
LOG_COLUMNS: Final = _LOG_COLUMNS  # the column order ``LogEntry.from_row`` reads
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_PREFIX_END: Final = "\U0010ffff"
LOST_EXIT_REASON: Final = sc.LOST_EXIT_REASON


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One stored log record as read back."""

    id: int
    ts: int
    session_id: str | None
    event: str | None
    severity_number: int | None
    severity_text: str | None
    direction: str | None
    kind: str | None
    method: str | None
    target: str | None
    request_id: str | None
    latency_ms: float | None
    size: int | None
    is_error: bool
    error_type: str | None
    service: str | None
    trace_id: str | None
    span_id: str | None
    body_json: str | None
    attrs_json: str | None

    @classmethod
    def from_row(cls, row: Sequence[object]) -> LogEntry:
        return cls(*row[:13], bool(row[13]), *row[14:])  # pyright: ignore[reportArgumentType,reportCallIssue]

    @property
    def body(self) -> object:
        return decode(self.body_json)

    @property
    def extra_attributes(self) -> dict[str, object]:
        value = decode(self.attrs_json)
        return value if isinstance(value, dict) else {}  # pyright: ignore[reportUnknownVariableType]

    @property
    def attributes(self) -> dict[str, object]:
        """The record's full attribute map, as it arrived (sorted by key)."""
        columns: dict[str, object] = {
            "session_id": self.session_id,
            "direction": self.direction,
            "kind": self.kind,
            "method": self.method,
            "request_id": self.request_id,
            "latency_ms": self.latency_ms,
            "size": self.size,
            "error_type": self.error_type,
        }
        return full_attributes(columns, self.extra_attributes)

    @property
    def status_code(self) -> object:
        if self.attrs_json is None or sc.RPC_RESPONSE_STATUS_CODE not in self.attrs_json:
            return None
        return self.extra_attributes.get(sc.RPC_RESPONSE_STATUS_CODE)


def fts_query(text: str) -> str | None:
    """``--grep`` text -> an FTS5 phrase query: the words in order, the last one as a prefix.

    ``rate limi`` matches "Rate limited"; ``api_key`` matches "api key" and "API-KEY". None when
    the text has no word characters.
    """
    tokens = _TOKEN.findall(text)
    if not tokens:
        return None
    return '"' + " ".join(tokens) + '"*'


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What ``helmet-otel logs`` selects. Empty tuples and None mean "any"."""

    session_prefixes: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    direction: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    grep: str | None = None
    errors: bool = False

    def where(self, session_ids: Sequence[str] | None) -> tuple[str, list[object]]:
        """SQL conditions. ``session_ids``: the prefixes resolved to ids (None: use ranges)."""
        conds: list[str] = []
        args: list[object] = []
        if session_ids is not None:
            if len(session_ids) == 1:
                conds.append("session_id = ?")
            else:
                conds.append(f"session_id IN ({', '.join('?' for _ in session_ids)})")
            args.extend(session_ids)
        elif self.session_prefixes:
            ranges = ["(session_id >= ? AND session_id < ?)" for _ in self.session_prefixes]
            conds.append("(" + " OR ".join(ranges) + ")")
            for prefix in self.session_prefixes:
                args.extend((prefix, prefix + _PREFIX_END))
        for column, values in (("event", self.events), ("method", self.methods)):
            if values:
                conds.append(f"{column} IN ({', '.join('?' for _ in values)})")
                args.extend(values)
        if self.tools:
            conds.append(f"target IN ({', '.join('?' for _ in self.tools)})")
            args.extend(self.tools)
        if self.direction is not None:
            conds.append("direction = ?")
            args.append(self.direction)
        if self.since_ns is not None:
            conds.append("ts >= ?")
            args.append(self.since_ns)
        if self.until_ns is not None:
            conds.append("ts < ?")
            args.append(self.until_ns)
        if self.errors:
            conds.append("is_error = 1")
        if self.grep is not None:
            query = fts_query(self.grep)
            if query is None:
                conds.append("0")
            else:
                conds.append("id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?)")
                args.append(query)
        return (" AND ".join(conds) or "1"), args


@dataclass(slots=True)
class SessionInfo:
    session_id: str
    service: str | None
    server_name: str | None
    server_command: str | None
    transport: str | None
    proxy_pid: int | None
    proxy_host: str | None
    client_name: str | None
    client_version: str | None
    server_info_name: str | None
    server_version: str | None
    protocol_version: str | None
    era: str | None
    first_ts: int
    last_ts: int
    start_ts: int | None
    end_ts: int | None
    duration_ms: float | None
    requests: int | None
    errors: int | None
    exit_status: object
    exit_reason: str | None
    status: str = ""  # ended | failed | active | lost

    @property
    def started_ts(self) -> int:
        return self.start_ts if self.start_ts is not None else self.first_ts

    @property
    def client(self) -> str | None:
        if self.client_name is None:
            return None
        return (
            f"{self.client_name} {self.client_version}" if self.client_version else self.client_name
        )

    @property
    def server(self) -> str | None:
        return self.service or self.server_name or self.server_info_name


_SESSION_COLUMNS: Final = (
    "session_id, service, server_name, server_command, transport, proxy_pid, proxy_host, "
    "client_name, client_version, server_info_name, server_version, protocol_version, era, "
    "first_ts, last_ts, start_ts, end_ts, duration_ms, requests, errors, exit_status, exit_reason"
)


@dataclass(frozen=True, slots=True)
class SpanEntry:
    id: int
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
    attrs_json: str | None
    links_json: str | None

    @property
    def duration_ms(self) -> float | None:
        return None if self.end_ts is None else (self.end_ts - self.start_ts) / 1e6

    @property
    def attributes(self) -> dict[str, object]:
        value = decode(self.attrs_json)
        return value if isinstance(value, dict) else {}  # pyright: ignore[reportUnknownVariableType]

    @property
    def links(self) -> list[object]:
        value = decode(self.links_json)
        return value if isinstance(value, list) else []  # pyright: ignore[reportUnknownVariableType]


@dataclass(slots=True)
class SpanNode:
    span: SpanEntry
    children: list[SpanNode] = field(default_factory=list["SpanNode"])

    def walk(self, depth: int = 0) -> Iterator[tuple[int, SpanNode]]:
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)


@dataclass(slots=True)
class TraceTree:
    trace_id: str
    segment: int | None
    roots: list[SpanNode]


def _count(value: object) -> int:
    """A stored count (an integer, or whatever a foreign record put there) as an int."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float | str):
        with contextlib.suppress(ValueError, OverflowError):
            return int(float(value))
    return 0


class Reader:
    """Query-only access to a store. ``Reader.open(path)`` raises ``StoreError``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Reader:
        return cls(connect_reader(path), path)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the store at {self.path}: {exc}") from None

    # --- sessions -------------------------------------------------------------------------

    def resolve_sessions(self, prefix: str, *, include_spans: bool = False) -> list[str]:
        """Session ids starting with ``prefix`` (sorted); optionally also those only in spans."""
        bounds = (prefix, prefix + _PREFIX_END)
        sql = "SELECT session_id FROM sessions WHERE session_id >= ? AND session_id < ?"
        if include_spans:
            sql += (
                " UNION SELECT DISTINCT session_id FROM spans"
                " WHERE session_id >= ? AND session_id < ?"
            )
            bounds = bounds * 2
        rows = self._query(f"SELECT session_id FROM ({sql}) ORDER BY session_id", bounds)
        return [str(r[0]) for r in rows]

    def sessions(
        self, *, since_ns: int | None = None, now_ns: int | None = None
    ) -> list[SessionInfo]:
        """Sessions with activity since ``since_ns``, oldest start first, with live status."""
        sql = f"SELECT {_SESSION_COLUMNS}, seen_requests FROM sessions"
        args: list[object] = []
        if since_ns is not None:
            sql += " WHERE last_ts >= ?"
            args.append(since_ns)
        sql += " ORDER BY coalesce(start_ts, first_ts), session_id"
        now = time.time_ns() if now_ns is None else now_ns
        host = socket.gethostname()
        result: list[SessionInfo] = []
        errors: dict[str, int] = {
            str(sid): int(n)  # pyright: ignore[reportArgumentType]
            for sid, n in self._query(
                "SELECT session_id, count(*) FROM session_errors GROUP BY session_id"
            )
        }
        for row in self._query(sql, args):
            info = SessionInfo(*row[:-1])  # pyright: ignore[reportArgumentType]
            seen_requests = int(row[-1])  # pyright: ignore[reportArgumentType]
            self._complete(info, now, host, seen_requests, errors.get(info.session_id, 0))
            result.append(info)
        return result

    def _complete(
        self, info: SessionInfo, now: int, host: str, seen_requests: int, seen_errors: int
    ) -> None:
        if info.end_ts is not None:
            failed = info.exit_status not in (None, 0, "0", "")
            if (info.exit_reason or "").startswith(LOST_EXIT_REASON):
                info.status = "lost"  # the worker ended it for a proxy that went away
            else:
                info.status = "failed" if failed else "ended"
            if info.duration_ms is None:
                info.duration_ms = (info.end_ts - info.started_ts) / 1e6
        else:
            alive = True
            if info.proxy_pid is not None and (info.proxy_host in (None, host)):
                alive = pid_alive(int(info.proxy_pid), started_by_ns=info.started_ts)
            info.status = "active" if alive else "lost"
            info.duration_ms = ((now if alive else info.last_ts) - info.started_ts) / 1e6
        # helmet.session_end's counts, unless more were seen: the end of a killed proxy's
        # session may know fewer than its records showed while it ran.
        info.requests = max(_count(info.requests), seen_requests)
        info.errors = max(_count(info.errors), seen_errors)

    # --- logs -----------------------------------------------------------------------------

    def _session_ids(self, flt: LogFilter) -> list[str] | None:
        if not flt.session_prefixes:
            return None
        ids: list[str] = []
        for prefix in flt.session_prefixes:
            ids.extend(i for i in self.resolve_sessions(prefix) if i not in ids)
        return ids

    def max_log_id(self) -> int:
        row = self._query("SELECT max(id) FROM logs")[0]
        return int(row[0] or 0)  # pyright: ignore[reportArgumentType]

    @staticmethod
    def _source(flt: LogFilter, session_ids: Sequence[str] | None) -> str:
        """With only full-text and time/event filters, walk the time index newest first and
        test FTS membership: a common word stops after ``limit`` rows, a rare one costs one
        scan of the (covering) time index, instead of sorting every match."""
        if flt.grep is not None and session_ids is None and not flt.tools:
            return "logs INDEXED BY logs_ts"
        return "logs"

    def logs(
        self, flt: LogFilter, *, limit: int | None = None, max_id: int | None = None
    ) -> list[LogEntry]:
        """Matching records, oldest first; with ``limit``, the newest ``limit`` of them."""
        ids = self._session_ids(flt)
        if ids is not None and not ids:
            return []
        where, args = flt.where(ids)
        if max_id is not None:
            where += " AND id <= ?"
            args.append(max_id)
        source = self._source(flt, ids)
        if limit is None:
            sql = f"SELECT {_LOG_COLUMNS} FROM {source} WHERE {where} ORDER BY ts, id"
            return [LogEntry.from_row(r) for r in self._query(sql, args)]
        # pick the ids first (a narrow sort), then read those rows
        sql = (
            f"SELECT {_LOG_COLUMNS} FROM logs WHERE id IN (SELECT id FROM {source} WHERE {where}"
            " ORDER BY ts DESC, id DESC LIMIT ?) ORDER BY ts, id"
        )
        return [LogEntry.from_row(r) for r in self._query(sql, [*args, limit])]

    def iter_logs(self, flt: LogFilter, *, batch: int = 5000) -> Iterator[LogEntry]:
        """All matching records, oldest first, fetched in batches (for big exports)."""
        ids = self._session_ids(flt)
        if ids is not None and not ids:
            return
        where, args = flt.where(ids)
        sql = f"SELECT {_LOG_COLUMNS} FROM {self._source(flt, ids)} WHERE {where} ORDER BY ts, id"
        try:
            cursor = self.conn.execute(sql, args)
            while rows := cursor.fetchmany(batch):
                for row in rows:
                    yield LogEntry.from_row(row)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the store at {self.path}: {exc}") from None

    def logs_after(self, flt: LogFilter, after_id: int, upto_id: int) -> list[LogEntry]:
        """Matching records with ``after_id < id <= upto_id``, in write order (``--follow``).

        Ids are allocated under SQLite's write lock, so once ``upto_id`` is visible every
        smaller id is committed too: polling ``(cursor, max_log_id()]`` never misses a record.
        """
        where, args = flt.where(None)
        sql = f"SELECT {_LOG_COLUMNS} FROM logs WHERE id > ? AND id <= ? AND {where} ORDER BY id"
        return [LogEntry.from_row(r) for r in self._query(sql, [after_id, upto_id, *args])]

    # --- stats ----------------------------------------------------------------------------

    def stats(
        self,
        *,
        by: Literal["method", "tool"] = "method",
        since_ns: int | None = None,
        until_ns: int | None = None,
        top_errors: int = 10,
    ) -> Stats:
        """Per method (or per method and tool): calls, errors, bytes, latency percentiles."""
        return compute_stats(
            self._query, by=by, since_ns=since_ns, until_ns=until_ns, top_errors=top_errors
        )

    # --- traces ---------------------------------------------------------------------------

    def spans(self, session_id: str) -> list[SpanEntry]:
        rows = self._query(
            "SELECT id, trace_id, span_id, parent_span_id, name, kind, start_ts, end_ts, status, "
            "status_message, session_id, segment, service, attrs, links FROM spans "
            "WHERE session_id = ? ORDER BY start_ts, id",
            (session_id,),
        )
        return [SpanEntry(*r) for r in rows]  # pyright: ignore[reportArgumentType]

    def traces(self, session_id: str) -> list[TraceTree]:
        return build_traces(self.spans(session_id))


def build_traces(spans: Iterable[SpanEntry]) -> list[TraceTree]:
    """Group spans by trace and nest them; traces in segment order, children by start time."""
    by_trace: dict[str, list[SpanEntry]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    trees: list[TraceTree] = []
    for trace_id, members in by_trace.items():
        nodes = {s.span_id: SpanNode(s) for s in members}
        roots: list[SpanNode] = []
        for span in sorted(members, key=lambda s: (s.start_ts, s.id)):
            node = nodes[span.span_id]
            parent = nodes.get(span.parent_span_id) if span.parent_span_id else None
            if parent is None or parent is node:
                roots.append(node)
            else:
                parent.children.append(node)
        segments = [s.segment for s in members if s.segment is not None]
        trees.append(
            TraceTree(trace_id=trace_id, segment=min(segments) if segments else None, roots=roots)
        )
    trees.sort(
        key=lambda t: (
            t.segment if t.segment is not None else math.inf,
            min(r.span.start_ts for r in t.roots) if t.roots else 0,
        )
    )
    return trees
