"""The writing side of the store: ``Store`` batches rows into SQLite and never raises.

Many proxy processes write to one store at once. Each batch is one short ``BEGIN IMMEDIATE``
transaction (the rows many to a statement, `insert_rows`; one upsert per session touched). A
busy database is waited for (SQLite's busy timeout, then our own retries with backoff) up to
``lock_timeout_s``; after that the batch is dropped and counted. Every other failure (corrupt
file, read-only or full disk, unreadable directory) is reported once on stderr with the
``helmet-otel: store:`` prefix and counted in ``Store.dropped``: the pipeline, and the proxy,
go on. WAL mode with ``synchronous = NORMAL`` means a process killed mid-write loses at most
the transaction in flight and never corrupts the file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Final

from helmet_otel.redaction import scrub_line
from helmet_otel.store import retention
from helmet_otel.store.batch import (
    ERA_UNKNOWN,
    LOG_FIELDS,
    SESSION_COLUMNS,
    SPAN_FIELDS,
    LogBatch,
    SpanBatch,
    log_batch_of_rows,
    span_batch_of_rows,
)
from helmet_otel.store.engine import Connection, Engine
from helmet_otel.store.model import LogRow, SpanRow
from helmet_otel.store.paths import default_store_path, retention_from_env
from helmet_otel.store.schema import (
    FTS_INSERT,
    SPAN_INSERT,
    StoreError,
    connect_writer,
    fts_text,
)

__all__ = ["Store"]

INSERT_LOG: Final = f"INSERT INTO logs ({', '.join(LOG_FIELDS)}) VALUES "  # + rows' placeholders
LAST_LOG_ID: Final = "SELECT seq FROM sqlite_sequence WHERE name = 'logs'"
INSERT_SESSION_ERROR: Final = "INSERT OR IGNORE INTO session_errors (session_id, key) VALUES (?, ?)"
INSERT_SPAN: Final = f"INSERT INTO spans ({', '.join(SPAN_FIELDS)}) VALUES "
_FTS_ROWS: Final = FTS_INSERT.removesuffix("(?, ?)")  # + rows' placeholders (`insert_rows`)
_SPAN_ID_ROWS: Final = SPAN_INSERT.removesuffix("(?, ?)")
_BODY, _SPAN_ID = LOG_FIELDS.index("body"), LOG_FIELDS.index("span_id")

# How a column of an existing session row takes a new value (default: the new one, if any).
_MERGE: Final = {
    # A count never goes down: a proxy killed with SIGKILL still gets a helmet.session_end from
    # its telemetry worker, which may know fewer requests than were already counted.
    "requests": "coalesce(max(requests, excluded.requests), excluded.requests, requests)",
    "errors": "coalesce(max(errors, excluded.errors), excluded.errors, errors)",
    "cpu_s": "coalesce(max(cpu_s, excluded.cpu_s), excluded.cpu_s, cpu_s)",
    "peak_memory": "coalesce(max(peak_memory, excluded.peak_memory), excluded.peak_memory, "
    "peak_memory)",
    # "unknown" never replaces an era already learned.
    "era": f"CASE WHEN excluded.era = '{ERA_UNKNOWN}' THEN coalesce(era, excluded.era)"
    " ELSE coalesce(excluded.era, era) END",
}
UPSERT_SESSION: Final = (
    "INSERT INTO sessions (session_id, first_ts, last_ts, seen_requests, "
    f"{', '.join(SESSION_COLUMNS)}) "
    f"VALUES (?, ?, ?, ?, {', '.join('?' for _ in SESSION_COLUMNS)}) "
    "ON CONFLICT (session_id) DO UPDATE SET "
    "first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts), "
    "seen_requests = seen_requests + excluded.seen_requests, "
    + ", ".join(f"{c} = {_MERGE.get(c, f'coalesce(excluded.{c}, {c})')}" for c in SESSION_COLUMNS)
)

_BUSY_TIMEOUT_MS: Final = 2000
_REOPEN_AFTER_S: Final = 30.0
_AGE_CHECK_EVERY_S: Final = 60.0
_SIZE_CHECK_BACKOFF_S: Final = 5.0

_DB_HEADER: Final = struct.Struct(">16sH")  # the magic string, the page size
_SQLITE_MAGIC: Final = b"SQLite format 3\0"
_WAL_MAGIC: Final = (0x377F0682, 0x377F0683)

# sqlite primary result codes
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 13, 14, 26


def _report_stderr(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"helmet-otel: store: {scrub_line(message)}\n")
        sys.stderr.flush()


def _fd_target(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def _classify(exc: BaseException) -> tuple[str, bool, str]:
    """-> (kind, permanent, what is wrong in words)."""
    if isinstance(exc, StoreError):
        return "schema", True, str(exc)
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "full", False, "the disk is full"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "readonly", False, f"the store is not writable ({exc.strerror}: {exc.filename})"
        return "io", False, f"I/O error ({exc})"
    if isinstance(exc, sqlite3.InterfaceError | sqlite3.ProgrammingError | TypeError | ValueError):
        return "data", False, f"a record could not be stored ({type(exc).__name__}: {exc})"
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return "locked", False, "the database stayed locked by another process too long"
    if primary == _SQLITE_FULL:
        return "full", False, "the disk is full"
    if primary in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN):
        return "readonly", False, f"the store is not writable ({exc})"
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return "corrupt", True, f"the store file is corrupt or not a database ({exc})"
    if primary == _SQLITE_IOERR:
        return "io", False, f"cannot write the store file: disk full or failing ({exc})"
    return "error", False, f"{type(exc).__name__}: {exc}"


class Store:
    """An embedded SQLite store of log records, spans and sessions.

    Open with ``Store.open(path, max_bytes=..., max_age_s=...)``; write with ``write_logs`` /
    ``write_spans`` (the exporters do); ``close()`` at the end. Thread-safe: the span and the
    log batch processors may write at the same time. No method raises for a store problem.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        lock_timeout_s: float,
        report: Callable[[str], None],
        engine: Engine = "sqlite3",
    ) -> None:
        self.path = path
        self.engine: Engine = engine
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.lock_timeout_s = lock_timeout_s
        self._report = report
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._conn: Connection | None = None
        self._reopen_at = 0.0
        self._permanent: str | None = None
        self._reported: set[str] = set()
        self._next_age_check = 0.0
        self._next_size_check = 0.0
        self._fds = (-1, -1)  # SQLite's descriptors on the database and its WAL (`_damage`)
        self._fds_scanned = 0.0
        self._wanted: tuple[str, str] | None = None  # the database's and the WAL's real paths
        self.dropped_logs = 0
        self.dropped_spans = 0
        self.written_logs = 0
        self.written_spans = 0
        self.last_error: str | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
        lock_timeout_s: float = 10.0,
        report: Callable[[str], None] | None = None,
        engine: Engine = "sqlite3",
    ) -> Store:
        """Open (creating or migrating) the store at ``path`` (default: ``default_store_path()``).

        ``max_bytes`` / ``max_age_s``: the retention caps; ``None`` reads
        ``HELMET_STORE_MAX_BYTES`` / ``HELMET_STORE_MAX_AGE``, else 500 MB / 14 days; ``0``
        disables a cap. ``lock_timeout_s``: how long a batch may wait for a busy database before
        it is dropped. ``report``: where the one-line problem reports go (default: stderr with
        the ``helmet-otel: store:`` prefix). ``engine``: the SQLite library it writes through
        (``store/engine.py``: ``"apsw"`` only in a process with no other connection to the
        store). Never raises: a store that cannot be opened is
        returned degraded (``store.degraded``), and what it cannot write is counted.
        """
        resolved = Path(path).expanduser() if path is not None else default_store_path()
        cap_bytes, cap_age, problems = retention_from_env(max_bytes, max_age_s)
        store = cls(
            resolved,
            max_bytes=cap_bytes,
            max_age_s=cap_age,
            lock_timeout_s=lock_timeout_s,
            report=report or _report_stderr,
            engine=engine,
        )
        for problem in problems:
            store._report_once(f"env:{problem}", problem)
        with store._lock:
            with contextlib.suppress(Exception):
                store._transact(lambda _conn: 0)  # connect + migrate now; failures are reported
            if store._conn is not None:
                store._maybe_retain(force=True)
        return store

    # --- public state ---------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Log records plus spans that could not be written."""
        return self.dropped_logs + self.dropped_spans

    @property
    def degraded(self) -> bool:
        """True while the store cannot write (the last attempt failed)."""
        return self.last_error is not None

    # --- writing --------------------------------------------------------------------------

    def write_logs(self, rows: Sequence[LogRow]) -> bool:
        """Insert a batch of log records (and update their sessions). False when dropped."""
        return self.write_batches(log_batch_of_rows(rows), None) if rows else True

    def write_spans(self, rows: Sequence[SpanRow]) -> bool:
        """Insert a batch of ended spans. False when dropped."""
        return self.write_batches(None, span_batch_of_rows(rows)) if rows else True

    def write_log_batch(self, batch: LogBatch) -> bool:
        """Insert a batch of log rows (``batch.log_batch``). False when dropped."""
        return self.write_batches(batch, None)

    def write_span_batch(self, batch: SpanBatch) -> bool:
        """Insert a batch of span rows (``batch.span_batch``). False when dropped."""
        return self.write_batches(None, batch)

    def write_batches(self, logs: LogBatch | None, spans: SpanBatch | None) -> bool:
        """Insert log and span rows in one transaction (either may be None). False when they
        were dropped (and counted); the records a batch could not convert (``failed``) are
        counted as dropped here too, and make the result False."""
        logs_ok, spans_ok = self.write_each(logs, spans)
        return logs_ok and spans_ok

    def write_each(self, logs: LogBatch | None, spans: SpanBatch | None) -> tuple[bool, bool]:
        """`write_batches`, with a result per batch: (logs written whole, spans written whole)."""
        log_rows = logs.rows if logs is not None else ()
        span_rows = spans.rows if spans is not None else ()
        failed_logs = logs.failed if logs is not None else 0
        failed_spans = spans.failed if spans is not None else 0
        n_spans = spans.spans if spans is not None else 0
        with self._lock:
            self.dropped_logs += failed_logs
            self.dropped_spans += failed_spans
            if not log_rows and not span_rows:
                return not failed_logs, not failed_spans

            def insert(conn: Connection) -> int:
                if logs is not None and log_rows:
                    _insert_logs(conn, logs)
                if span_rows:
                    insert_rows(conn, INSERT_SPAN, len(SPAN_FIELDS), span_rows)
                return len(log_rows) + len(span_rows)

            if self._write(insert):
                self.written_logs += len(log_rows)
                self.written_spans += n_spans
                return not failed_logs, not failed_spans
            self.dropped_logs += len(log_rows)
            self.dropped_spans += n_spans
            return False, False

    def write_chosen_logs(self, choose: Callable[[Connection], Sequence[LogRow]]) -> int | None:
        """One transaction that inserts the log records ``choose(conn)`` picks inside it (asked
        again on a retry: the rollback undid the first pick) -> how many it wrote. None when
        the transaction failed (reported, ``last_error`` set); the caller counts what it drops.
        """
        written = 0

        def insert(conn: Connection) -> int:
            nonlocal written
            rows = choose(conn)
            if rows:
                _insert_logs(conn, log_batch_of_rows(rows))
            written = len(rows)
            return written

        with self._lock:
            if not self._write(insert):
                return None
            self.written_logs += written
            return written

    def add_dropped(self, *, logs: int = 0, spans: int = 0) -> None:
        """Count records lost before they reached the store (the exporters use it)."""
        with self._lock:
            self.dropped_logs += logs
            self.dropped_spans += spans

    def close(self) -> None:
        """Close the connection. Later writes are dropped and counted. Idempotent."""
        self._closing.set()
        with self._lock:
            conn, self._conn = self._conn, None
            self._permanent = self._permanent or "closed"
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    # --- internals ------------------------------------------------------------------------

    def _write(self, op: Callable[[Connection], int]) -> bool:
        if self._permanent is not None or time.monotonic() < self._reopen_at:
            return False
        damage = self._damage()
        if damage is not None:
            self._fail(sqlite3.DatabaseError(damage), kind="damaged")
            return False
        try:
            self._transact(op)
        except Exception:  # already classified and reported by _transact
            return False
        self._maybe_retain(force=False)
        return True

    def _transact(self, op: Callable[[Connection], int], *, quiet: bool = False) -> int:
        """Run ``op`` in BEGIN IMMEDIATE ... COMMIT, retrying while the database is busy.

        On failure: unless ``quiet``, report once, set ``last_error`` and close the connection
        (reopened later); then re-raise.
        """
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.005
        while True:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = op(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except Exception as exc:
                remaining = deadline - time.monotonic()
                if _is_busy(exc) and remaining > 0 and not self._closing.is_set():
                    self._closing.wait(min(delay, remaining))
                    delay = min(delay * 2, 0.25)
                    continue
                if not quiet:
                    self._fail(exc)
                raise
            self.last_error = None
            return result

    def _connection(self) -> Connection:
        if self._conn is None:
            busy_ms = max(1, min(_BUSY_TIMEOUT_MS, int(self.lock_timeout_s * 1000)))
            conn = connect_writer(self.path, busy_timeout_ms=busy_ms, engine=self.engine)
            self._wanted = None
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            pages = retention.wal_pages_for(self.max_bytes, page_size)
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages:d}")
            conn.execute(f"PRAGMA journal_size_limit = {pages * page_size:d}")
            self._conn = conn
        return self._conn

    def _damage(self) -> str | None:
        """What is wrong with the files under an open connection, or None. SQLite trusts its
        cache and writes on into a file overwritten or truncated under it: the headers of the
        database and its WAL are read again before each batch (two small reads).

        They are read through SQLite's own descriptors (found in ``/proc/self/fd``; Linux):
        opening and closing the file here would drop every POSIX lock this process holds on
        it, SQLite's included."""
        if self._conn is None:
            return None
        db_fd, wal_fd = self._sqlite_fds()
        if db_fd < 0:
            return None
        try:
            head = os.pread(db_fd, _DB_HEADER.size, 0)
            wal_head = os.pread(wal_fd, 4, 0) if wal_fd >= 0 else b""
        except OSError:
            return None  # a real I/O problem shows in the write itself
        if len(head) < _DB_HEADER.size or not head.startswith(_SQLITE_MAGIC):
            return "the store file was truncated or overwritten while in use (not a database)"
        if wal_head and int.from_bytes(wal_head.ljust(4, b"\0"), "big") not in _WAL_MAGIC:
            return "the store's write-ahead log was overwritten while in use"
        return None

    def _sqlite_fds(self) -> tuple[int, int]:
        """The descriptors SQLite holds on the database and its WAL (-1: none found)."""
        wanted = self._wanted
        if wanted is None:  # resolved once (a few system calls per component)
            db_path = str(self.path.resolve())
            wanted = self._wanted = (db_path, f"{db_path}-wal")
        fds = self._fds
        if (
            fds[0] >= 0
            and all(fd < 0 or _fd_target(fd) == path for fd, path in zip(fds, wanted, strict=True))
            and (fds[1] >= 0 or time.monotonic() < self._fds_scanned + 1.0)
        ):
            return fds
        found = [-1, -1]
        with contextlib.suppress(OSError):
            for name in os.listdir("/proc/self/fd"):
                target = _fd_target(int(name))
                if target in wanted:
                    found[wanted.index(target)] = int(name)
        self._fds = (found[0], found[1])
        self._fds_scanned = time.monotonic()
        return self._fds

    def _fail(self, exc: BaseException, kind: str | None = None) -> None:
        if kind is not None:  # damage found by us, not by SQLite: as permanent as corruption
            self._permanent = kind
        kind, permanent, what = _classify(exc) if kind is None else (kind, True, str(exc))
        self.last_error = what
        if kind not in ("locked", "data"):
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
            if permanent:
                self._permanent = kind
            else:
                self._reopen_at = time.monotonic() + _REOPEN_AFTER_S
        self._report_once(
            kind,
            f"cannot write to {self.path}: {what}; telemetry records are being dropped and "
            "counted (MCP traffic is not affected)",
        )

    def _report_once(self, kind: str, message: str) -> None:
        if kind in self._reported:
            return
        self._reported.add(kind)
        with contextlib.suppress(Exception):
            self._report(message)

    def _retain_transact(self, op: Callable[[Connection], int]) -> int:
        return self._transact(op, quiet=True)

    def _maybe_retain(self, *, force: bool) -> retention.RetentionResult:
        """Apply the caps when due. Problems here never drop records; a busy database just
        postpones the work to a later batch."""
        result = retention.RetentionResult()
        conn = self._conn
        if conn is None:
            return result
        now = time.monotonic()
        try:
            if self.max_age_s > 0 and (force or now >= self._next_age_check):
                self._next_age_check = now + _AGE_CHECK_EVERY_S
                result = retention.enforce_age(
                    self._retain_transact, time.time_ns(), self.max_age_s
                )
                if not result.complete:
                    self._next_age_check = 0.0  # more to delete after the next batch
            if (
                self.max_bytes > 0
                and (force or now >= self._next_size_check)
                and retention.disk_bytes(self.path) > self.max_bytes * retention.HIGH_WATER
            ):
                self._next_size_check = now + _SIZE_CHECK_BACKOFF_S
                sized = retention.enforce_size(
                    conn, self._retain_transact, self.path, self.max_bytes
                )
                result.logs += sized.logs
                result.spans += sized.spans
                result.sessions += sized.sessions
                over = retention.disk_bytes(self.path) > self.max_bytes * retention.HIGH_WATER
                if not over or not sized.complete:
                    self._next_size_check = 0.0  # done, or more to delete after the next batch
        except Exception as exc:
            if not _is_busy(exc):
                self._report_once("retention", f"retention of {self.path} failed: {exc}")
        return result


# Rows per INSERT statement: one statement of many rows opens the table's and its indexes'
# cursors, reads and writes AUTOINCREMENT's counter and releases the GIL once, where
# ``executemany`` does all of it per row. A batch is cut into chunks of these sizes (largest
# first), so a few statements serve every batch size from SQLite's statement cache.
_CHUNKS: Final = (128, 32, 8, 1)


@functools.cache
def _values_sql(insert: str, columns: int, rows: int) -> str:
    one = f"({', '.join('?' * columns)})"
    return insert + ", ".join([one] * rows)


def insert_rows(
    conn: Connection, insert: str, columns: int, rows: Sequence[Sequence[object]]
) -> None:
    """``insert`` (``INSERT INTO t (...) VALUES ``) of ``rows``, many per statement (as many
    as this SQLite's limit on a statement's parameters allows: 999 before 3.32)."""
    start, total = 0, len(rows)
    most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // columns
    for size in _CHUNKS:
        if total - start < size or (size > most and size > 1):
            continue
        sql = _values_sql(insert, columns, size)
        while total - start >= size:
            conn.execute(sql, list(chain.from_iterable(rows[start : start + size])))
            start += size


def _insert_logs(conn: Connection, batch: LogBatch) -> None:
    """The rows, their full-text entries and their sessions' updates (inside a transaction)."""
    rows = batch.rows
    # We hold the write lock and AUTOINCREMENT never reuses an id: the rows get the ids after
    # the last one given, in order (checked after the insert).
    last = conn.execute(LAST_LOG_ID).fetchone()
    first = (int(last[0]) if last else 0) + 1
    insert_rows(conn, INSERT_LOG, len(LOG_FIELDS), rows)
    last = conn.execute(LAST_LOG_ID).fetchone()
    if last is None or int(last[0]) != first + len(rows) - 1:
        raise sqlite3.IntegrityError(f"log ids not as expected after {first}: {last}")
    body, span_id = _BODY, _SPAN_ID
    insert_rows(
        conn,
        _FTS_ROWS,
        2,
        [
            # (fts_text's own first test, without the call: this runs for every record)
            (first + i, text if "\\" not in text else fts_text(text))  # pyright: ignore[reportOperatorIssue, reportArgumentType]
            for i, row in enumerate(rows)
            if (text := row[body]) is not None
        ],
    )
    insert_rows(
        conn,
        _SPAN_ID_ROWS,
        2,
        [(first + i, r[span_id]) for i, r in enumerate(rows) if r[span_id] is not None],
    )
    if batch.sessions:
        conn.executemany(UPSERT_SESSION, batch.sessions)
    if batch.errors:
        conn.executemany(INSERT_SESSION_ERROR, batch.errors)
