"""The proxy's pinned tool definitions: in the local store when it is on, else in memory."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from helmet_otel.policy.pins import MemoryPins, Pin, PinStore
from helmet_otel.store.pins import PinRow, PinTable
from helmet_otel.store.schema import StoreError


def _pin(row: PinRow) -> Pin:
    return Pin(row.server, row.tool, row.definition, row.pinned_ns, row.seen, row.seen_ns,
               row.called_ns)  # fmt: skip


def _note(text: str) -> None:
    os.write(2, f"helmet-otel: {text}\n".encode())


class StorePins:
    """Pins in the store's ``tool_pins`` table. A store that fails a write keeps the pin in
    this process's memory only (reported once): pins never cost the traffic more than the
    store's short busy timeout."""

    def __init__(self, path: Path) -> None:
        self.table = PinTable(path)
        self._reported = False

    def _failed(self, exc: Exception) -> None:
        if not self._reported:
            self._reported = True
            _note(f"tool pins could not be written to the store ({exc}); kept in memory")

    def pins(self, server: str) -> dict[str, Pin]:
        try:
            return {row.tool: _pin(row) for row in self.table.rows(server)}
        except sqlite3.Error as exc:
            self._failed(exc)
            return {}

    def pin(self, server: str, tool: str, definition: str) -> None:
        try:
            self.table.pin(server, tool, definition)
        except sqlite3.Error as exc:
            self._failed(exc)

    def drifted(self, server: str, tool: str, definition: str) -> None:
        try:
            self.table.drifted(server, tool, definition)
        except sqlite3.Error as exc:
            self._failed(exc)

    def called(self, server: str, tool: str) -> None:
        try:
            self.table.called(server, tool)
        except sqlite3.Error as exc:
            self._failed(exc)


def open_pins(store: str | None, enabled: bool) -> PinStore:
    """The store's pins, or memory when the store is off or cannot be opened (the telemetry
    worker already says once what is wrong with such a store: one problem, one line)."""
    if not enabled:
        return MemoryPins()
    from helmet_otel.store.paths import default_store_path

    path = Path(store).expanduser() if store else default_store_path()
    try:
        return StorePins(path)
    except (sqlite3.Error, OSError, StoreError):
        return MemoryPins()
