"""Pinned tool definitions in the store (``tool_pins``), for tool-drift detection.

One row per (server, tool): the approved definition (the first one seen, or the one
``helmet-otel tools approve`` accepted), the latest definition that differs from it (the empty
string, `REMOVED`, when the server no longer lists the tool), and when the tool was first
called. The table is not part of the log schema's migrations: it is created
when first needed (``CREATE TABLE IF NOT EXISTS``) by whoever writes pins, and a store without
it simply has no pins. The proxy writes it from the relay's loop on the rare occasions a pin
changes, with a short busy timeout: a store that is locked that long costs the pin's
persistence (it stays in the process's memory), never the traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from helmet_otel.store.engine import Connection
from helmet_otel.store.schema import connect_reader, connect_writer

__all__ = ["REMOVED", "PinRow", "PinTable", "read_pins"]

_CREATE: Final = """CREATE TABLE IF NOT EXISTS tool_pins (
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    definition TEXT NOT NULL,
    pinned_ns INTEGER NOT NULL,
    seen TEXT,
    seen_ns INTEGER,
    called_ns INTEGER,
    PRIMARY KEY (server, tool)
) WITHOUT ROWID"""
_COLUMNS: Final = "server, tool, definition, pinned_ns, seen, seen_ns, called_ns"
WRITE_BUSY_TIMEOUT_MS: Final = 100
REMOVED: Final = ""  # ``seen`` of a tool the server no longer lists (policy.pins.REMOVED)


@dataclass(frozen=True, slots=True)
class PinRow:
    server: str
    tool: str
    definition: str
    pinned_ns: int
    seen: str | None
    seen_ns: int | None
    called_ns: int | None


def _rows(conn: Connection, server: str | None) -> list[PinRow]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tool_pins'"
    ).fetchone()
    if exists is None:
        return []
    if server is None:
        cursor = conn.execute(f"SELECT {_COLUMNS} FROM tool_pins ORDER BY server, tool")
    else:
        cursor = conn.execute(
            f"SELECT {_COLUMNS} FROM tool_pins WHERE server = ? ORDER BY tool", (server,)
        )
    return [PinRow(*row) for row in cursor]


def read_pins(path: Path, server: str | None = None) -> list[PinRow]:
    """The pins in the store at ``path`` (of ``server``, or all), for the viewer commands.
    Raises ``StoreError`` when the store cannot be read."""
    conn = connect_reader(path)
    try:
        return _rows(conn, server)
    finally:
        conn.close()


class PinTable:
    """The table, open for writing. Every method raises ``sqlite3.Error`` (busy included)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = WRITE_BUSY_TIMEOUT_MS) -> None:
        self._conn = connect_writer(path, busy_timeout_ms=busy_timeout_ms)
        self._conn.execute(_CREATE)

    def close(self) -> None:
        self._conn.close()

    def rows(self, server: str | None = None) -> list[PinRow]:
        return _rows(self._conn, server)

    def pin(self, server: str, tool: str, definition: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO tool_pins (server, tool, definition, pinned_ns) "
            "VALUES (?, ?, ?, ?)",
            (server, tool, definition, time.time_ns()),
        )

    def drifted(self, server: str, tool: str, definition: str) -> None:
        self._conn.execute(
            "UPDATE tool_pins SET seen = ?, seen_ns = ? WHERE server = ? AND tool = ?",
            (definition, time.time_ns(), server, tool),
        )

    def called(self, server: str, tool: str) -> None:
        self._conn.execute(
            "UPDATE tool_pins SET called_ns = ? WHERE server = ? AND tool = ? "
            "AND called_ns IS NULL",
            (time.time_ns(), server, tool),
        )

    def approve(self, server: str, tool: str | None = None) -> list[str]:
        """Pin the latest definition of ``tool`` (or of every drifted tool of ``server``), or
        forget the pin of a tool the server no longer lists; the tools approved."""
        where = "server = ? AND seen IS NOT NULL" + (" AND tool = ?" if tool else "")
        params: tuple[str, ...] = (server, tool) if tool else (server,)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            tools = [r[0] for r in self._conn.execute(
                f"SELECT tool FROM tool_pins WHERE {where} ORDER BY tool", params
            )]  # fmt: skip
            self._conn.execute(f"DELETE FROM tool_pins WHERE {where} AND seen = ?",
                               (*params, REMOVED))  # fmt: skip
            self._conn.execute(
                f"UPDATE tool_pins SET definition = seen, pinned_ns = ?, seen = NULL, "
                f"seen_ns = NULL WHERE {where}",
                (time.time_ns(), *params),
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return tools
