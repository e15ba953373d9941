"""Stopping a JSON route's store query when its client goes away.

The page aborts the requests of filters the user has already typed past; the browser then
closes their connections. ``Cancel.cancel`` (on the event loop, from the exchange's
``on_close``) interrupts the query running for that request on its worker thread's SQLite
connection, so a stale search stops using a query thread at once. The lock ties the interrupt
to this request's run: once the route is done the connection is forgotten, and an interrupt
that came when no statement was running is cleared by SQLite when the next one starts.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Generator
from contextlib import contextmanager

__all__ = ["Cancel", "CancelledError"]


class CancelledError(Exception):
    """The client went away before its query ran."""


class Cancel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._conn is not None:
                self._conn.interrupt()

    @contextmanager
    def running(self, conn: sqlite3.Connection) -> Generator[None]:
        """Around a route's queries on ``conn`` (in the worker thread)."""
        with self._lock:
            if self.cancelled:
                raise CancelledError
            self._conn = conn
        try:
            yield
        finally:
            with self._lock:
                self._conn = None
