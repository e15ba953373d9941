"""One sink's bounded queue and the thread that exports it in batches.

This replaces the SDK's batch processors on the worker's hot path: queuing a record is a deque
append, a full queue drops its oldest record and counts it (the SDK logs a warning per dropped
record instead, which costs more than the record), and `drain` reports what a deadline left
behind so that it is counted too. The SDK's ``OTEL_BSP_*`` (spans) and ``OTEL_BLRP_*`` (log
records) settings apply; the defaults differ where noted in `settings`.

Policy decisions and security findings are never shed by a full queue: they wait in a lane of
their own (`put_urgent`, as large as the queue), which ordinary records never evict and whose
items go out first in every batch. Whatever of them is lost all the same (the lane itself
full, a failed export, the flush deadline) is counted under its own ``{name}_security_*``
reasons.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from helmet_otel.telemetry.thread_name import name_this_thread

T = TypeVar("T")

# Twice the SDK's 2048: a burst of a thousand calls must fit while an export to a
# slow collector is in flight. Both queues together stay within the worker's memory budget.
DEFAULT_MAX_QUEUE = 4096
DEFAULT_BATCH = 512


@dataclass(frozen=True, slots=True)
class BatchSettings:
    max_queue: int = DEFAULT_MAX_QUEUE
    batch_size: int = DEFAULT_BATCH
    delay_s: float = 1.0


def settings(env: Mapping[str, str], prefix: str, *, delay_s: float) -> BatchSettings:
    """``OTEL_BSP_*`` / ``OTEL_BLRP_*`` (``prefix``), falling back to our defaults."""

    def number(name: str, default: float) -> float:
        raw = env.get(f"{prefix}_{name}", "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError:
            value = default
        return value if value > 0 else default

    max_queue = int(number("MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE))
    batch_size = min(int(number("MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH)), max_queue)
    return BatchSettings(max_queue, batch_size, number("SCHEDULE_DELAY", delay_s * 1000) / 1000)


SHUTDOWN_IN_FLIGHT = "shutdown_in_flight"  # given up at the deadline while being exported


class BatchQueue(Generic[T]):
    """Items wait here until the export thread hands a batch of them to ``export``.

    A batch leaves when ``batch_size`` items are queued or ``delay_s`` after the last one left
    (as the SDK's batch processors do); what arrives while a batch is exported waits for the
    same, so a slow export does not turn into a stream of small ones (each export has a fixed
    cost: an HTTP request, a transaction).

    ``export`` returns False (or raises) when the batch could not be delivered; those items are
    counted through ``on_drop(reason, count)`` as ``{name}_export_failed``. A full queue drops
    its oldest item as ``{name}_queue_full``.

    ``wait_s`` > 0 makes a full queue first wait that long for room: for a sink whose export
    always finishes (the local store), so a producer that is only faster for a moment yields
    to the export thread and slows down (its own input, the relay's pipe, buffers meanwhile)
    instead of dropping. A remote sink keeps 0: a hung collector must never hold anything up.
    """

    def __init__(
        self,
        name: str,
        export: Callable[[Sequence[T]], bool],
        on_drop: Callable[[str, int], None],
        batch: BatchSettings,
        *,
        wait_s: float = 0.0,
        weight: Callable[[T], int] | None = None,
        start: bool = True,
    ) -> None:
        """``start=False``: no export thread of its own (`joint_export` gives it one)."""
        self.name = name
        self._wait_s = wait_s
        self._patient = wait_s > 0  # whether a full queue waits for room now
        self._room = threading.Event()
        self._export = export
        self._on_drop = on_drop
        # what an item stands for (a sampled record: its helmet.sample.weight), so a drop
        # counts the calls it loses, as the relay counts them
        self._weight = weight
        self._settings = batch
        self._max_queue = batch.max_queue  # (read for every item: no attribute chains)
        self._batch_size = batch.batch_size
        self._queue: deque[T] = deque()
        self._urgent: deque[T] = deque()  # decisions and findings: never evicted by the rest
        self._wake = threading.Event()
        self._closing = False
        self.local = wait_s > 0  # a sink on this machine (the store), not a collector
        # the batch being exported and how many of its first items are urgent (counted only
        # when drain gives it up: weighing every batch costs more than it ever tells)
        self._in_flight: tuple[list[T], int] = ([], 0)
        # taking a batch (and ending its export) against `drain` giving up: so that every item
        # is either in the queues, in flight or delivered when drain counts what is left
        self._taking = threading.Lock()
        self._export_started = 0.0  # monotonic, while an export is in flight
        self._abandoned = False  # drain gave up on the batch in flight: it is counted there
        self._last_batch = False  # drain waits for the export in flight; take no other batch
        self.failed = False  # an export failed since `close`
        self._partners: tuple[BatchQueue[object], ...] = ()  # (`joint_export`)
        self._thread = threading.Thread(target=self._run, name=f"helmet-{name}", daemon=True)
        if start:
            self._thread.start()

    def put(self, item: T) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._full(queue)
        queue.append(item)
        if len(queue) + len(self._urgent) >= self._batch_size:
            wake = self._wake
            if not wake.is_set():
                wake.set()

    def put_all(self, items: Sequence[T]) -> None:
        """`put` of each of ``items``, in order, in one call (what the worker recorded from
        one read of its pipe): one ``extend`` when they fit, else `put` by `put`."""
        queue = self._queue
        if len(queue) + len(items) > self._max_queue:
            for item in items:
                self.put(item)
            return
        queue.extend(items)
        if len(queue) + len(self._urgent) >= self._batch_size:
            wake = self._wake
            if not wake.is_set():
                wake.set()

    def _full(self, queue: deque[T]) -> None:
        """Room for one more: after a wait for it (a patient sink), else by dropping the
        oldest."""
        if self._patient and not self._closing:
            self._room.clear()  # before the check: a batch taken after it sets the event
            if len(queue) >= self._max_queue:
                self._wake.set()
                # a sink that made no room in time is stuck, not slow: stop waiting for it
                # until its queue is half empty again (a locked store costs one wait)
                self._patient = self._room.wait(self._wait_s)
        if len(queue) >= self._max_queue:
            dropped = queue.popleft()
            self._on_drop(f"{self.name}_queue_full", self._count([dropped]))

    def put_urgent(self, item: T) -> None:
        """A policy decision's or a security finding's item: ordinary items never evict it,
        and it leaves in the next batch. Only a lane full of its kind drops (its oldest)."""
        urgent = self._urgent
        if len(urgent) >= self._max_queue:
            urgent.popleft()
            self._on_drop(f"{self.name}_security_queue_full", 1)
        urgent.append(item)
        if len(urgent) + len(self._queue) >= self._batch_size:
            self._wake.set()

    def _run(self) -> None:
        name_this_thread()
        export = self._export
        BatchQueue._export_loop(
            (self,), lambda batches: (export(batches[0]),), self._settings.delay_s
        )

    def _take(self) -> tuple[list[T], int] | None:
        """The next batch (its urgent items first) and how many of it are urgent; None once
        `drain` gave up on this queue or waits only for the export in flight."""
        queue, urgent, size = self._queue, self._urgent, self._batch_size
        with self._taking:
            if self._abandoned or self._last_batch:
                return None
            batch = [urgent.popleft() for _ in range(min(size, len(urgent)))]
            taken = len(batch)  # of them urgent
            batch += [queue.popleft() for _ in range(min(size - taken, len(queue)))]
            self._in_flight = (batch, taken)
        self._room.set()
        if not self._patient and len(queue) * 2 <= self._max_queue:
            self._patient = self._wait_s > 0
        return batch, taken

    def _done(self, batch: list[T], taken: int, delivered: bool) -> bool:
        """The end of a batch's export: what failed is counted. -> False when the export
        thread must stop (drain gave up on this queue, or its sink fails while closing)."""
        with self._taking:
            if self._abandoned:  # drain counted this batch among those left
                return False
            self._in_flight = ([], 0)
        if not delivered:
            ordinary = self._count(batch[taken:])
            if ordinary:
                self._on_drop(f"{self.name}_export_failed", ordinary)
            if taken:
                self._on_drop(f"{self.name}_security_export_failed", taken)
            if self._closing:  # the sink fails: the rest is not tried, drain counts it
                self.failed = True
                return False
        return True

    def _put_back(self, batch: list[T], taken: int) -> None:
        """A batch taken but not exported goes back to the front of its queues."""
        with self._taking:
            self._urgent.extendleft(reversed(batch[:taken]))
            self._queue.extendleft(reversed(batch[taken:]))
            self._in_flight = ([], 0)

    def _waiting(self) -> int:
        return len(self._queue) + len(self._urgent)

    def close(self) -> None:
        """Export what is queued now, then stop (`drain` waits for it)."""
        for queue in (self, *self._partners):  # (queues that share a thread close together)
            queue._closing = True
        self._wake.set()

    def drain(self, deadline: float, stall_s: float | None = None, finish_s: float = 0.0) -> int:
        """Export what is queued until ``deadline`` (monotonic); return how many were left.

        ``finish_s``: at the deadline, take no other batch but wait that much longer for the
        export in flight to end, so that its outcome is known (the store: the last record's
        write waits for that write anyway).

        ``stall_s``: give up sooner on a sink whose export has been in flight that long (a
        hung or retrying collector), or whose export failed. The batch in flight then is
        counted here, apart, as ``shutdown_in_flight`` (the sink may still have taken it: a
        slow collector that answers after the deadline), and not again if its export fails.
        Urgent items are not returned but counted here too: those that never left as
        ``{name}_security_shutdown_timeout``, those in flight as
        ``{name}_security_shutdown_in_flight``."""
        self.close()
        thread = self._thread
        while thread.is_alive():
            now = time.monotonic()
            if now >= deadline:
                break
            started = self._export_started
            if stall_s is not None and started and now - started >= stall_s:
                break
            wait = deadline - now
            if stall_s is not None:
                wait = min(wait, (started or now) + stall_s - now, 0.05)
            thread.join(max(wait, 0.001))
        if finish_s > 0 and thread.is_alive():
            with self._taking:
                self._last_batch = True
            thread.join(finish_s)
        with self._taking:  # (the export thread takes no batch meanwhile, and none after)
            left = self._count(self._queue)
            self._queue.clear()
            urgent_left = len(self._urgent)
            self._urgent.clear()
            in_flight, taken = self._in_flight if thread.is_alive() else ([], 0)
            self._abandoned = thread.is_alive()
        if urgent_left:
            self._on_drop(f"{self.name}_security_shutdown_timeout", urgent_left)
        if taken:
            self._on_drop(f"{self.name}_security_shutdown_in_flight", taken)
        ordinary = self._count(in_flight[taken:])
        if ordinary:
            self._on_drop(SHUTDOWN_IN_FLIGHT, ordinary)
        return left

    def _count(self, items: Iterable[T]) -> int:
        """How many calls ``items`` stand for (one each without a weight function)."""
        weight = self._weight
        if weight is None:
            return len(items) if isinstance(items, Sized) else sum(1 for _ in items)
        return sum(weight(item) for item in items)

    @staticmethod
    def joint_export(
        name: str,
        queues: Sequence[BatchQueue[Any]],
        export: Callable[[Sequence[Sequence[Any]]], Sequence[bool]],
    ) -> threading.Thread:
        """One export thread for ``queues`` (made with ``start=False``): each turn takes a batch
        from each (an empty one where a queue has nothing) and hands them to ``export`` together,
        which says per batch whether it was delivered. For sinks with a fixed cost per export that
        several queues can share (the store: one transaction and one wake-up for the log records
        and the spans instead of one each). Each queue keeps its own bound, urgent lane, batch
        size and drop reasons; a batch's worth in any of them starts a turn; closing one closes
        them all (`drain` waits for the shared thread), and the first queue's delay applies."""
        wake = threading.Event()
        delay_s = queues[0]._settings.delay_s

        def run() -> None:
            name_this_thread()
            BatchQueue._export_loop(queues, export, delay_s)

        thread = threading.Thread(target=run, name=f"helmet-{name}", daemon=True)
        for queue in queues:
            queue._wake = wake
            queue._thread = thread
            queue._partners = tuple(q for q in queues if q is not queue)
        thread.start()
        return thread

    @staticmethod
    def _export_loop(
        queues: Sequence[BatchQueue[Any]],
        export: Callable[[Sequence[Sequence[Any]]], Sequence[bool]],
        delay_s: float,
    ) -> None:
        """The export thread of ``queues`` (one, or those of a `joint_export`)."""
        wake = queues[0]._wake
        while True:
            if not all(q._closing for q in queues):
                wake.wait(delay_s)
            elif not any(q._waiting() for q in queues):
                return  # closed, and all is exported (what was queued before `close` included)
            while any(q._waiting() for q in queues):
                wake.clear()  # (a batch's worth queued from now on wakes us again)
                taken: list[tuple[list[Any], int]] = []
                for queue in queues:
                    batch = queue._take()
                    if batch is None:  # drain gave up: the batches taken go back, it counts them
                        for earlier, (items, urgent) in zip(queues, taken, strict=False):
                            earlier._put_back(items, urgent)
                        return
                    taken.append(batch)
                started = time.monotonic()
                for queue in queues:
                    queue._export_started = started
                try:
                    delivered = export([batch for batch, _ in taken])
                except Exception:
                    delivered = [False] * len(queues)
                go_on = True
                for queue, (batch, urgent), ok in zip(queues, taken, delivered, strict=True):
                    queue._export_started = 0.0
                    # (every queue's batch is settled, even after one says stop)
                    go_on = queue._done(batch, urgent, ok or not batch) and go_on
                if not go_on:
                    return
                if not any(q._closing for q in queues) and all(
                    q._waiting() < q._batch_size for q in queues
                ):
                    break  # what came during the export waits for a batch's worth or the delay


joint_export = BatchQueue.joint_export
