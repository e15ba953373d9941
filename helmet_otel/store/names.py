"""Known names (servers, methods, tools) and the globs that select them.

``--server``, ``--method`` and ``--tool`` take globs (``get-*``, ``tools/*``) matched
case-insensitively. A glob is resolved here against the names the store holds, listed with one
index seek per distinct value (a "loose index scan"), so the query itself filters on exact
values with an index. A glob that names nothing yields the close names for the "no records
match" note.
"""

from __future__ import annotations

import difflib
import fnmatch
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Final, Literal

__all__ = [
    "NAME_COLUMNS",
    "NameColumn",
    "close_names",
    "has_glob",
    "known_names",
    "match_names",
    "name_matches",
]

NameColumn = Literal["service", "method", "target"]
NAME_COLUMNS: Final[dict[NameColumn, str]] = {
    "service": "server",
    "method": "method",
    "target": "tool",
}
_GLOB_CHARS: Final = frozenset("*?[")


def known_names(conn: sqlite3.Connection, column: NameColumn) -> list[str]:
    """The distinct non-null values of ``logs.column``, sorted (an index seek per value)."""
    sql = (
        f"WITH RECURSIVE v(x) AS (SELECT min({column}) FROM logs WHERE {column} IS NOT NULL"
        f" UNION ALL SELECT (SELECT min({column}) FROM logs WHERE {column} > v.x)"
        " FROM v WHERE v.x IS NOT NULL) SELECT x FROM v WHERE x IS NOT NULL"
    )
    return [str(r[0]) for r in conn.execute(sql).fetchall()]


def has_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def name_matches(patterns: Sequence[str], name: str) -> bool:
    """Whether any pattern (a glob or a name) matches ``name``, case-insensitively."""
    key = name.casefold()
    for pattern in patterns:
        folded = pattern.casefold()
        if key == folded or (has_glob(folded) and fnmatch.fnmatchcase(key, folded)):
            return True
    return False


def match_names(patterns: Sequence[str], names: Iterable[str]) -> list[str]:
    """The names any pattern matches (``name_matches``), plus each exact pattern as given."""
    found = [name for name in names if name_matches(patterns, name)]
    for pattern in patterns:  # an exact name the store does not hold yet (--follow) still counts
        if not has_glob(pattern) and pattern not in found:
            found.append(pattern)
    return found


def close_names(pattern: str, names: Sequence[str], *, n: int = 3) -> list[str]:
    """Known names that look like ``pattern``: substring matches first, then similar ones."""
    plain = pattern.casefold().strip("*?[]")
    by_key = {name.casefold(): name for name in names}
    picked = [name for key, name in by_key.items() if plain and plain in key][:n]
    for key in difflib.get_close_matches(plain, list(by_key), n=n, cutoff=0.5):
        if by_key[key] not in picked:
            picked.append(by_key[key])
    return picked[:n]
