"""Metric instruments aggregated in the worker, exported through the SDK's OTLP exporter.

The SDK's synchronous instruments cost about 25 us per measurement on these machines; at six
measurements per call that alone held the worker under 5,000 calls/s. These instruments are a
dict lookup and a bisect. `MetricSet.collect` turns them into the SDK's `MetricsData`, which
the SDK's own OTLP exporters encode and send, so every ``OTEL_EXPORTER_OTLP_*`` setting applies.

Temporality follows ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``: cumulative by
default; ``delta`` and ``lowmemory`` make counters and histograms delta (up-down counters stay
cumulative, as the specification says). Duration histograms keep one exemplar per bucket and
interval, the last request that fell in it, so Grafana can jump from a latency bucket to a trace.

Values that repeat and need no exemplar (message sizes) may be tallied instead
(`Histogram.tally`: one dict increment), and are aggregated when collected.

A measurement is keyed by its attributes' `attribute_key`. A caller whose measurements share
their attributes (every call of one kind) makes the key once and passes it to `Counter.add_key`
and `Histogram.record_key`: a dict lookup and a few additions, no set built per measurement.

Threading: one thread, the recording thread, makes every measurement and also collects them
(`MetricSet.collect`; `PeriodicExport.tick` hands what it collected to the export thread), so
neither takes a lock. Once it has stopped recording another thread may take over (the worker's
shutdown). An instrument that other threads also write (``shared=True``: the drop counter,
which export threads count into) takes its own lock for each measurement and in `collect`.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Protocol

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from helmet_otel.telemetry.thread_name import name_this_thread

Key = frozenset[tuple[str, Any]]
_TALLIES_MAX = 4096  # distinct (key, value) pairs a histogram tallies before it aggregates
NO_ATTRIBUTES: Key = frozenset()
_UNSHARED = nullcontext()


def attribute_key(attributes: Mapping[str, Any] | None) -> Key:
    """The key of a measurement's attributes: make it once for the attributes many
    measurements share and pass it to `Counter.add_key` / `Histogram.record_key`."""
    return frozenset(attributes.items()) if attributes else NO_ATTRIBUTES


def delta_preferred(env: Mapping[str, str]) -> bool:
    value = env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative")
    return value.strip().lower() in ("delta", "lowmemory")


class Counter:
    """A sum: monotonic (a counter) or not (an up-down counter), written by the recording
    thread only (see the module's threading contract)."""

    lock: threading.Lock | None = None  # a shared counter's

    def __init__(self, name: str, unit: str, description: str, *, monotonic: bool) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.monotonic = monotonic
        self.values: dict[Key, float] = {}

    def add(self, value: float, attributes: Mapping[str, Any] | None = None) -> None:
        self.add_key(value, frozenset(attributes.items()) if attributes else NO_ATTRIBUTES)

    def add_key(self, value: float, key: Key) -> None:
        """`add` with the attributes' `attribute_key`."""
        values = self.values
        values[key] = values.get(key, 0) + value


class SharedCounter(Counter):
    """A counter any thread may add to: a lock per measurement."""

    def __init__(self, name: str, unit: str, description: str, *, monotonic: bool) -> None:
        super().__init__(name, unit, description, monotonic=monotonic)
        self.lock = self._lock = threading.Lock()

    def add_key(self, value: float, key: Key) -> None:
        with self._lock:
            values = self.values
            values[key] = values.get(key, 0) + value


class _Point:
    __slots__ = ("buckets", "count", "exemplars", "max", "min", "sum")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.buckets = [0] * size
        self.exemplars: dict[int, tuple[float, int, int, int]] = {}

    def add(self, index: int, value: float, weight: int) -> None:
        """``weight`` measurements of ``value``, in bucket ``index``."""
        self.count += weight
        self.sum += value * weight
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.buckets[index] += weight


class Histogram:
    """Explicit-bucket histogram with optional exemplars, written by the recording thread
    only (see the module's threading contract)."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = list(bounds)
        self.points: dict[Key, _Point] = {}
        self._tallies: dict[tuple[Key, float], int] = {}  # `tally`'s, not yet in ``points``

    def new_point(self, key: Key) -> _Point:
        """``key``'s point, new."""
        point = self.points[key] = _Point(len(self.bounds) + 1)
        return point

    def tally(self, value: float, key: Key, weight: int = 1) -> None:
        """`record_key` without an exemplar, for values that repeat (message sizes): counted
        now (a dict increment), aggregated into its point when collected (`settle`)."""
        tallies = self._tallies
        at = (key, value)
        tallies[at] = tallies.get(at, 0) + weight
        if len(tallies) > _TALLIES_MAX:
            self.settle()

    def settle(self) -> None:
        """Aggregate what `tally` counted into the points."""
        tallies, self._tallies = self._tallies, {}
        for (key, value), weight in tallies.items():
            self.record_key(value, key, weight=weight)

    def record(
        self,
        value: float,
        attributes: Mapping[str, Any],
        trace_id: int = 0,
        span_id: int = 0,
        ts: int = 0,
        weight: int = 1,
    ) -> None:
        """``weight``: how many measurements this one stands for (a sampled call)."""
        self.record_key(value, frozenset(attributes.items()), trace_id, span_id, ts, weight)

    def record_key(
        self,
        value: float,
        key: Key,
        trace_id: int = 0,
        span_id: int = 0,
        ts: int = 0,
        weight: int = 1,
    ) -> None:
        """`record` with the attributes' `attribute_key`."""
        point = self.points.get(key) or self.new_point(key)
        index = bisect_left(self.bounds, value)
        point.add(index, value, weight)
        if span_id:
            point.exemplars[index] = (value, ts, trace_id, span_id)


class Traced(Protocol):
    """What an exemplar is taken from: a span's ids."""

    @property
    def trace_id(self) -> int: ...
    @property
    def span_id(self) -> int: ...


# A measurement for two histograms at once (`record_pairs`): the value, its key in
# each, its exemplar's span in each (the second None: not recorded there), its time, weight
Pair = tuple[float, Key, Key, Traced, "Traced | None", int, int]


def record_pairs(first: Histogram, second: Histogram, pairs: Iterable[Pair]) -> None:
    """`Histogram.record_key` of each pair's value into both histograms (which share their
    bounds), each with its own key and exemplar: one bucket search per pair."""
    bounds = first.bounds
    for value, first_key, second_key, first_span, second_span, ts, weight in pairs:
        index = bisect_left(bounds, value)
        point = first.points.get(first_key) or first.new_point(first_key)
        point.add(index, value, weight)
        point.exemplars[index] = (value, ts, first_span.trace_id, first_span.span_id)
        if second_span is not None:
            point = second.points.get(second_key) or second.new_point(second_key)
            point.add(index, value, weight)
            point.exemplars[index] = (value, ts, second_span.trace_id, second_span.span_id)


class MetricSet:
    """Every instrument of one worker, and their collection into `MetricsData`."""

    def __init__(
        self, resource: Resource, scope: InstrumentationScope, *, delta: bool = False
    ) -> None:
        self.resource, self.scope, self.delta = resource, scope, delta
        self._counters: list[Counter] = []
        self._histograms: list[Histogram] = []
        self._before_collect: list[Callable[[], None]] = []
        self._started_ns = time.time_ns()
        self._last_ns = self._started_ns

    def counter(self, name: str, unit: str, description: str, *, shared: bool = False) -> Counter:
        """``shared``: other threads than the recording thread add to it too."""
        kind = SharedCounter if shared else Counter
        counter = kind(name, unit, description, monotonic=True)
        self._counters.append(counter)
        return counter

    def up_down_counter(self, name: str, unit: str, description: str) -> Counter:
        counter = Counter(name, unit, description, monotonic=False)
        self._counters.append(counter)
        return counter

    def histogram(
        self, name: str, unit: str, description: str, bounds: Sequence[float]
    ) -> Histogram:
        histogram = Histogram(name, unit, description, bounds)
        self._histograms.append(histogram)
        return histogram

    def before_collect(self, settle: Callable[[], None]) -> None:
        """``settle`` is called first whenever the instruments are collected: a recorder that
        defers its measurements hands them over there."""
        self._before_collect.append(settle)

    def collect(self) -> MetricsData | None:
        """The current points (and, for delta, a fresh interval); None when there are none.
        On the recording thread (or once it has stopped recording)."""
        for settle in self._before_collect:
            settle()
        now = time.time_ns()
        metrics: list[Metric] = []
        for counter in self._counters:
            delta = self.delta and counter.monotonic
            start = self._last_ns if delta else self._started_ns
            with counter.lock or _UNSHARED:
                values = list(counter.values.items())
                if delta:
                    counter.values.clear()
            points = [NumberDataPoint(dict(key), start, now, value) for key, value in values]
            if points:
                temporality = (
                    AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
                )
                data = Sum(points, temporality, counter.monotonic)
                metrics.append(Metric(counter.name, counter.description, counter.unit, data))
        start = self._last_ns if self.delta else self._started_ns
        for histogram in self._histograms:
            histogram.settle()
            hpoints = [
                _histogram_point(key, point, histogram.bounds, start, now)
                for key, point in histogram.points.items()
            ]
            if self.delta:
                histogram.points.clear()
            else:
                for point in histogram.points.values():
                    point.exemplars.clear()  # exemplars belong to one interval
            if hpoints:
                temporality = (
                    AggregationTemporality.DELTA
                    if self.delta
                    else AggregationTemporality.CUMULATIVE
                )
                data = HistogramData(hpoints, temporality)
                metrics.append(Metric(histogram.name, histogram.description, histogram.unit, data))
        self._last_ns = now
        if not metrics:
            return None
        scope_metrics = ScopeMetrics(self.scope, metrics, "")
        return MetricsData([ResourceMetrics(self.resource, [scope_metrics], "")])


def _histogram_point(
    key: Key, point: _Point, bounds: list[float], start: int, now: int
) -> HistogramDataPoint:
    exemplars = [
        Exemplar({}, value, ts, span_id, trace_id)
        for value, ts, trace_id, span_id in point.exemplars.values()
    ]
    return HistogramDataPoint(
        dict(key), start, now, point.count, point.sum, list(point.buckets), bounds,
        point.min, point.max, exemplars,
    )  # fmt: skip


class PeriodicExport:
    """Exports a `MetricSet` on its own thread what the recording thread collects every
    ``interval`` seconds (`tick`)."""

    def __init__(
        self,
        metrics: MetricSet,
        exporter: Any,  # an SDK MetricExporter
        interval: float,
        on_failure: Callable[[], None],
    ) -> None:
        self.metrics, self.exporter, self.interval = metrics, exporter, interval
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._ready = threading.Event()  # `_data` waits for the export thread
        self._data: MetricsData | None = None
        self._export_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="helmet-metrics", daemon=True)
        self._thread.start()

    def tick(self) -> None:
        """On the recording thread, every ``interval``: collect, and hand it to the export
        thread. While the last collection still waits for it (a slow collector) nothing is
        collected: the measurements stay in the instruments until the next tick."""
        if self._ready.is_set() or self._stop.is_set():
            return
        data = self.metrics.collect()
        if data is not None:
            self._data = data
            self._ready.set()

    def _run(self) -> None:
        name_this_thread()
        while True:
            self._ready.wait()
            if self._stop.is_set():
                return
            with self._export_lock:
                data, self._data = self._data, None
                self._ready.clear()
                if data is not None:
                    self._send(data, self.interval)

    def _send(self, data: MetricsData, timeout_s: float) -> None:
        try:
            result = self.exporter.export(data, timeout_millis=max(timeout_s, 0.1) * 1000)
        except Exception:
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self._on_failure()

    def export(self, timeout_s: float) -> None:
        """What was collected and not yet exported, then everything recorded since: once the
        recording thread has stopped recording (the last export)."""
        with self._export_lock:
            data, self._data = self._data, None
            if data is not None:
                self._send(data, timeout_s)
            data = self.metrics.collect()
            if data is not None:
                self._send(data, timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        """A last export with what was recorded, then the exporter's shutdown."""
        self._stop.set()
        self._ready.set()  # the export thread ends
        self.export(timeout_s)
        try:
            self.exporter.shutdown(timeout_millis=max(timeout_s, 0.1) * 1000)
        except Exception:
            pass
