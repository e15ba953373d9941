"""The worker's own batching queues and the pipeline they make, unit by unit (the metric
aggregation: `test_metrics.py`)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from helmet_otel import semconv as sc
from helmet_otel.config import ProxyOptions
from helmet_otel.telemetry.batching import BatchQueue, BatchSettings, joint_export, settings
from helmet_otel.telemetry.frames import Config
from helmet_otel.telemetry.metrics import (
    MetricSet,
)
from helmet_otel.telemetry.pipeline import DropCounter, Pipeline, build_pipeline
from tests.faults.helpers import poll


class Gate:
    """An exporter that blocks until released and records every batch it got."""

    def __init__(self, result: bool = True) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []
        self.result = result

    def __call__(self, batch: Sequence[int]) -> bool:
        self.entered.set()
        assert self.release.wait(10)
        self.batches.append(list(batch))
        return self.result


def _five_queued(gate: Gate) -> tuple[Counter[str], BatchQueue[int]]:
    """A queue of batches of 2 into ``gate``, 0..4 put, and what it counts as dropped."""
    drops: Counter[str] = Counter()
    queue = BatchQueue("sink", gate, lambda r, n: drops.update({r: n}), BatchSettings(10, 2, 60))
    for item in range(5):
        queue.put(item)
    return drops, queue


def test_settings_read_the_sdk_variables_and_ignore_nonsense() -> None:
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "500",
           "OTEL_BSP_SCHEDULE_DELAY": "250"}  # fmt: skip
    assert settings(env, "OTEL_BSP", delay_s=1.0) == BatchSettings(100, 100, 0.25)
    bad = {"OTEL_BLRP_MAX_QUEUE_SIZE": "lots", "OTEL_BLRP_SCHEDULE_DELAY": "-5"}
    assert settings(bad, "OTEL_BLRP", delay_s=0.2) == BatchSettings(4096, 512, 0.2)


def test_what_arrives_during_an_export_waits_for_a_batchs_worth_or_the_delay() -> None:
    """Not a stream of small batches behind a slow export: each export has a fixed cost."""
    exported: list[tuple[float, list[int]]] = []  # (when the export returned, the batch)
    done = threading.Condition()
    queue: BatchQueue[int]

    def export(batch: Sequence[int]) -> bool:
        if not exported:  # two arrive while the first batch is exported
            queue.put(4)
            queue.put_urgent(5)
        with done:
            exported.append((time.monotonic(), list(batch)))
            done.notify_all()
        return True

    queue = BatchQueue("sink", export, lambda r, n: None, BatchSettings(100, 4, 0.3))
    for item in range(4):
        queue.put(item)  # a full batch
    with done:
        assert done.wait_for(lambda: len(exported) == 2, timeout=10)
    (first, batch), (second, rest) = exported
    assert (batch, rest) == ([0, 1, 2, 3], [5, 4])  # the urgent one first
    assert second - first >= 0.3  # they waited for the delay, not a batch of their own at once
    for item in range(6, 10):
        queue.put(item)  # a batch's worth leaves without the delay
    with done:
        assert done.wait_for(lambda: len(exported) == 3, timeout=10)
    assert exported[2][1] == [6, 7, 8, 9]
    assert queue.drain(time.monotonic() + 10) == 0


def test_a_full_queue_drops_its_oldest_items_and_counts_them() -> None:
    gate = Gate()
    drops: Counter[str] = Counter()
    queue = BatchQueue("sink", gate, lambda r, n: drops.update({r: n}), BatchSettings(4, 2, 60))
    queue.put(0)
    queue.put(1)  # a full batch: the thread takes [0, 1] and blocks in the exporter
    assert gate.entered.wait(10)
    for item in range(2, 8):  # 6 more into a queue of 4: the two oldest (2, 3) go
        queue.put(item)
    assert drops == {"sink_queue_full": 2}
    gate.release.set()
    assert queue.drain(time.monotonic() + 10) == 0
    assert gate.batches == [[0, 1], [4, 5], [6, 7]]


def test_an_export_thread_has_its_name_in_the_kernel_too() -> None:
    gate = Gate()
    queue = BatchQueue("store_logs", gate, lambda r, n: None, BatchSettings(4, 1, 60))
    queue.put(0)
    assert gate.entered.wait(10)  # the thread is running (and named before its first batch)
    names = {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}
    gate.release.set()
    assert queue.drain(time.monotonic() + 10) == 0
    assert "helmet-store_lo" in names  # the kernel keeps 15 bytes


def test_failed_exports_and_what_a_deadline_leaves_are_counted() -> None:
    gate = Gate(result=False)
    drops, queue = _five_queued(gate)
    assert gate.entered.wait(10)
    # [0, 1] is in flight, 2, 3, 4 never left: those three are left; the two in flight are
    # counted apart (their sink may still take them), and once
    assert queue.drain(time.monotonic()) == 3
    assert drops == {"shutdown_in_flight": 2}
    gate.release.set()
    queue._thread.join(10)  # pyright: ignore[reportPrivateUsage]
    assert drops == {"shutdown_in_flight": 2}  # not again when the given-up export fails


def test_at_the_deadline_drain_can_wait_for_the_export_in_flight_to_end() -> None:
    """The store's drain: the batch being written at the deadline is written (not counted as
    given up while it lands anyway), and no other batch is started."""
    gate = Gate()
    drops, queue = _five_queued(gate)
    assert gate.entered.wait(10)  # [0, 1] is in flight
    left: list[int] = []
    drainer = threading.Thread(target=lambda: left.append(queue.drain(time.monotonic(), None, 10)))
    drainer.start()
    last = lambda: queue._last_batch  # noqa: E731  # pyright: ignore[reportPrivateUsage]
    poll(last, bool, 10, "drain waits for the export in flight")
    gate.release.set()  # the export in flight ends within finish_s
    drainer.join(10)
    assert (left, gate.batches, drops) == ([3], [[0, 1]], {})


def test_a_queue_closed_before_its_thread_ran_still_exports_what_it_holds() -> None:
    gate = Gate()
    gate.release.set()
    queue = BatchQueue("sink", gate, lambda r, n: None, BatchSettings(10, 2, 60), start=False)
    for item in range(3):
        queue.put(item)
    queue.close()
    queue._thread.start()  # pyright: ignore[reportPrivateUsage]  # (the thread runs only now)
    assert queue.drain(time.monotonic() + 10) == 0
    assert gate.batches == [[0, 1], [2]]


def test_a_failing_sink_is_not_tried_again_while_draining() -> None:
    gate = Gate(result=False)
    drops, queue = _five_queued(gate)
    assert gate.entered.wait(10)  # [0, 1] is in flight
    queue.close()
    gate.release.set()  # ... and fails while the queue closes: 2, 3, 4 are not tried
    assert queue.drain(time.monotonic() + 10, stall_s=5) == 3
    assert (gate.batches, drops, queue.failed) == ([[0, 1]], {"sink_export_failed": 2}, True)


def test_urgent_items_are_never_evicted_and_leave_first() -> None:
    gate = Gate()
    drops: Counter[str] = Counter()
    queue = BatchQueue("sink", gate, lambda r, n: drops.update({r: n}), BatchSettings(4, 3, 60))
    for item in range(3):  # a full batch: the thread takes [0, 1, 2] and blocks (a stalled sink)
        queue.put(item)
    assert gate.entered.wait(10)
    queue.put_urgent(100)
    for item in range(3, 13):  # a flood into a queue of 4: the ordinary oldest go
        queue.put(item)
        if item == 6:
            queue.put_urgent(101)
    assert drops == {"sink_queue_full": 6}
    for item in range(102, 105):  # a lane full of its kind drops its own oldest, counted apart
        queue.put_urgent(item)
    assert drops == {"sink_queue_full": 6, "sink_security_queue_full": 1}
    gate.release.set()
    assert queue.drain(time.monotonic() + 10) == 0
    assert gate.batches == [[0, 1, 2], [101, 102, 103], [104, 9, 10], [11, 12]]


class JointGate:
    """A joint export (two queues) that blocks until released, records every pair of batches
    and answers per batch with ``results``."""

    def __init__(self, results: tuple[bool, bool] = (True, True)) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.turns: list[tuple[list[int], list[int]]] = []
        self.results = results

    def __call__(self, batches: Sequence[Sequence[int]]) -> Sequence[bool]:
        self.entered.set()
        assert self.release.wait(10)
        first, second = batches
        self.turns.append((list(first), list(second)))
        return self.results


def _joint(gate: JointGate, drops: Counter[str], size: int = 2) -> tuple[BatchQueue[int], ...]:
    def unused(batch: Sequence[int]) -> bool:
        raise AssertionError("a queue of a joint export has no export of its own")

    def drop(reason: str, count: int) -> None:
        drops.update({reason: count})

    queues = tuple(
        BatchQueue(name, unused, drop, BatchSettings(10, size, 60), start=False)
        for name in ("logs", "spans")
    )
    joint_export("joint", queues, gate)
    return queues


def test_a_joint_export_takes_a_batch_of_each_queue_in_one_turn() -> None:
    """The store's log records and spans: one thread, one export (one transaction) per turn;
    a batch's worth in either queue starts it, and each queue keeps its own bound and reasons."""
    gate, drops = JointGate(), Counter[str]()
    logs, spans = _joint(gate, drops)
    spans.put(100)
    logs.put(0)
    logs.put(1)  # a batch's worth of log records: both queues go in the same turn
    assert gate.entered.wait(10)
    names = {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}
    for item in range(2, 14):  # into a log queue of 10 while the export hangs
        logs.put(item)
    spans.put_urgent(101)
    spans.put(102)
    gate.release.set()
    logs.close()  # closes both: they share the thread
    assert logs.drain(time.monotonic() + 10) == 0
    assert spans.drain(time.monotonic() + 10) == 0
    assert "helmet-joint" in names
    assert drops == {"logs_queue_full": 2}  # 2 and 3, the oldest
    assert gate.turns == [([0, 1], [100]), ([4, 5], [101, 102]), ([6, 7], []), ([8, 9], []),
                          ([10, 11], []), ([12, 13], [])]  # fmt: skip


def test_a_joint_export_counts_each_queues_failures_and_leftovers_apart() -> None:
    gate, drops = JointGate(results=(True, False)), Counter[str]()
    logs, spans = _joint(gate, drops)
    logs.put(0)
    spans.put_urgent(100)
    spans.put(101)  # spans' batch's worth: one turn, whose span batch fails
    gate.release.set()
    assert logs.drain(time.monotonic() + 10) == 0
    assert spans.drain(time.monotonic() + 10) == 0
    assert gate.turns == [([0], [100, 101])]
    assert drops == {"spans_export_failed": 1, "spans_security_export_failed": 1}
    # a deadline that gives up on a hung turn: each queue counts its own part of it
    hung, drops = JointGate(), Counter[str]()
    logs, spans = _joint(hung, drops)
    logs.put(0)
    logs.put(1)
    spans.put(100)
    assert hung.entered.wait(10)
    logs.put(2)
    logs.close()
    assert logs.drain(time.monotonic()) == 1  # 2 never left
    assert spans.drain(time.monotonic()) == 0
    hung.release.set()
    assert drops == {"shutdown_in_flight": 3}  # 0, 1 and 100, each queue its own, once
    assert not logs._waiting() and not spans._waiting()  # pyright: ignore[reportPrivateUsage]


def test_a_joint_export_ends_with_the_write_in_flight_when_one_queue_drains() -> None:
    """At the deadline, ``finish_s`` waits for the turn in flight to end; the next turn takes
    nothing: what it had taken of another queue goes back there, for that queue's drain."""
    gate, drops = JointGate(), Counter[str]()
    logs, spans = _joint(gate, drops)
    logs.put(0)
    logs.put(1)
    assert gate.entered.wait(10)  # the turn ([0, 1], []) is in flight
    logs.put(2)
    logs.put(3)
    spans.put(100)
    left: list[int] = []
    drainer = threading.Thread(target=lambda: left.append(spans.drain(time.monotonic(), None, 10)))
    drainer.start()
    last = lambda: spans._last_batch  # noqa: E731  # pyright: ignore[reportPrivateUsage]
    poll(last, bool, 10, "drain waits for the turn in flight")
    gate.release.set()  # the turn ends within finish_s; the next one finds spans closing
    drainer.join(10)
    assert left == [1]  # 100 never left
    assert logs.drain(time.monotonic()) == 2  # 2 and 3, taken and put back
    assert (gate.turns, drops) == ([([0, 1], [])], {})


def test_lost_urgent_items_are_counted_apart() -> None:
    gate = Gate(result=False)
    drops: Counter[str] = Counter()
    queue = BatchQueue("sink", gate, lambda r, n: drops.update({r: n}), BatchSettings(10, 3, 60))
    queue.put_urgent(100)
    queue.put(0)
    queue.put(1)  # a full batch of one urgent and two ordinary items: its export fails
    gate.release.set()
    assert queue.drain(time.monotonic() + 10) == 0
    assert gate.batches == [[100, 0, 1]]
    assert drops == {"sink_export_failed": 2, "sink_security_export_failed": 1}
    # a deadline that gives up on a hung export counts the urgent items of it apart
    hung = Gate()
    drops.clear()
    queue = BatchQueue("sink", hung, lambda r, n: drops.update({r: n}), BatchSettings(10, 3, 60))
    queue.put_urgent(100)
    queue.put(0)
    queue.put(1)
    assert hung.entered.wait(10)
    queue.put_urgent(101)
    queue.put(2)
    assert queue.drain(time.monotonic()) == 1  # 2 never left
    assert drops == {
        "shutdown_in_flight": 2,  # 0 and 1
        "sink_security_shutdown_in_flight": 1,  # 100
        "sink_security_shutdown_timeout": 1,  # 101 never left
    }
    hung.release.set()


def test_a_waiting_queue_holds_the_producer_until_there_is_room_instead_of_dropping() -> None:
    gate = Gate()
    drops: Counter[str] = Counter()
    queue = BatchQueue(
        "store", gate, lambda r, n: drops.update({r: n}), BatchSettings(4, 2, 60), wait_s=30
    )
    waited = threading.Event()

    class Room(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waited.set()
            gate.release.set()  # the producer is waiting now: let the stuck export finish
            return super().wait(timeout)

    queue._room = Room()  # pyright: ignore[reportPrivateUsage]
    queue.put(0)
    queue.put(1)  # the thread takes [0, 1] and blocks in the exporter
    assert gate.entered.wait(10)
    for item in range(2, 7):  # the fifth does not fit: it waits for room, nothing is dropped
        queue.put(item)
    assert waited.is_set()
    assert queue.drain(time.monotonic() + 10) == 0
    assert drops == {}
    assert [x for batch in gate.batches for x in batch] == list(range(7))


def test_a_stuck_sink_costs_one_wait_then_the_queue_drops_until_it_recovers() -> None:
    gate = Gate()
    drops: Counter[str] = Counter()
    queue = BatchQueue(
        "store", gate, lambda r, n: drops.update({r: n}), BatchSettings(4, 2, 60), wait_s=0.05
    )
    waits = 0

    class Room(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            nonlocal waits
            waits += 1
            return super().wait(timeout)

    queue._room = Room()  # pyright: ignore[reportPrivateUsage]
    queue.put(0)
    queue.put(1)
    assert gate.entered.wait(10)  # stuck in the exporter from now on
    for item in range(2, 12):
        queue.put(item)
    assert waits == 1  # the first overflow waited (in vain); the next six dropped at once
    assert drops == {"store_queue_full": 6}
    gate.release.set()
    assert queue.drain(time.monotonic() + 10) == 0
    assert [x for batch in gate.batches for x in batch] == [0, 1, 8, 9, 10, 11]


def test_what_the_flush_deadline_leaves_is_counted_before_the_last_metric_export() -> None:
    gate = Gate()
    metrics = MetricSet(Resource({}), InstrumentationScope("t"))
    drops = DropCounter(metrics.counter("dropped", "1", "d"))
    queue = BatchQueue("otlp_spans", gate, drops.add, BatchSettings(10, 2, 60))
    pipeline = Pipeline(Resource({}), InstrumentationScope("t"), ALWAYS_ON, metrics, drops,
                        span_queues=[queue])  # fmt: skip
    for item in range(5):
        queue.put(item)
    assert gate.entered.wait(10)  # [0, 1] stuck in an export to a hung collector
    pipeline.flush_and_shutdown(0.1)
    # what never left and the stuck batch given up in flight, counted apart
    assert drops.take() == {"shutdown_timeout": 3, "shutdown_in_flight": 2}
    data = metrics.collect()
    assert data is not None
    (dropped,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert {(dict(p.attributes)[sc.HELMET_TELEMETRY_REASON], p.value)
            for p in dropped.data.data_points} == {  # pyright: ignore[reportAttributeAccessIssue]
        ("relay_queue_full", 0), ("relay_busy", 0), ("shutdown_timeout", 3),
        ("shutdown_in_flight", 2),
    }  # fmt: skip
    gate.release.set()


def test_the_pipeline_is_built_from_the_typed_options(tmp_path: Path) -> None:
    """The store gets the retention caps of the options; the resource names the service and
    the proxy's transport; no OTLP destination, no OTLP sink."""
    path = tmp_path / "store.db"
    options = ProxyOptions(store=str(path), store_max_bytes=123456, store_max_age=3600.0)
    env: dict[str, str] = {}
    pipeline = build_pipeline(Config(options, "svc", 1, "host", "http"), env)
    try:
        assert pipeline.store is not None
        assert (pipeline.store.path, pipeline.store.max_bytes, pipeline.store.max_age_s) == (
            path,
            123456,
            3600.0,
        )
        assert pipeline.sinks == [f"store({path})"]
        assert pipeline.metric_export is None
        attributes = dict(pipeline.resource.attributes)
        assert (attributes[sc.SERVICE_NAME], attributes[sc.HELMET_TRANSPORT]) == ("svc", "http")
    finally:
        pipeline.flush_and_shutdown(5.0)


def test_items_put_all_at_once_are_kept_and_dropped_as_one_by_one() -> None:
    gate = Gate()
    drops: Counter[str] = Counter()
    queue = BatchQueue("sink", gate, lambda r, n: drops.update({r: n}), BatchSettings(4, 2, 60))
    queue.put_all([0, 1])  # a full batch: the thread takes [0, 1] and blocks in the exporter
    assert gate.entered.wait(10)
    queue.put_all([2, 3, 4])  # they fit
    queue.put_all([5, 6, 7])  # they do not: the two oldest (2, 3) go, as `put` by `put`
    assert drops == {"sink_queue_full": 2}
    gate.release.set()
    assert queue.drain(time.monotonic() + 10) == 0
    assert gate.batches == [[0, 1], [4, 5], [6, 7]]
