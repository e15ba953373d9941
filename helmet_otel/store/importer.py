"""``helmet-otel logs --import``: write an export's records into a store, skipping those it
already holds, so importing a file twice writes it once."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from helmet_otel.store.engine import Connection
from helmet_otel.store.model import LogRow, SpanRow
from helmet_otel.store.schema import connect_writer
from helmet_otel.store.writer import Store

__all__ = ["import_logs", "import_spans", "mark_imported"]

# The stored rows an imported record could duplicate: same time and session, every column.
SELECT_SAME_LOGS: Final = (
    "SELECT ts, session_id, event, severity_number, severity_text, direction, kind, method, "
    "target, request_id, latency_ms, size, is_error, error_type, service, trace_id, span_id, "
    "body, attrs FROM logs WHERE ts = ? AND session_id IS ?"
)


def import_logs(
    store: Store,
    rows: Sequence[LogRow],
    *,
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int] | None:
    """Insert the records that are not in the store yet -> ``(written, skipped)``.

    A record is in the store when a stored row has the same value in every column (time,
    session, event, span id, body, attributes, ...). The match is a multiset one: a
    record present twice in ``rows`` and once in the store is written once, so importing
    a file again writes nothing, and an export that holds two identical records imports
    as two. One transaction per ``batch`` rows. ``None`` when a batch could not be
    written (``store.dropped_logs`` counts what was lost, ``store.last_error`` says why).
    """
    matcher = _ImportMatcher()
    written = skipped = 0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        fresh = _import_batch(store, matcher, chunk)
        if fresh is None:
            store.add_dropped(logs=len(rows) - start)
            return None
        written += fresh
        skipped += len(chunk) - fresh
        if progress is not None:
            progress(start + len(chunk))
    return written, skipped


def import_spans(store: Store, spans: Sequence[SpanRow]) -> tuple[int, int] | None:
    """Insert the spans the store does not hold yet (same trace and span id) -> ``(written,
    skipped)``; None when they could not be written (``store.last_error`` says why)."""
    if not spans:
        return 0, 0
    try:
        conn = connect_writer(store.path)
    except (sqlite3.Error, OSError):
        return None
    try:
        traces = sorted({s.trace_id for s in spans})
        marks = ", ".join("?" for _ in traces)
        held = {
            (str(t), str(i))
            for t, i in conn.execute(
                f"SELECT trace_id, span_id FROM spans WHERE trace_id IN ({marks}) UNION ALL"
                " SELECT trace_id, client_span_id FROM spans"
                f" WHERE trace_id IN ({marks}) AND client_span_id IS NOT NULL",
                traces + traces,
            )
        }
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    fresh = [s for s in spans if (s.trace_id, s.span_id) not in held]
    if fresh and not store.write_spans(fresh):
        return None
    return len(fresh), len(spans) - len(fresh)


def mark_imported(store: Store, session_ids: Iterable[str]) -> None:
    """Remember that these sessions came from an import (``trace`` says so)."""
    ids = sorted(set(session_ids))
    if not ids:
        return
    with contextlib.suppress(sqlite3.Error, OSError):
        conn = connect_writer(store.path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "UPDATE sessions SET imported_ts = coalesce(imported_ts, ?) WHERE session_id = ?",
                [(time.time_ns(), sid) for sid in ids],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()


def _import_batch(store: Store, matcher: _ImportMatcher, chunk: Sequence[LogRow]) -> int | None:
    """One transaction of ``import_logs`` -> how many rows were new (None: not written)."""
    fresh = store.write_chosen_logs(lambda conn: matcher.fresh(conn, chunk))
    if fresh is not None:
        matcher.claim(chunk)
    return fresh


class _ImportMatcher:
    """Which rows of an import are already stored, across the import's transactions."""

    def __init__(self) -> None:
        # rows of earlier batches, each matched to a stored row: skipped, or written by us
        self._claimed: dict[tuple[object, ...], int] = {}

    def fresh(self, conn: Connection, rows: Sequence[LogRow]) -> list[LogRow]:
        stored: dict[tuple[int, str | None], dict[tuple[object, ...], int]] = {}
        result: list[LogRow] = []
        for row in rows:
            key = (row.ts, row.session_id)
            counts = stored.get(key)
            if counts is None:
                counts = stored[key] = {}
                for found in conn.execute(SELECT_SAME_LOGS, key):
                    values = tuple(found)
                    counts[values] = counts.get(values, 0) + 1
                for values, n in counts.items():
                    counts[values] = max(0, n - self._claimed.get(values, 0))
            values = row.values()
            if counts.get(values, 0) > 0:
                counts[values] -= 1
            else:
                result.append(row)
        return result

    def claim(self, rows: Iterable[LogRow]) -> None:
        """``rows`` (a committed batch) now each have their stored row."""
        for row in rows:
            values = row.values()
            self._claimed[values] = self._claimed.get(values, 0) + 1
