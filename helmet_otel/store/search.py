"""How a page of full-text search results is read: planned by how many records match.

A search for a rare word (at most ``RARE_MATCHES`` records, which includes no match at all) reads
its matches by id and sorts them: a few milliseconds on any store. A common word walks the time
index newest first and stops at the page's last row, which a common word reaches soon. Without
the plan, a rare word or one that matches nothing walked the whole time index (150-300 ms on a
1,000,000-record store), and a common word read by id sorted hundreds of thousands of rows.

Counting is cheap where it matters: an FTS5 count stops at ``RARE_MATCHES + 1``, and the exact
word is counted first (it stops early even where its prefix would not, e.g. ``weather*``).
"""

from __future__ import annotations

from typing import Final

from helmet_otel.store.query import LogFilter, Reader, fts_query
from helmet_otel.store.rows import read_rows

__all__ = ["RARE_MATCHES", "is_rare", "search_source"]

RARE_MATCHES: Final = 20_000


def _at_most(reader: Reader, query: str, limit: int) -> bool:
    rows = read_rows(
        reader,
        "SELECT count(*) FROM (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ? LIMIT ?)",
        (query, limit + 1),
    )
    return int(rows[0][0]) <= limit  # pyright: ignore[reportArgumentType]


def is_rare(reader: Reader, query: str) -> bool:
    """Whether the FTS5 ``query`` (as ``fts_query`` builds it) matches at most ``RARE_MATCHES``."""
    exact = query.removesuffix("*")
    if exact != query and not _at_most(reader, exact, RARE_MATCHES):
        return False
    return _at_most(reader, query, RARE_MATCHES)


def search_source(reader: Reader, flt: LogFilter) -> str:
    """The ``FROM`` of a page's id query for ``flt``."""
    query = fts_query(flt.grep) if flt.grep is not None else None
    if query is None:
        return "logs"
    if is_rare(reader, query):
        return "logs NOT INDEXED"  # by id: the full-text matches, then sorted
    if not flt.session_prefixes and not flt.tools:
        return "logs INDEXED BY logs_ts"  # newest first until the page is full
    return "logs"
