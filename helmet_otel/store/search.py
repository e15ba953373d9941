"""The newest records a full-text search matches (a page of the web viewer's log view), planned
by how many records match.

- A rare word (at most ``RARE_MATCHES`` records, which includes none at all): its matches are
  read by id and sorted. A few milliseconds on any store.
- A common word: the records newer than the ``K``-th newest are a window; the full-text query
  is asked only for the id range of that window (FTS5 seeks to it), and the window's records
  are walked newest first. When the window holds a full page, the page is exact (every record
  outside is older than all in it); else the window grows (``WINDOWS``), and last the whole
  time index is walked. A common word fills its page in the first window: a few milliseconds where the
  unplanned query read every match's id first (60-130 ms for a word in a third of 1,000,000
  records).

Counting is cheap where it matters: an FTS5 count stops at ``RARE_MATCHES + 1``, and the exact
word is counted first (it stops early even where its prefix would not, e.g. ``weather*``).
"""

from __future__ import annotations

from typing import Final

from helmet_otel.store.query import Reader
from helmet_otel.store.rows import read_rows

__all__ = ["RARE_MATCHES", "WINDOWS", "is_rare", "newest_matches"]

RARE_MATCHES: Final = 20_000
WINDOWS: Final = (4_096, 65_536)
_FTS: Final = "id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?{range})"


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


def _ids(reader: Reader, sql: str, args: list[object]) -> list[int]:
    return [int(r[0]) for r in read_rows(reader, sql, args)]  # pyright: ignore[reportArgumentType]


def _window(reader: Reader, size: int, upper_ts: int | None) -> tuple[int, int, int] | None:
    """The time of the ``size``-th newest record up to ``upper_ts`` and the id range of the
    records before it: every record newer than that time is among them. None when there are
    fewer records (the window would be everything)."""
    bound, args = ("WHERE ts <= ?", [upper_ts]) if upper_ts is not None else ("", [])
    rows = read_rows(
        reader,
        f"SELECT min(ts), min(id), max(id), count(*) FROM (SELECT ts, id FROM logs INDEXED BY"
        f" logs_ts {bound} ORDER BY ts DESC LIMIT ?)",
        [*args, size],
    )
    low_ts, low_id, high_id, count = rows[0]
    if count != size:
        return None
    return int(low_ts), int(low_id), int(high_id)  # pyright: ignore[reportArgumentType]


def newest_matches(
    reader: Reader,
    query: str,
    where: str,
    args: list[object],
    n: int,
    *,
    upper_ts: int | None,
    narrow: bool,
) -> list[int]:
    """The ids of the ``n`` newest records (by ``(ts, id)``) that meet ``where`` and match the
    FTS5 ``query``; ``upper_ts``: no record in ``where`` is newer; ``narrow``: ``where`` names
    sessions or tools (their indexes beat the time walk)."""
    order = f" ORDER BY ts DESC, id DESC LIMIT {int(n)}"
    if is_rare(reader, query):
        sql = f"SELECT id FROM logs NOT INDEXED WHERE {where} AND {_FTS.format(range='')}"
        return _ids(reader, sql + order, [*args, query])
    if narrow:
        sql = f"SELECT id FROM logs WHERE {where} AND {_FTS.format(range='')}"
        return _ids(reader, sql + order, [*args, query])
    for size in WINDOWS:
        window = _window(reader, size, upper_ts)
        if window is None:
            break
        low_ts, low_id, high_id = window
        fts = _FTS.format(range=" AND rowid BETWEEN ? AND ?")
        sql = f"SELECT id FROM logs INDEXED BY logs_ts WHERE ts > ? AND {where} AND {fts}"
        found = _ids(reader, sql + order, [low_ts, *args, query, low_id, high_id])
        if len(found) == n:
            return found
    sql = f"SELECT id FROM logs INDEXED BY logs_ts WHERE {where} AND {_FTS.format(range='')}"
    return _ids(reader, sql + order, [*args, query])
