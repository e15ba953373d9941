"""The reading side of the store: filters, log listing and tailing, sessions, stats, traces.

``Reader`` opens the store query-only and never writes (except to upgrade an old schema, which
needs write access once). Every method returns plain dataclasses; rendering is the CLI's job.
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from helmet_otel import semconv as sc
from helmet_otel.store.model import decode, full_attributes
from helmet_otel.store.names import NameColumn, known_names, match_names, name_matches
from helmet_otel.store.procfs import pid_alive
from helmet_otel.store.schema import BULK_EVENTS, RARE_EVENT, StoreError, connect_reader
from helmet_otel.store.stats import Stats, compute_stats
from helmet_otel.store.traces import SpanEntry, TraceTree, build_traces, span_entries

__all__ = [
    "LOG_COLUMNS",
    "LOST_EXIT_REASON",
    "LogEntry",
    "LogFilter",
    "Reader",
    "SessionInfo",
    "fts_query",
]

LOG_COLUMNS: Final = (
    "id, ts, session_id, event, severity_number, severity_text, direction, kind, method, "
    "target, request_id, latency_ms, size, is_error, error_type, service, trace_id, span_id, "
    "body, attrs"
)
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_PREFIX_END: Final = "\U0010ffff"
_PAIR: Final = "client_span_id"  # spans: the CLIENT span stored in its SERVER span's row
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


_SESSION_REF: Final = re.compile(r"last(?:~(\d+))?")


def session_ref_offset(ref: str) -> int | None:
    """``last`` -> 0, ``last~N`` -> N, anything else (an id prefix) -> None."""
    match = _SESSION_REF.fullmatch(ref)
    if match is None:
        return None
    return int(match[1] or 0)


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
    """What ``helmet-otel logs`` selects. Empty tuples and None mean "any".

    ``methods``, ``tools`` and ``servers`` are globs matched case-insensitively (see
    ``store.names``); ``session_prefixes`` are id prefixes or ``last``/``last~N``.
    """

    session_prefixes: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    exclude_events: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    direction: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    grep: str | None = None
    regex: str | None = None
    errors: bool = False

    def where(self, resolved: Resolved | None = None) -> tuple[str, list[object]]:
        """SQL conditions over ``logs``. ``resolved``: the names and sessions the patterns
        stand for (``Reader.resolve``); without it, prefixes become ranges and names exact."""
        r = resolved if resolved is not None else Resolved.literal(self)
        conds: list[str] = []
        args: list[object] = []
        if r.session_ids is not None:
            if len(r.session_ids) == 1:
                conds.append("session_id = ?")
            else:
                conds.append(f"session_id IN ({', '.join('?' for _ in r.session_ids)})")
            args.extend(r.session_ids)
        elif self.session_prefixes:
            ranges = ["(session_id >= ? AND session_id < ?)" for _ in self.session_prefixes]
            conds.append("(" + " OR ".join(ranges) + ")")
            for prefix in self.session_prefixes:
                args.extend((prefix, prefix + _PREFIX_END))
        for column, values in (
            ("event", self.events),
            ("method", r.methods),
            ("target", r.tools),
            ("service", r.servers),
        ):
            if values:
                conds.append(f"{column} IN ({', '.join('?' for _ in values)})")
                args.extend(values)
        if self.events and not set(self.events) & set(BULK_EVENTS):
            conds.append(RARE_EVENT)  # (so logs(event, ts) is used: see schema.RARE_EVENT)
        if self.exclude_events and not self.events:
            marks = ", ".join("?" for _ in self.exclude_events)
            conds.append(f"(event IS NULL OR event NOT IN ({marks}))")
            args.extend(self.exclude_events)
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
        if self.regex is not None:
            conds.append("body REGEXP ?")
            args.append(self.regex)
        return (" AND ".join(conds) or "1"), args


@dataclass(frozen=True, slots=True)
class Resolved:
    """A filter's patterns as exact values: session ids (None: no session filter), and the
    methods, tools and servers its globs name (empty: no such filter)."""

    session_ids: tuple[str, ...] | None
    methods: tuple[str, ...]
    tools: tuple[str, ...]
    servers: tuple[str, ...]
    empty: bool = False  # a filter named only things that do not exist: nothing can match

    @classmethod
    def literal(cls, flt: LogFilter) -> Resolved:
        return cls(None, flt.methods, flt.tools, flt.servers)


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
    cpu_s: float | None = None  # CPU seconds the server's process tree used (sampled)
    peak_memory: int | None = None  # its largest resident memory at a sample, bytes
    imported_ts: int | None = None  # when `logs --import` brought it in (None: recorded here)
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

    @property
    def exit_summary(self) -> str:
        """How the session ended, in a few words: ``command not found``, ``exit 3``,
        ``SIGKILL``, ``client closed``, ``proxy killed``; empty while it runs."""
        return exit_summary(self.status, self.exit_status, self.exit_reason)


_STARTED: Final = re.compile(r"could not be started: ([^:]+)")
_KILLED_BY: Final = re.compile(r"killed by (SIG\w+|signal \d+)")


def exit_summary(status: str, exit_status: object, reason: str | None) -> str:
    """See ``SessionInfo.exit_summary``."""
    text = reason or ""
    if status == "active":
        return ""
    if status == "lost":
        return "proxy killed"
    if started := _STARTED.search(text):
        return started[1]
    if killed := _KILLED_BY.search(text):
        return killed[1]
    if text.startswith("client closed"):
        return "client closed"
    if text.startswith("proxy received "):
        return text.removeprefix("proxy received ") + " to proxy"
    code = _count(exit_status) if exit_status not in (None, "") else None
    if code is None:
        return "ended"
    if 128 < code < 128 + 65:
        with contextlib.suppress(ValueError):
            return signal.Signals(code - 128).name
    return f"exit {code}"


_SESSION_COLUMNS: Final = (
    "session_id, service, server_name, server_command, transport, proxy_pid, proxy_host, "
    "client_name, client_version, server_info_name, server_version, protocol_version, era, "
    "first_ts, last_ts, start_ts, end_ts, duration_ms, requests, errors, exit_status, exit_reason"
)


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


@functools.lru_cache(maxsize=8)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regexp(pattern: str, text: str | None) -> bool:
    """SQLite's ``REGEXP`` (``--regex``): a Python regular expression searched in the body."""
    return text is not None and _compiled(pattern).search(text) is not None


class Reader:
    """Query-only access to a store. ``Reader.open(path)`` raises ``StoreError``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Reader:
        conn = connect_reader(path)
        conn.create_function("regexp", 2, _regexp, deterministic=True)
        return cls(conn, path)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Rows of a read-only query; a database error becomes ``StoreError`` (the store
        package's other query modules use it)."""
        return self._query(sql, args)

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
        self,
        *,
        since_ns: int | None = None,
        now_ns: int | None = None,
        servers: Sequence[str] = (),
        statuses: Sequence[str] = (),
        session_ids: Sequence[str] | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[SessionInfo]:
        """Sessions with activity since ``since_ns``, with live status: oldest start first (or
        newest first), of the given servers (globs) and statuses, at most ``limit``."""
        present = self._session_columns()
        usage = ", ".join(
            c if c in present else "NULL" for c in ("cpu_s", "peak_memory", "imported_ts")
        )
        sql = f"SELECT {_SESSION_COLUMNS}, {usage}, seen_requests FROM sessions"
        conds: list[str] = []
        args: list[object] = []
        if since_ns is not None:
            conds.append("last_ts >= ?")
            args.append(since_ns)
        if session_ids is not None:
            conds.append(f"session_id IN ({', '.join('?' for _ in session_ids)})")
            args.extend(session_ids)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        direction = "DESC" if newest_first else ""
        sql += f" ORDER BY coalesce(start_ts, first_ts) {direction}, session_id {direction}"
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
            if servers and not any(
                isinstance(n, str) and name_matches(servers, n)
                for n in (info.service, info.server_name)
            ):
                continue
            seen_requests = int(row[-1])  # pyright: ignore[reportArgumentType]
            self._complete(info, now, host, seen_requests, errors.get(info.session_id, 0))
            if statuses and info.status not in statuses:
                continue
            result.append(info)
            if limit and len(result) >= limit:
                break
        return result

    def _session_columns(self) -> set[str]:
        """The columns of ``sessions``: a store too old for the newer ones that could not be
        upgraded (read-only) lacks them."""
        return {str(c[0]) for c in self._query("SELECT name FROM pragma_table_info('sessions')")}

    def _complete(
        self, info: SessionInfo, now: int, host: str, seen_requests: int, seen_errors: int
    ) -> None:
        if info.end_ts is not None:
            failed = info.exit_status not in (None, 0, "0", "") and not (
                info.exit_reason or ""
            ).startswith(sc.NORMAL_END_REASONS)
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

    # --- names and references -------------------------------------------------------------

    def names(self, column: NameColumn) -> list[str]:
        """The servers (``service``), methods or tools (``target``) the store knows."""
        try:
            return known_names(self.conn, column)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the store at {self.path}: {exc}") from None

    def newest_sessions(self, *, servers: Sequence[str] = (), limit: int = 1) -> list[str]:
        """Session ids, newest start first (``last`` is the first), of the given servers."""
        sql = "SELECT session_id, service, server_name FROM sessions"
        rows = self._query(sql + " ORDER BY coalesce(start_ts, first_ts) DESC, session_id DESC")
        found: list[str] = []
        for sid, *names in rows:
            if servers and not any(isinstance(n, str) and name_matches(servers, n) for n in names):
                continue
            found.append(str(sid))
            if len(found) >= limit:
                break
        return found

    def resolve_session_ref(self, ref: str, *, servers: Sequence[str] = ()) -> list[str]:
        """``last``, ``last~N`` (the N-th before the newest), or an id prefix -> session ids."""
        n = session_ref_offset(ref)
        if n is None:
            return self.resolve_sessions(ref, include_spans=True)
        newest = self.newest_sessions(servers=servers, limit=n + 1)
        return newest[n : n + 1]

    def resolve(self, flt: LogFilter) -> Resolved:
        """The filter's patterns as exact values (see ``Resolved``)."""
        empty = False
        session_ids: tuple[str, ...] | None = None
        if flt.session_prefixes:
            ids: list[str] = []
            for prefix in flt.session_prefixes:
                matched = (
                    self.resolve_session_ref(prefix, servers=flt.servers)
                    if session_ref_offset(prefix) is not None
                    else self.resolve_sessions(prefix)
                )
                ids.extend(i for i in matched if i not in ids)
            session_ids = tuple(ids)
            empty = not ids
        values: dict[NameColumn, tuple[str, ...]] = {}
        wanted: tuple[tuple[NameColumn, tuple[str, ...]], ...] = (
            ("method", flt.methods),
            ("target", flt.tools),
            ("service", flt.servers),
        )
        for column, patterns in wanted:
            if not patterns:
                values[column] = ()
                continue
            matched = match_names(patterns, self.names(column))
            values[column] = tuple(matched)
            empty = empty or not matched
        return Resolved(
            session_ids, values["method"], values["target"], values["service"], empty=empty
        )

    # --- logs -----------------------------------------------------------------------------

    def max_log_id(self) -> int:
        row = self._query("SELECT max(id) FROM logs")[0]
        return int(row[0] or 0)  # pyright: ignore[reportArgumentType]

    @staticmethod
    def _source(flt: LogFilter, resolved: Resolved) -> str:
        """With only full-text and time/event filters, walk the time index newest first and
        test FTS membership: a common word stops after ``limit`` rows, a rare one costs one
        scan of the (covering) time index, instead of sorting every match."""
        if (
            (flt.grep is not None or flt.regex is not None)
            and resolved.session_ids is None
            and not resolved.tools
            and not resolved.servers
            and not resolved.methods
        ):
            return "logs INDEXED BY logs_ts"
        return "logs"

    def logs(
        self, flt: LogFilter, *, limit: int | None = None, max_id: int | None = None
    ) -> list[LogEntry]:
        """Matching records, oldest first; with ``limit``, the newest ``limit`` of them."""
        resolved = self.resolve(flt)
        if resolved.empty:
            return []
        where, args = flt.where(resolved)
        if max_id is not None:
            where += " AND id <= ?"
            args.append(max_id)
        source = self._source(flt, resolved)
        if limit is None:
            sql = f"SELECT {LOG_COLUMNS} FROM {source} WHERE {where} ORDER BY ts, id"
            return [LogEntry.from_row(r) for r in self._query(sql, args)]
        # pick the ids first (a narrow sort), then read those rows
        sql = (
            f"SELECT {LOG_COLUMNS} FROM logs WHERE id IN (SELECT id FROM {source} WHERE {where}"
            " ORDER BY ts DESC, id DESC LIMIT ?) ORDER BY ts, id"
        )
        return [LogEntry.from_row(r) for r in self._query(sql, [*args, limit])]

    def iter_logs(self, flt: LogFilter, *, batch: int = 5000) -> Iterator[LogEntry]:
        """All matching records, oldest first, fetched in batches (for big exports)."""
        resolved = self.resolve(flt)
        if resolved.empty:
            return
        where, args = flt.where(resolved)
        sql = (
            f"SELECT {LOG_COLUMNS} FROM {self._source(flt, resolved)} WHERE {where} ORDER BY ts, id"
        )
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
        Globs are resolved again at every poll, so a tool that appears later is followed too.
        """
        resolved = self.resolve(flt)
        if resolved.empty:
            return []
        where, args = flt.where(resolved)
        sql = f"SELECT {LOG_COLUMNS} FROM logs WHERE id > ? AND id <= ? AND {where} ORDER BY id"
        return [LogEntry.from_row(r) for r in self._query(sql, [after_id, upto_id, *args])]

    def logs_of_span(self, span_id: str) -> list[LogEntry]:
        """The records written in a span's context (a call's request and answers), in order.

        Found through ``logs_spans`` (schema 4; ``span_id`` is one token of hex digits), or
        through the ``logs(span_id)`` index of an older store that could not be upgraded."""
        span_id = span_id.lower()
        of_span = self.span_records(span_id)
        if of_span is not None:
            source, args = of_span
            sql = f"SELECT {LOG_COLUMNS} FROM {source} ORDER BY ts, id"
            return [LogEntry.from_row(r) for r in self._query(sql, args)]
        sql = f"SELECT {LOG_COLUMNS} FROM logs WHERE span_id = ? ORDER BY ts, id"
        return [LogEntry.from_row(r) for r in self._query(sql, (span_id,))]

    def span_records(
        self, span_id: str, *, first: int | None = None
    ) -> tuple[str, list[object]] | None:
        """``logs ... WHERE`` the records of a span (its ``first`` records at most), for a
        ``SELECT ... FROM`` to go on from (``AND`` more conditions); None where ``logs_spans``
        cannot look the id up: a store too old to have it, or an id that is not one token of
        letters and digits (as ours are). ``NOT INDEXED``: SQLite fetches those few records by
        id rather than walk another index that further conditions offer."""
        if not (self._span_ids_indexed and span_id.isalnum() and span_id.isascii()):
            return None
        limit = "" if first is None else f" LIMIT {int(first)}"
        source = (
            "logs NOT INDEXED WHERE id IN (SELECT rowid FROM logs_spans WHERE logs_spans MATCH ?"
            f"{limit}) AND span_id = ?"
        )
        return source, [f'"{span_id}"', span_id]

    @functools.cached_property
    def _span_ids_indexed(self) -> bool:
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE name = 'logs_spans'"))

    def log(self, record_id: int) -> LogEntry | None:
        """One record by its store id (the ID column of the tables)."""
        rows = self._query(f"SELECT {LOG_COLUMNS} FROM logs WHERE id = ?", (record_id,))
        return LogEntry.from_row(rows[0]) if rows else None

    # --- stats ----------------------------------------------------------------------------

    def stats(
        self,
        *,
        by: Literal["method", "tool"] = "method",
        since_ns: int | None = None,
        until_ns: int | None = None,
        top_errors: int = 10,
        session_ids: Sequence[str] | None = None,
        servers: Sequence[str] = (),
    ) -> Stats:
        """Per method (or per method and tool): calls, errors, bytes, latency percentiles; of
        the given sessions (None: all) and servers (globs)."""
        services = match_names(servers, self.names("service")) if servers else None
        return compute_stats(
            self._query,
            by=by,
            since_ns=since_ns,
            until_ns=until_ns,
            top_errors=top_errors,
            session_ids=session_ids,
            services=services,
        )

    # --- traces ---------------------------------------------------------------------------

    def spans(self, session_id: str) -> list[SpanEntry]:
        """The session's spans by start time; a row holding a call's CLIENT/SERVER pair
        (``client_span_id``, schema 5) gives both, the SERVER span first."""
        found = self._query("SELECT 1 FROM pragma_table_info('spans') WHERE name = ?", (_PAIR,))
        rows = self._query(
            "SELECT id, trace_id, span_id, parent_span_id, name, kind, start_ts, end_ts, status, "
            f"status_message, session_id, segment, service, attrs, links, "
            f"{_PAIR if found else 'NULL'} FROM spans WHERE session_id = ? ORDER BY start_ts, id",
            (session_id,),
        )
        return span_entries(rows)

    def traces(self, session_id: str) -> list[TraceTree]:
        return build_traces(self.spans(session_id))
