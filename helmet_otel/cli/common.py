"""What the viewer commands share: their errors (exit statuses), notes on stderr, and defaults."""

from __future__ import annotations

import contextlib
import sys
from typing import Final

__all__ = [
    "DEFAULT_FOLLOW_BACKLOG",
    "DEFAULT_TABLE_LIMIT",
    "FOLLOW_INTERVAL_S",
    "NotFound",
    "UsageError",
    "note",
]

FOLLOW_INTERVAL_S: Final = 0.05
DEFAULT_TABLE_LIMIT: Final = 100
DEFAULT_FOLLOW_BACKLOG: Final = 10


class UsageError(Exception):
    """Bad combination of options: exit status 2."""


class NotFound(Exception):
    """Something the user named does not exist: exit status 1."""


def note(message: str) -> None:
    """A one-line note on stderr, ``helmet-otel: `` first (a closed stderr is ignored)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"helmet-otel: {message}\n")
        sys.stderr.flush()
