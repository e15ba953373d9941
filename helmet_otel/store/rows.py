"""Running a query on a ``Reader``'s connection for the query modules beside ``query.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from helmet_otel.store.query import Reader
from helmet_otel.store.schema import StoreError

__all__ = ["read_rows"]


def read_rows(reader: Reader, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Run a query on the reader's connection; a database error is a ``StoreError``."""
    try:
        return reader.conn.execute(sql, args).fetchall()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the store at {reader.path}: {exc}") from None
