"""Log records a page at a time, newest first, and the live tail (the web viewer's log view).

A page holds the ``limit`` newest matching records older than a cursor ``(ts, id)``: following
the cursor of each page's last record walks back to the oldest record without skipping or
repeating one, however many records arrive meanwhile. The tail holds what matched after a log
id, up to the newest id when it was read, newest first; when more than ``limit`` matched it
says so (``gap``), and the older ones are reached by paging on from the tail's oldest record.
Ids are allocated under SQLite's write lock (see ``Reader.logs_after``), so a tail cursor never
misses a record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from helmet_otel.store.query import LOG_COLUMNS, LogEntry, LogFilter, Reader, fts_query
from helmet_otel.store.rows import read_rows
from helmet_otel.store.search import newest_matches

__all__ = ["Page", "Tail", "conditions", "page", "read_rows", "record", "tail"]


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[LogEntry]  # newest first
    more: bool  # older matching records exist
    top_id: int  # the newest log id when the page was read: where a tail starts


@dataclass(frozen=True, slots=True)
class Tail:
    entries: list[LogEntry]  # newest first
    cursor: int  # the newest log id looked at: where the next tail starts
    gap: bool  # more than ``limit`` matched: older ones were left for paging


def conditions(reader: Reader, flt: LogFilter) -> tuple[str, list[object]] | None:
    """``flt`` as SQL conditions with its session references and name globs resolved; None when
    the filter names only things that do not exist (nothing can match)."""
    resolved = reader.resolve(flt)
    if resolved.empty:
        return None
    return flt.where(resolved)


def page(
    reader: Reader, flt: LogFilter, *, before: tuple[int, int] | None = None, limit: int = 200
) -> Page:
    """The ``limit`` newest matching records older than ``before`` (``(ts, id)``)."""
    top = reader.max_log_id()
    query = fts_query(flt.grep) if flt.grep is not None else None
    found = conditions(reader, dataclasses.replace(flt, grep=None) if query else flt)
    if found is None:
        return Page([], False, top)
    where, args = found
    upper = None if flt.until_ns is None else flt.until_ns - 1
    if before is not None:
        where += " AND ts <= ? AND (ts < ? OR id < ?)"
        args.extend((before[0], before[0], before[1]))
        upper = before[0] if upper is None else min(upper, before[0])
    if query is not None:
        narrow = bool(flt.session_prefixes or flt.tools)
        ids = newest_matches(reader, query, where, args, limit + 1, upper_ts=upper, narrow=narrow)
    else:
        ids = [
            int(r[0])  # pyright: ignore[reportArgumentType]
            for r in read_rows(
                reader,
                f"SELECT id FROM logs WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?",
                [*args, limit + 1],
            )
        ]
    if not ids:
        return Page([], False, top)
    rows = read_rows(
        reader,
        f"SELECT {LOG_COLUMNS} FROM logs WHERE id IN ({', '.join('?' for _ in ids)})"
        " ORDER BY ts DESC, id DESC",
        ids,
    )
    entries = [LogEntry.from_row(r) for r in rows[:limit]]
    return Page(entries, len(rows) > limit, top)


def tail(reader: Reader, flt: LogFilter, after_id: int, *, limit: int = 1000) -> Tail:
    """Matching records with ``after_id < id <= newest id``, newest first, at most ``limit``."""
    top = reader.max_log_id()
    if top <= after_id:
        return Tail([], top, False)
    found = conditions(reader, dataclasses.replace(flt, grep=None))
    if found is None:
        return Tail([], top, False)
    where, args = found
    if flt.grep is not None:
        # the id range inside the full-text query: FTS5 then reads only the new rows' ids
        query = fts_query(flt.grep)
        if query is None:
            return Tail([], top, False)
        where += (
            " AND id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?"
            " AND rowid > ? AND rowid <= ?)"
        )
        args.extend((query, after_id, top))
    sql = (
        f"SELECT {LOG_COLUMNS} FROM logs WHERE id > ? AND id <= ? AND {where}"
        " ORDER BY id DESC LIMIT ?"
    )
    rows = read_rows(reader, sql, [after_id, top, *args, limit + 1])
    return Tail([LogEntry.from_row(r) for r in rows[:limit]], top, len(rows) > limit)


def record(reader: Reader, log_id: int) -> LogEntry | None:
    rows = read_rows(reader, f"SELECT {LOG_COLUMNS} FROM logs WHERE id = ?", (log_id,))
    return LogEntry.from_row(rows[0]) if rows else None
