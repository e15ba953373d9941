"""Progress of long work (``logs --import``, an export to ``-o FILE``) on stderr, only when
stderr is a terminal: one line rewritten in place at most every 0.2 s, then a closing line."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Final, TypeVar

from helmet_otel.cli.render import is_tty

__all__ = ["Progress"]

_EVERY_S: Final = 0.2
_T = TypeVar("_T")


class Progress:
    def __init__(self, label: str, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.count = 0
        self.shown = is_tty(sys.stderr)
        self._next = time.monotonic() + _EVERY_S

    def update(self, count: int) -> None:
        self.count = count
        if not self.shown or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + _EVERY_S
        of = f"/{self.total}" if self.total is not None else ""
        self._write(f"\rhelmet-otel: {self.label} {count}{of} records\x1b[K")

    def counted(self, items: Iterable[_T]) -> Iterator[_T]:
        """``items``, updating the count as they pass."""
        for n, item in enumerate(items, 1):
            yield item
            if n % 1000 == 0:
                self.update(n)

    def done(self) -> None:
        """Clear the progress line (the caller writes the closing line)."""
        if self.shown:
            self._write("\r\x1b[K")

    @staticmethod
    def _write(text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(text)
            sys.stderr.flush()
