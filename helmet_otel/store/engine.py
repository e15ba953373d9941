"""The SQLite library a store writer runs on: Python's ``sqlite3`` or ``apsw``, behind one interface.

The telemetry worker writes through ``apsw`` (issue 15: the writer's SQLite work per call is
about a quarter cheaper there; see ``docs/design.md``, "The store writer's SQLite library").
Everything else (the viewers, ``logs --import``, maintenance, the tests' own writers) uses the
standard library. Both link their own SQLite; the file format, the WAL and its index are the
same, so processes using either share a store safely.

One rule keeps that safe: **a process never has connections of both libraries open on the same
store at once.** SQLite's locks are POSIX advisory locks, which the kernel drops for the whole
process when *any* descriptor on the file is closed; SQLite works around that within its own
library, but two libraries in one process do not know each other's descriptors. The worker
process opens only its writer; nothing else in it touches the store.

``Connection`` is the part of ``sqlite3.Connection`` the writer, the migrations and retention
use; ``ApswConnection`` gives that part over ``apsw`` and raises the ``sqlite3`` exception SQLite's
result code maps to (``sqlite_errorcode`` set), so the writer classifies failures one way.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol

__all__ = ["ENGINES", "ApswConnection", "Connection", "Engine", "Rows", "connect"]

Engine = Literal["sqlite3", "apsw"]
ENGINES: Final[tuple[Engine, ...]] = ("sqlite3", "apsw")


class Rows(Protocol):
    """What a statement gives back (``sqlite3.Cursor`` is one)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of ``sqlite3.Connection`` a store writer uses (``sqlite3.Connection`` is one)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows: ...

    def getlimit(self, category: int, /) -> int: ...

    def close(self) -> None: ...


def connect(engine: Engine, path: Path, busy_timeout_ms: int) -> Connection:
    """A read-write connection (autocommit: transactions are begun explicitly) on ``path``."""
    if engine == "apsw":
        return ApswConnection(path, busy_timeout_ms)
    return sqlite3.connect(
        path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )


# sqlite3's exception class for each primary result code (as CPython's module maps them).
_ERRORS: Final[dict[int, type[sqlite3.Error]]] = {
    2: sqlite3.InternalError,  # INTERNAL
    12: sqlite3.InternalError,  # NOTFOUND
    11: sqlite3.DatabaseError,  # CORRUPT
    26: sqlite3.DatabaseError,  # NOTADB
    18: sqlite3.DataError,  # TOOBIG
    19: sqlite3.IntegrityError,  # CONSTRAINT
    20: sqlite3.IntegrityError,  # MISMATCH
    21: sqlite3.InterfaceError,  # MISUSE
    25: sqlite3.InterfaceError,  # RANGE
}


def _sqlite_error(exc: Exception) -> sqlite3.Error:
    """The ``sqlite3`` exception for an ``apsw`` one, with the same message and codes."""
    code = getattr(exc, "extendedresult", None)
    if not isinstance(code, int) or code < 0:
        code = getattr(exc, "result", -1)
        code = code if isinstance(code, int) else -1
    cls = (
        _ERRORS.get(code & 0xFF, sqlite3.OperationalError)
        if code >= 0
        else sqlite3.ProgrammingError
    )
    error = cls(str(exc))
    if code >= 0:
        error.sqlite_errorcode = code  # pyright: ignore[reportAttributeAccessIssue]
    return error


class _ApswRows:
    """An ``apsw`` cursor as ``Rows``; ``rowcount`` is the statement's changes."""

    __slots__ = ("_cursor", "rowcount")

    def __init__(self, cursor: Any, changes: int) -> None:
        self._cursor = cursor
        self.rowcount = changes

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except _apsw().Error as exc:
            raise _sqlite_error(exc) from exc

    def fetchall(self) -> list[Any]:
        try:
            return list(self._cursor.fetchall())
        except _apsw().Error as exc:
            raise _sqlite_error(exc) from exc

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


def _apsw() -> Any:
    import apsw  # the worker imports it once; the viewers never do

    return apsw


@functools.cache
def _apsw_ready() -> Any:
    """``apsw`` with its SQLite's memory statistics off, set once per process before its first
    connection. With them on, every allocation SQLite makes (one per text bound, among others)
    takes a global mutex and measures its block, for ``sqlite3_memory_used`` figures nothing
    here reads: about 1 us of the writer's CPU per call (issue 15). The setting needs SQLite
    shut down; with a connection already open elsewhere in the process it stays as it was."""
    apsw = _apsw()
    with contextlib.suppress(apsw.Error):
        apsw.shutdown()
        apsw.config(apsw.SQLITE_CONFIG_MEMSTATUS, 0)
    apsw.initialize()
    return apsw


class ApswConnection:
    """``Connection`` over ``apsw``: the default (serialized) threading mode, like ``sqlite3``."""

    __slots__ = ("_db", "_error")

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        apsw = _apsw_ready()
        self._error: type[Exception] = apsw.Error
        try:
            self._db = apsw.Connection(
                str(path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            )
            self._db.set_busy_timeout(busy_timeout_ms)
        except apsw.Error as exc:
            raise _sqlite_error(exc) from exc

    @property
    def in_transaction(self) -> bool:
        return bool(self._db.in_transaction)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        return self._counted(self._db.execute, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows:
        return self._counted(self._db.executemany, sql, parameters)

    def _counted(self, run: Callable[[str, Any], Any], sql: str, parameters: Any) -> Rows:
        """``run(sql, parameters)``'s rows, the changes it made as their ``rowcount``."""
        db = self._db
        try:
            before = db.total_changes()
            cursor = run(sql, parameters)
            return _ApswRows(cursor, db.total_changes() - before)
        except self._error as exc:
            raise _sqlite_error(exc) from exc

    def getlimit(self, category: int, /) -> int:
        return int(self._db.limit(category))

    def close(self) -> None:
        try:
            self._db.close(True)  # finalise any statement still open, then close
        except self._error as exc:
            raise _sqlite_error(exc) from exc
