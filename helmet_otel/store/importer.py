"""``helmet-otel logs --import``: write an export's records into a store, skipping those it
already holds, so importing a file twice writes it once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Final

from helmet_otel.store.model import LogRow
from helmet_otel.store.writer import Store

__all__ = ["import_logs"]

# The stored rows an imported record could duplicate: same time and session, every column.
SELECT_SAME_LOGS: Final = (
    "SELECT ts, session_id, event, severity_number, severity_text, direction, kind, method, "
    "target, request_id, latency_ms, size, is_error, error_type, service, trace_id, span_id, "
    "body, attrs FROM logs WHERE ts = ? AND session_id IS ?"
)


def import_logs(
    store: Store, rows: Sequence[LogRow], *, batch: int = 1000
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
    return written, skipped


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

    def fresh(self, conn: sqlite3.Connection, rows: Sequence[LogRow]) -> list[LogRow]:
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
