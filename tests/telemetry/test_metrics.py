"""The worker's own metric aggregation (`telemetry.metrics`, `Instruments`) and its periodic
export, unit by unit."""

from __future__ import annotations

import threading
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
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from helmet_otel import semconv as sc
from helmet_otel.store.records import Origin, Span
from helmet_otel.telemetry.instruments import Instruments
from helmet_otel.telemetry.metrics import (
    MetricSet,
    PeriodicExport,
    attribute_key,
    delta_preferred,
    record_pairs,
)
from helmet_otel.telemetry.pipeline import DropCounter


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
