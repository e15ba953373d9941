"""What the worker's record and span writers share: items go to their sink queues one by one,
or, between `gather` and `release`, wait in a list and go to each queue in one call (the worker
hands over what one read of its pipe made at once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Gatherer(Generic[T]):
    def __init__(self, put: Callable[[T], None], put_all: Callable[[Sequence[T]], None]) -> None:
        self._put = put
        self._put_all = put_all
        self._emit = put  # (what the writers call per item: `put`, or the list's append)
        self._gathered: list[T] = []

    def gather(self) -> None:
        """From now on ordinary items wait in a list until `release` (urgent ones, which the
        writers emit apart, still go at once)."""
        self._emit = self._gathered.append

    def release(self) -> None:
        """Hand what `gather` kept to the queues, in order; items go one by one again."""
        self._emit = self._put
        gathered = self._gathered
        if gathered:
            self._gathered = []
            self._put_all(gathered)
