"""Pinned tool definitions: the first definition of each tool a server listed, per server.

A later listing that differs, or that no longer has the tool, is drift (a "rug pull" signal)
until someone approves the new definition (`helmet-otel tools approve`), which pins it (or, for
a removed tool, forgets the pin). `PinStore` is what the interceptor
needs; the local store implements it (`helmet_otel.store.pins`), and `MemoryPins` keeps pins
for the life of the process when there is no store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final, Protocol

# The "latest definition" (`Pin.seen`) of a pinned tool the server no longer lists: a removal
# is drift too, and approving it forgets the pin. (Definitions are JSON objects, never empty.)
REMOVED: Final = ""


@dataclass(slots=True)
class Pin:
    server: str
    tool: str
    definition: str  # the approved (first seen, or approved) definition
    pinned_ns: int
    seen: str | None = None  # the latest definition that differs from it, if any
    seen_ns: int | None = None
    called_ns: int | None = None  # the first call of the tool


class PinStore(Protocol):
    def pins(self, server: str) -> dict[str, Pin]:
        """Every pin of ``server`` by tool name."""
        ...

    def pin(self, server: str, tool: str, definition: str) -> None:
        """Pin a tool seen for the first time."""
        ...

    def drifted(self, server: str, tool: str, definition: str) -> None:
        """Remember a definition that differs from the pin (`REMOVED`: the tool is gone)."""
        ...

    def called(self, server: str, tool: str) -> None:
        """The tool was called for the first time."""
        ...


class MemoryPins:
    """Pins for the life of the process."""

    def __init__(self) -> None:
        self._pins: dict[str, dict[str, Pin]] = {}

    def pins(self, server: str) -> dict[str, Pin]:
        return dict(self._pins.get(server, {}))

    def pin(self, server: str, tool: str, definition: str) -> None:
        self._pins.setdefault(server, {})[tool] = Pin(server, tool, definition, time.time_ns())

    def drifted(self, server: str, tool: str, definition: str) -> None:
        pin = self._pins.get(server, {}).get(tool)
        if pin is not None:
            pin.seen, pin.seen_ns = definition, time.time_ns()

    def called(self, server: str, tool: str) -> None:
        pin = self._pins.get(server, {}).get(tool)
        if pin is not None and pin.called_ns is None:
            pin.called_ns = time.time_ns()
