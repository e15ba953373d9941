"""Retention: an age cap and a size cap, enforced by the writers while they run.

Both delete the oldest data first, in short transactions of ``CHUNK`` rows so other writers
never wait long, and at most ``MAX_CHUNKS`` of them per call so a writer is never held up long
(a store idle for weeks is trimmed over the next batches). The size cap counts the database file plus its WAL. When they pass
``HIGH_WATER`` of the cap, the oldest records are deleted until the live data is about
``LOW_WATER`` of the cap, then the freed pages are given back to the file system
(``auto_vacuum = INCREMENTAL``) and the WAL is truncated.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from helmet_otel.store.engine import Connection, Rows
from helmet_otel.store.schema import forget_logs

__all__ = [
    "CHUNK",
    "HIGH_WATER",
    "LOW_WATER",
    "MAX_CHUNKS",
    "RetentionResult",
    "delete_before",
    "disk_bytes",
    "enforce_age",
    "enforce_size",
    "wal_pages_for",
]

CHUNK: Final = 2000
MAX_CHUNKS: Final = 10  # per call: a long-idle store is trimmed over several batches
HIGH_WATER: Final = 0.8
LOW_WATER: Final = 0.6
_VACUUM_PAGES: Final = 2048
_AUTO_VACUUM_INCREMENTAL: Final = 2

# Runs ``fn(conn)`` inside BEGIN IMMEDIATE ... COMMIT with the writer's busy/retry policy.
Transact = Callable[[Callable[[Connection], int]], int]


@dataclass(slots=True)
class RetentionResult:
    logs: int = 0
    spans: int = 0
    sessions: int = 0
    complete: bool = True  # False: the work budget ran out, continue after the next batch


def disk_bytes(path: Path) -> int:
    """Bytes the store occupies: the database file plus its WAL."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def wal_pages_for(max_bytes: int, page_size: int = 4096) -> int:
    """Auto-checkpoint threshold: the WAL stays within ~5% of the cap (16..1000 pages)."""
    if max_bytes <= 0:
        return 1000
    return max(16, min(1000, max_bytes // 20 // page_size))


# Spans that started before ?1, at most ?2 of them, through ``spans(session_id, start_ts)``
# (there is no index on ``start_ts`` alone for every span written to pay for): each session's
# old spans are one range of that index, and the sessions are found by one seek each.
_DOOMED_SPANS: Final = (
    "DELETE FROM spans WHERE id IN (SELECT id FROM ("
    " WITH RECURSIVE s(sid) AS ("
    "  SELECT (SELECT min(session_id) FROM spans)"
    "  UNION ALL SELECT (SELECT min(session_id) FROM spans WHERE session_id > s.sid)"
    "  FROM s WHERE s.sid IS NOT NULL)"
    " SELECT spans.id FROM s JOIN spans ON spans.session_id = s.sid AND spans.start_ts <= ?1"
    " UNION ALL SELECT id FROM spans WHERE session_id IS NULL AND start_ts <= ?1"
    ") LIMIT ?2)"
)


# what a DELETE FROM spans gives back for `deleted_spans` (a row may hold a CLIENT/SERVER pair)
_PAIRS: Final = " RETURNING client_span_id IS NOT NULL"


def deleted_spans(cursor: Rows) -> int:
    """How many spans the rows a ``DELETE FROM spans ... RETURNING client_span_id IS NOT
    NULL`` deleted held."""
    return sum(1 + int(paired) for (paired,) in cursor.fetchall())


def delete_before(transact: Transact, cutoff_ts: int, result: RetentionResult) -> None:
    """Delete logs with ts <= cutoff, then spans and sessions that ended before it (at most
    ``MAX_CHUNKS`` transactions: ``result.complete`` says whether that was all)."""

    def logs_chunk(conn: Connection) -> int:
        doomed = conn.execute(
            "SELECT id, body, span_id FROM logs WHERE ts <= ? ORDER BY ts LIMIT ?",
            (cutoff_ts, CHUNK),
        ).fetchall()
        if not doomed:
            return 0
        forget_logs(conn, doomed)
        return len(doomed)

    def spans_chunk(conn: Connection) -> int:
        return deleted_spans(conn.execute(_DOOMED_SPANS + _PAIRS, (cutoff_ts, CHUNK)))

    def sessions_all(conn: Connection) -> int:
        n = conn.execute("DELETE FROM sessions WHERE last_ts <= ?", (cutoff_ts,)).rowcount
        if n:
            conn.execute(
                "DELETE FROM session_errors WHERE session_id NOT IN (SELECT session_id FROM sessions)"
            )
        return n

    chunks = 0
    while (n := transact(logs_chunk)) > 0:
        result.logs += n
        chunks += 1
        if chunks >= MAX_CHUNKS:
            result.complete = False
            return
    while (n := transact(spans_chunk)) > 0:
        result.spans += n
        chunks += 1
        if chunks >= MAX_CHUNKS:
            result.complete = False
            return
    result.sessions += transact(sessions_all)


def enforce_age(transact: Transact, now_ns: int, max_age_s: float) -> RetentionResult:
    result = RetentionResult()
    if max_age_s > 0:
        delete_before(transact, now_ns - int(max_age_s * 1e9), result)
    return result


def enforce_size(
    conn: Connection, transact: Transact, path: Path, max_bytes: int
) -> RetentionResult:
    """Delete the oldest data until the store is back under ``LOW_WATER`` of ``max_bytes``."""
    result = RetentionResult()
    if max_bytes <= 0:
        return result
    target = max_bytes * LOW_WATER
    for _attempt in range(4):
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        used = (pages - free) * page_size
        if used <= target:
            break
        n_logs = int(conn.execute("SELECT count(*) FROM logs").fetchone()[0])
        if n_logs > 0:
            share = min(1.0, (used - target) / used)
            offset = max(0, min(n_logs - 1, math.ceil(n_logs * share) - 1))
            row = conn.execute(
                "SELECT ts FROM logs ORDER BY ts LIMIT 1 OFFSET ?", (offset,)
            ).fetchone()
        else:  # only spans and sessions left: drop the older half of the spans
            row = conn.execute(
                "SELECT start_ts FROM spans ORDER BY start_ts "
                "LIMIT 1 OFFSET (SELECT count(*) / 2 FROM spans)"
            ).fetchone()
        if row is None:
            break
        delete_before(transact, int(row[0]), result)
    _give_back_pages(conn)
    return result


def _give_back_pages(conn: Connection) -> None:
    """Shrink the file by the free pages, then truncate the WAL (best effort, never waits;
    otherwise the WAL shrinks to ``journal_size_limit`` once no reader holds it)."""
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == _AUTO_VACUUM_INCREMENTAL:
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        while free > 0:
            conn.execute(f"PRAGMA incremental_vacuum({_VACUUM_PAGES:d})").fetchall()
            left = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            if left >= free:
                break
            free = left
    # TRUNCATE without waiting: gives up at once when a reader or another writer holds the WAL
    timeout = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.OperationalError:
        pass
    finally:
        conn.execute(f"PRAGMA busy_timeout = {timeout:d}")
