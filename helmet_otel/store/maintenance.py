"""Housekeeping of a store: what it holds (``store info``, ``doctor``), and deleting on request
(``store prune``, ``store delete``, ``store vacuum``).

Reading goes through a query-only connection; the deletions through the writer's connection
(``connect_writer``: WAL, the schema migrated) in short transactions of ``retention.CHUNK``
rows, so proxies writing at the same time wait only briefly. The full-text index entries go
with their rows (a contentless index needs the indexed text to delete an entry).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from helmet_otel.store import retention
from helmet_otel.store.engine import Connection
from helmet_otel.store.schema import (
    StoreError,
    connect_reader,
    connect_writer,
    forget_logs,
    schema_version,
)

__all__ = [
    "Deleted",
    "StoreInfo",
    "check_integrity",
    "delete_sessions",
    "prune_before",
    "store_info",
    "vacuum",
]

_BUSY_MS: Final = 10_000


@dataclass(frozen=True, slots=True)
class StoreInfo:
    path: Path
    file_bytes: int  # the database file
    wal_bytes: int  # its write-ahead log
    schema_version: int
    records: int
    spans: int
    sessions: int
    oldest_ns: int | None
    newest_ns: int | None
    free_bytes: int  # pages inside the file that hold nothing (``vacuum`` gives them back)


@dataclass(slots=True)
class Deleted:
    logs: int = 0
    spans: int = 0
    sessions: int = 0


def _size(path: str) -> int:
    with contextlib.suppress(OSError):
        return os.stat(path).st_size
    return 0


def store_info(path: Path) -> StoreInfo:
    """What the store at ``path`` holds. Raises ``StoreError`` (missing, unreadable, corrupt)."""
    conn = connect_reader(path)
    try:

        def one(sql: str) -> int | None:
            value = conn.execute(sql).fetchone()[0]
            return None if value is None else int(value)

        page_size = one("PRAGMA page_size") or 4096
        free = (one("PRAGMA freelist_count") or 0) * page_size
        return StoreInfo(
            path=path,
            file_bytes=_size(str(path)),
            wal_bytes=_size(f"{path}-wal"),
            schema_version=schema_version(conn),
            records=one("SELECT count(*) FROM logs") or 0,
            spans=_span_count(conn),
            sessions=one("SELECT count(*) FROM sessions") or 0,
            oldest_ns=one("SELECT min(ts) FROM logs"),
            newest_ns=one("SELECT max(ts) FROM logs"),
            free_bytes=free,
        )
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the store at {path}: {exc}") from None
    finally:
        conn.close()


def check_integrity(path: Path) -> str | None:
    """SQLite's ``quick_check`` of the file: None when it is sound, else what it found."""
    conn = connect_reader(path)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "; ".join(found[:3])


def _writer(path: Path) -> Connection:
    if not path.exists():
        raise StoreError(f"no store at {path}")
    try:
        return connect_writer(path, busy_timeout_ms=_BUSY_MS)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot write to the store at {path}: {exc}") from None


def _transact(conn: Connection) -> Callable[[Callable[[Connection], int]], int]:
    def run(op: Callable[[Connection], int]) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = op(conn)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    return run


def prune_before(path: Path, cutoff_ns: int) -> Deleted:
    """Delete the records before ``cutoff_ns``, the spans that started before it and the
    sessions last seen before it (what the age cap does, on request)."""
    conn = _writer(path)
    try:
        result = retention.RetentionResult(complete=False)
        while not result.complete:
            result.complete = True
            retention.delete_before(_transact(conn), cutoff_ns - 1, result)
        return Deleted(result.logs, result.spans, result.sessions)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot prune the store at {path}: {exc}") from None
    finally:
        conn.close()


def delete_sessions(path: Path, session_ids: list[str]) -> Deleted:
    """Delete everything the store holds of these sessions: records, spans, the session."""
    conn = _writer(path)
    transact = _transact(conn)
    deleted = Deleted()
    try:
        for session_id in session_ids:

            def logs_chunk(c: Connection, sid: str = session_id) -> int:
                doomed = c.execute(
                    "SELECT id, body, span_id FROM logs WHERE session_id = ? LIMIT ?",
                    (sid, retention.CHUNK),
                ).fetchall()
                forget_logs(c, doomed)
                return len(doomed)

            while (n := transact(logs_chunk)) > 0:
                deleted.logs += n

            def rest(c: Connection, sid: str = session_id) -> int:
                deleted.spans += retention.deleted_spans(
                    c.execute(
                        "DELETE FROM spans WHERE session_id = ?"
                        " RETURNING client_span_id IS NOT NULL",
                        (sid,),
                    )
                )
                c.execute("DELETE FROM session_errors WHERE session_id = ?", (sid,))
                return c.execute("DELETE FROM sessions WHERE session_id = ?", (sid,)).rowcount

            deleted.sessions += transact(rest)
        return deleted
    except sqlite3.Error as exc:
        raise StoreError(f"cannot delete from the store at {path}: {exc}") from None
    finally:
        conn.close()


def vacuum(path: Path) -> tuple[int, int]:
    """Rebuild the file without its free pages and truncate the WAL -> (bytes before, after).
    Needs exclusive use for a moment: it waits for writers, and fails if one holds on."""
    before = retention.disk_bytes(path)
    conn = _writer(path)
    try:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot vacuum the store at {path}: {exc}") from None
    finally:
        conn.close()
    return before, retention.disk_bytes(path)


def _span_count(conn: Connection) -> int:
    """Spans held (a row may hold a call's CLIENT/SERVER pair; a store older than schema 5 that
    could not be upgraded has no pairs)."""
    try:
        row = conn.execute("SELECT count(*) + count(client_span_id) FROM spans").fetchone()
    except sqlite3.OperationalError:
        row = conn.execute("SELECT count(*) FROM spans").fetchone()
    return int(row[0] or 0)
