"""The worker's own batching queue and metric aggregation, unit by unit."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from helmet_otel import semconv as sc
from helmet_otel.config import ProxyOptions
from helmet_otel.store.records import Origin, Span
from helmet_otel.telemetry.batching import BatchQueue, BatchSettings, joint_export, settings
from helmet_otel.telemetry.frames import Config
from helmet_otel.telemetry.instruments import Instruments
from helmet_otel.telemetry.metrics import (
    MetricSet,
    PeriodicExport,
    attribute_key,
    delta_preferred,
    record_pairs,
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
    drops: Counter[str] = Counter()
    queue = BatchQueue("sink", gate, lambda r, n: drops.update({r: n}), BatchSettings(10, 2, 60))
    for item in range(5):
        queue.put(item)
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
    drops: Counter[str] = Counter()
    queue = BatchQueue("sink", gate, lambda r, n: drops.update({r: n}), BatchSettings(10, 2, 60))
    for item in range(5):
        queue.put(item)
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
    drops: Counter[str] = Counter()
    queue = BatchQueue("sink", gate, lambda r, n: drops.update({r: n}), BatchSettings(10, 2, 60))
    for item in range(5):
        queue.put(item)
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


def _histogram(metrics: MetricSet) -> list[HistogramDataPoint]:
    data = metrics.collect()
    assert data is not None
    (metric,) = [m for m in data.resource_metrics[0].scope_metrics[0].metrics if m.name == "h"]
    return list(metric.data.data_points)  # pyright: ignore[reportReturnType]


def test_histogram_buckets_exemplars_and_temporality() -> None:
    for delta in (False, True):
        metrics = MetricSet(Resource({}), InstrumentationScope("t"), delta=delta)
        histogram = metrics.histogram("h", "s", "d", [0.1, 1.0])
        histogram.record(0.05, {"m": "a"}, trace_id=7, span_id=9, ts=123)
        histogram.record(0.1, {"m": "a"})  # a bound belongs to the bucket below it
        histogram.record(5.0, {"m": "a"})
        (point,) = _histogram(metrics)
        assert (point.count, point.sum, point.min, point.max) == (3, 5.15, 0.05, 5.0)
        assert list(point.bucket_counts) == [2, 0, 1]
        assert [(e.value, e.trace_id, e.span_id, e.time_unix_nano) for e in point.exemplars] == [
            (0.05, 7, 9, 123)
        ]
        histogram.record(0.5, {"m": "a"})
        (point,) = _histogram(metrics)
        assert point.count == (1 if delta else 4)
        assert point.exemplars == []  # exemplars belong to the interval they were taken in


class _Ids(NamedTuple):
    trace_id: int
    span_id: int


def _points(metrics: MetricSet) -> dict[str, list[tuple[object, ...]]]:
    """The histograms' points, collected."""
    data = metrics.collect()
    assert data is not None
    return {
        m.name: sorted(
            (
                sorted(p.attributes.items()), p.count, p.sum, p.min, p.max,  # pyright: ignore
                list(p.bucket_counts),  # pyright: ignore
                [(e.value, e.time_unix_nano, e.trace_id, e.span_id) for e in p.exemplars],
            )
            for p in m.data.data_points
        )
        for m in data.resource_metrics[0].scope_metrics[0].metrics
        if isinstance(m.data, HistogramData)
    }  # fmt: skip


def test_record_pairs_is_record_key_into_both_histograms() -> None:
    pairs = [  # (value, first key, second key, first span, second span, ts, weight)
        (0.05, 1, 2, _Ids(7, 70), _Ids(7, 71), 100, 1),
        (0.07, 1, 2, _Ids(8, 80), _Ids(8, 81), 200, 1),  # same bucket: its exemplar is the last
        (0.1, 1, 3, _Ids(9, 90), None, 300, 2),  # the proxy answered: no second measurement
        (5.0, 4, 2, _Ids(6, 60), _Ids(6, 61), 400, 3),
    ]
    keys = {n: attribute_key({"k": n}) for n in (1, 2, 3, 4)}
    paired, single = (MetricSet(Resource({}), InstrumentationScope("t")) for _ in range(2))
    first, second = (paired.histogram(n, "s", "d", [0.1, 1.0]) for n in ("a", "b"))
    record_pairs(first, second, [
        (v, keys[a], keys[b], x, y, ts, w) for v, a, b, x, y, ts, w in pairs
    ])  # fmt: skip
    one, other = (single.histogram(n, "s", "d", [0.1, 1.0]) for n in ("a", "b"))
    for value, a, b, x, y, ts, weight in pairs:
        one.record_key(value, keys[a], x.trace_id, x.span_id, ts, weight)
        if y is not None:
            other.record_key(value, keys[b], y.trace_id, y.span_id, ts, weight)
    expected = _points(single)
    assert _points(paired) == expected
    assert expected["a"][0][5:] == ([4, 0, 0], [(0.1, 300, 9, 90)])  # (0.1 belongs below)
    ((_, count, _, low, high, buckets, exemplars),) = expected["b"]  # (key 3: never recorded)
    assert (count, low, high, buckets) == (5, 0.05, 5.0, [2, 0, 3])
    assert exemplars == [(0.07, 200, 8, 81), (5.0, 400, 6, 61)]


def test_instruments_make_deferred_measurements_once_settled() -> None:
    """A call's messages and durations are appended as it goes and made at `settle`, which
    collecting (and ``helmet.performance``'s interval) runs first."""
    metrics = MetricSet(Resource({}), InstrumentationScope("t"))
    instruments = Instruments(metrics)
    keys = instruments.message_keys("tools/call", sc.DIRECTION_C2S, "request")
    duration_key = attribute_key({sc.MCP_METHOD_NAME: "tools/call"})
    for _ in range(3):
        instruments.messages_seen.append((keys, 120, 1))
    instruments.messages_seen.append((keys, 120, 4))
    origin = Origin(Resource({}), InstrumentationScope("t"), None)
    server, client = Span("s", 5, 50, 1, 0, 2, 0, {}, origin), Span("c", 5, 51, 1, 50, 3, 0, {}, origin)  # fmt: skip
    instruments.calls_done.append(
        (0.002, duration_key, duration_key, server, client, 900, 4, "tools/call echo", 40, False)
    )
    assert instruments.messages.values == {} and instruments.server_duration.points == {}
    points = _points(metrics)
    assert [(p[0], p[1]) for p in points[sc.METRIC_MESSAGE_SIZE]] == [
        (sorted({sc.MCP_METHOD_NAME: "tools/call", sc.HELMET_DIRECTION: sc.DIRECTION_C2S}.items()), 7)
    ]  # fmt: skip
    assert instruments.messages.values == {keys[0]: 7}
    assert instruments.messages_total == 4
    for name, span in ((sc.METRIC_SERVER_OPERATION_DURATION, server), (sc.METRIC_CLIENT_OPERATION_DURATION, client)):  # fmt: skip
        ((_, count, total, _, _, _, exemplars),) = points[name]
        assert (count, total, exemplars) == (4, 0.008, [(0.002, 900, 5, span.span_id)])
    assert instruments.messages_seen == [] and instruments.calls_done == []
    instruments.calls_done.append(
        (0.003, duration_key, duration_key, server, None, 901, 1, "tools/call echo", 10, True)
    )
    stats = instruments.interval()["methods"]["tools/call echo"]  # (the first call's, too)
    assert (stats["count"], stats["errors"], stats["bytes"], stats["p99_ms"]) == (5, 1, 170, 3.0)


def test_instruments_nothing_reads_make_only_the_performance_figures() -> None:
    """Without a metric exporter (``exported`` False) a message's and a call's metrics are not
    made; ``helmet.performance``'s figures are."""
    metrics = MetricSet(Resource({}), InstrumentationScope("t"))
    instruments = Instruments(metrics, exported=False)
    keys = instruments.message_keys("tools/call", sc.DIRECTION_C2S, "request")
    duration_key = attribute_key({sc.MCP_METHOD_NAME: "tools/call"})
    origin = Origin(Resource({}), InstrumentationScope("t"), None)
    server = Span("s", 5, 50, 1, 0, 2, 0, {}, origin)
    instruments.messages_seen.append((keys, 120, 1))
    instruments.calls_done.append(
        (0.002, duration_key, duration_key, server, None, 900, 1, "tools/call echo", 40, False)
    )
    body = instruments.interval()
    assert body["messages"] == 1
    assert body["methods"]["tools/call echo"]["count"] == 1
    assert instruments.messages.values == {}
    assert instruments.server_duration.points == {} and instruments.message_size.points == {}


def test_counters_delta_resets_but_up_down_stays_cumulative() -> None:
    metrics = MetricSet(Resource({}), InstrumentationScope("t"), delta=True)
    counter = metrics.counter("c", "1", "d")
    gauge = metrics.up_down_counter("u", "1", "d")
    counter.add(2, {"k": "v"})
    gauge.add(1)
    metrics.collect()
    counter.add(3, {"k": "v"})
    gauge.add(1)
    data = metrics.collect()
    assert data is not None
    by_name = {m.name: m.data for m in data.resource_metrics[0].scope_metrics[0].metrics}
    assert [p.value for p in by_name["c"].data_points] == [3]  # pyright: ignore[reportAttributeAccessIssue]
    assert by_name["c"].aggregation_temporality is AggregationTemporality.DELTA  # pyright: ignore[reportAttributeAccessIssue]
    assert [p.value for p in by_name["u"].data_points] == [2]  # pyright: ignore[reportAttributeAccessIssue]
    assert by_name["u"].aggregation_temporality is AggregationTemporality.CUMULATIVE  # pyright: ignore[reportAttributeAccessIssue]
    assert delta_preferred({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "LowMemory"})
    assert not delta_preferred({})


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


def _sums(data: object) -> list[NumberDataPoint]:
    assert isinstance(data, Sum)
    return list(data.data_points)


def test_a_measurement_by_key_is_one_by_its_attributes() -> None:
    """Keys made once (a kind of call's) land on the same points as attributes given each
    time, in any order."""
    metrics = MetricSet(Resource({}), InstrumentationScope("t"))
    counter = metrics.counter("c", "1", "d")
    histogram = metrics.histogram("h", "s", "d", [0.1, 1.0])
    key = attribute_key({"m": "a", "k": 1})
    counter.add(2, {"k": 1, "m": "a"})
    counter.add_key(3, key)
    counter.add_key(1, attribute_key(None))
    counter.add(1)
    histogram.record(0.05, {"k": 1, "m": "a"})
    histogram.record_key(5.0, key, trace_id=7, span_id=9, ts=123, weight=2)
    data = metrics.collect()
    assert data is not None
    by_name = {m.name: m.data for m in data.resource_metrics[0].scope_metrics[0].metrics}
    assert sorted((sorted((p.attributes or {}).items()), p.value) for p in _sums(by_name["c"])) == [
        ([], 2), ([("k", 1), ("m", "a")], 5)
    ]  # fmt: skip
    assert isinstance(by_name["h"], HistogramData)
    (point,) = by_name["h"].data_points
    assert dict(point.attributes or {}) == {"k": 1, "m": "a"}
    assert (point.count, point.sum, list(point.bucket_counts)) == (3, 10.05, [1, 0, 2])
    assert [(e.value, e.trace_id, e.span_id) for e in point.exemplars] == [(5.0, 7, 9)]


def test_tallied_values_collect_as_recorded_ones_do() -> None:
    """`Histogram.tally` (message sizes: values that repeat) counts now and aggregates when
    collected, or when it holds too many distinct values: the same points as `record_key`."""
    for delta in (False, True):
        metrics = MetricSet(Resource({}), InstrumentationScope("t"), delta=delta)
        tallied = metrics.histogram("t", "By", "d", [10, 100])
        recorded = metrics.histogram("r", "By", "d", [10, 100])
        key = attribute_key({"m": "a"})
        for round_ in range(2):
            values = [(5, key, 1), (50, key, 3), (5, key, 2), (500, attribute_key(None), 1)]
            values += [(1000 + i, key, 1) for i in range(5000)]  # (past the tally's bound)
            for value, at, weight in values:
                tallied.tally(value, at, weight)
                recorded.record_key(value, at, weight=weight)
            data = metrics.collect()
            assert data is not None
            points = {name: [] for name in ("t", "r")}
            for metric in data.resource_metrics[0].scope_metrics[0].metrics:
                assert isinstance(metric.data, HistogramData)
                points[metric.name] = sorted(
                    (sorted((p.attributes or {}).items()), p.count, p.sum, p.min, p.max,
                     list(p.bucket_counts))
                    for p in metric.data.data_points
                )  # fmt: skip
            assert points["t"] == points["r"]
            assert points["t"][1][1] == 5006 * (1 if delta else round_ + 1)


class HeldExporter:
    """A metric exporter whose first export waits until released; it keeps every value."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.values: list[float] = []

    def export(self, data: object, timeout_millis: float = 0) -> object:
        assert isinstance(data, MetricsData)
        self.entered.set()
        assert self.release.wait(10)
        for metric in data.resource_metrics[0].scope_metrics[0].metrics:
            self.values += [p.value for p in _sums(metric.data)]
        return MetricExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 0) -> None:
        pass


def test_the_recording_thread_collects_and_a_slow_export_loses_nothing() -> None:
    """`tick` collects on the recording thread; while a collection still waits for the export
    thread, the next tick leaves the measurements in the instruments (delta: nothing lost,
    nothing counted twice), and the shutdown exports the rest."""
    metrics = MetricSet(Resource({}), InstrumentationScope("t"), delta=True)
    counter = metrics.counter("c", "1", "d")
    exporter = HeldExporter()
    export = PeriodicExport(metrics, exporter, 60, lambda: None)
    counter.add(1)
    export.tick()  # collected: the export thread takes it and is held
    assert exporter.entered.wait(10)
    counter.add(2)
    export.tick()  # collected: waits for the export thread
    counter.add(4)
    export.tick()  # the last still waits: 4 stays in the counter
    counter.add(8)
    exporter.release.set()
    export.shutdown(5)
    assert exporter.values[:2] == [1, 2]
    assert sum(exporter.values) == 15


def test_drop_counter_counts_everything_and_says_so_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = MetricSet(Resource({}), InstrumentationScope("t"))
    drops = DropCounter(metrics.counter("d", "1", "d"))
    drops.add("relay_queue_full", 5, quiet=True)  # the relay has said it on its own stderr
    assert capsys.readouterr().err == ""
    drops.add("otlp_spans_queue_full", 2)
    drops.add("otlp_logs_queue_full", 1)
    assert capsys.readouterr().err.count("being dropped") == 1
    assert drops.take() == {"relay_queue_full": 5, "otlp_spans_queue_full": 2,
                            "otlp_logs_queue_full": 1}  # fmt: skip


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
