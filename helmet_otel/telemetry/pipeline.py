"""The worker's sinks: OTLP (the SDK's exporters) and the local store.

Spans and log records are built by `Recorder` as plain data (``store.records``) and queued per sink
(`BatchQueue`), so a dead collector never holds up the store and the other way round. Metrics
are aggregated in `MetricSet` and exported by the SDK's OTLP metric exporter. What never reaches
a sink is counted in `DropCounter`, which feeds ``helmet.telemetry.dropped``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import Counter as CountMap
from collections.abc import Callable, Generator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from helmet_otel import __version__
from helmet_otel import semconv as sc
from helmet_otel.config import ProxyOptions, otlp_signals
from helmet_otel.redaction import scrub_line
from helmet_otel.store.records import Log, Span
from helmet_otel.telemetry.batching import BatchQueue, joint_export, settings
from helmet_otel.telemetry.frames import Config
from helmet_otel.telemetry.metrics import Counter, MetricSet, PeriodicExport, delta_preferred
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
from helmet_otel.telemetry.otlp_exporters import otlp_exporter

if TYPE_CHECKING:
    from helmet_otel.store import Store

# Records per store batch at most: at 2,000 calls/s the delay comes first (1,000 log records
# and as many spans per turn; 512 each before issue 15's third round, when 5 commits a second
# instead of 16 took 2.5 us per call off the store's thread). Not more: a full queue waits for
# the next turn to make room, and a turn of two 2,048-record batches on a starved worker took
# longer than that wait (`STORE_QUEUE_WAIT_S`) at 10,000 calls/s.
STORE_BATCH = 1024
# Seconds a record waits for its store turn at most. Each turn costs the store's thread about
# 2 ms whatever it writes (issue 15's eighth round: 0.2 -> 0.25 s took 1.06 us per call off it at
# 2,000 calls/s); `logs --follow` shows a record within 0.4 s all the same (`bench_follow.py`).
STORE_DELAY_S = 0.25
STORE_QUEUE_WAIT_S = 0.25  # how long a full store queue holds the worker before dropping
# At shutdown, a collector whose export failed, or has not answered for this long, is given up
# (what it did not take is counted): with the last metric export, a collector fault adds at
# most about a second to the proxy's exit.
REMOTE_STALL_S = 0.3
METRICS_LAST_EXPORT_S = 0.5  # the last metric export's time, at most (a healthy collector)


class DropCounter:
    """Thread-safe counts of telemetry that never reached a sink, by reason; every count also
    goes to the ``helmet.telemetry.dropped`` counter."""

    def __init__(self, metric: Counter) -> None:
        self._lock = threading.Lock()
        self._counts: CountMap[str] = CountMap()
        self._reported = False
        self._metric = metric
        # Exported from the start, so "nothing dropped" is a 0 on the dashboards, not "no data".
        for reason in ("relay_queue_full", "relay_busy"):
            metric.add(0, {sc.HELMET_TELEMETRY_REASON: reason})

    def add(self, reason: str, count: int = 1, *, quiet: bool = False) -> None:
        """Count ``count`` dropped records; ``quiet``: the sink already told the user what is
        wrong (the store does, once), so print nothing more."""
        if count <= 0:
            return
        self._metric.add(count, {sc.HELMET_TELEMETRY_REASON: reason})
        with self._lock:
            self._counts[reason] += count
            first = not self._reported and not quiet
            self._reported = self._reported or not quiet
        if first:
            sys.stderr.write(
                f"helmet-otel: telemetry records are being dropped ({reason}); MCP traffic is "
                "not affected; see helmet.telemetry.dropped\n"
            )
            sys.stderr.flush()

    def take(self) -> dict[str, int]:
        """The counts since the last call."""
        with self._lock:
            counts = dict(self._counts)
            self._counts.clear()
        return counts


def otlp_protocol(signal: str, options: ProxyOptions, env: Mapping[str, str]) -> str:
    return (
        options.otlp_protocol
        or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


@dataclass
class Pipeline:
    resource: Resource
    scope: InstrumentationScope
    sampler: Sampler
    metrics: MetricSet
    drops: DropCounter
    span_queues: list[BatchQueue[Span]] = field(default_factory=list[BatchQueue[Span]])
    log_queues: list[BatchQueue[Log]] = field(default_factory=list[BatchQueue[Log]])
    metric_export: PeriodicExport | None = None
    store: Store | None = None  # when the local store is on
    store_log_export: Callable[[Sequence[Log]], bool] | None = None
    sinks: list[str] = field(default_factory=list[str])
    exporters: list[Any] = field(default_factory=list[Any])  # span and log exporters

    def emit_span(self, span: Span) -> None:
        for queue in self.span_queues:
            queue.put(span)

    def emit_log(self, record: Log) -> None:
        for queue in self.log_queues:
            queue.put(record)

    def emit_spans(self, spans: Sequence[Span]) -> None:
        for queue in self.span_queues:
            queue.put_all(spans)

    def emit_logs(self, records: Sequence[Log]) -> None:
        for queue in self.log_queues:
            queue.put_all(records)

    def emit_urgent_span(self, span: Span) -> None:
        """A span of a call a policy decided on: never evicted by a full queue."""
        for queue in self.span_queues:
            queue.put_urgent(span)

    def emit_urgent_log(self, record: Log) -> None:
        """A finding, or a record of a call a policy decided on: never evicted."""
        for queue in self.log_queues:
            queue.put_urgent(record)

    @contextlib.contextmanager
    def only(self, *, local: bool) -> Generator[None]:
        """Records emitted inside go to the local sink (the store) or to the remote ones."""
        spans, logs = self.span_queues, self.log_queues
        self.span_queues = [q for q in spans if q.local == local]
        self.log_queues = [q for q in logs if q.local == local]
        try:
            yield
        finally:
            self.span_queues, self.log_queues = spans, logs

    def drain_remote(self, deadline: float) -> bool:
        """Export what the collectors' queues hold, all at once, until ``deadline`` or, for a
        collector that fails or hangs, `REMOTE_STALL_S`: a broken collector must not hold up
        the proxy's exit. What is left is counted (``shutdown_timeout``). True when every
        collector took everything."""
        remote = [q for q in [*self.span_queues, *self.log_queues] if not q.local]
        for queue in remote:
            queue.close()
        healthy = True
        for queue in remote:
            left = queue.drain(deadline, REMOTE_STALL_S)
            self.drops.add("shutdown_timeout", left)
            healthy = healthy and not left and not queue.failed
        for exporter in self.exporters:
            _bounded(exporter.shutdown, 0.05)  # (gRPC's waits for an export in flight)
        return healthy

    def drain_local(self, deadline: float, finish_s: float = 0.0) -> None:
        """Write what the store's queues hold until ``deadline``, and the write in progress
        then for at most ``finish_s`` more; count what is left."""
        local = [q for q in [*self.span_queues, *self.log_queues] if q.local]
        for queue in local:
            queue.close()  # (all of them first: they share one export thread)
        for queue in local:
            self.drops.add("shutdown_timeout", queue.drain(deadline, finish_s=finish_s))

    @contextlib.contextmanager
    def straight_to_store(self) -> Generator[None]:
        """Log records emitted inside are written to the store at once, past its drained
        queues (the proxy's last record must not wait behind a backlog); then it closes."""
        spans, logs = self.span_queues, self.log_queues
        export = self.store_log_export
        self.span_queues = []
        self.log_queues = [] if export is None else [_Immediate(export, self.drops)]  # pyright: ignore[reportAttributeAccessIssue]  # (it has the put a queue has)
        try:
            yield
        finally:
            self.span_queues, self.log_queues = spans, logs
            if self.store is not None:
                self.store.close()

    def tick_metrics(self) -> None:
        """Every metrics interval, on the recording thread: what was measured goes to the
        metric export (see `metrics`' threading contract)."""
        if self.metric_export is not None:
            self.metric_export.tick()

    def shutdown_metrics(self, timeout_s: float, healthy: bool = True) -> None:
        """The last metric export (with the complete drop counts), within ``timeout_s``; a
        collector that just failed gets a moment, not more. A thread that an unanswering
        collector holds is left behind."""
        export = self.metric_export
        if export is None:
            return
        budget = METRICS_LAST_EXPORT_S if healthy else REMOTE_STALL_S / 2
        budget = max(min(timeout_s, budget), 0.05)
        _bounded(lambda: export.shutdown(budget), budget)

    def flush_and_shutdown(self, timeout_s: float) -> None:
        """Export what is queued within ``timeout_s``; count what is left; metrics last, so the
        final ``helmet.telemetry.dropped`` includes what the deadline cut off."""
        start = time.monotonic()
        deadline = start + timeout_s * 0.8
        self.drain_remote(deadline)
        self.drain_local(deadline, timeout_s * 0.1)
        if self.store is not None:
            self.store.close()
        self.shutdown_metrics(max(start + timeout_s - time.monotonic(), REMOTE_STALL_S))


class _Immediate:
    """A stand-in for a log queue that exports each record as it comes (`straight_to_store`)."""

    local = True

    def __init__(self, export: Callable[[Sequence[Log]], bool], drops: DropCounter):
        self._export = export
        self._drops = drops

    def put(self, record: Log) -> None:
        try:
            written = self._export([record])
        except Exception:
            written = False
        if not written:
            self._drops.add("store_logs_export_failed", 1, quiet=True)

    def put_all(self, records: Sequence[Log]) -> None:
        for record in records:
            self.put(record)


def _bounded(call: Callable[[], object], timeout_s: float) -> None:
    """``call()`` on a daemon thread, waited for at most ``timeout_s``; a failure is ignored."""

    def run() -> None:
        with contextlib.suppress(Exception):
            call()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)


def _weight_of(attributes: Mapping[str, Any] | None) -> int:
    weight = attributes.get(sc.HELMET_SAMPLE_WEIGHT, 1) if attributes else 1
    return weight if type(weight) is int and weight > 0 else 1


def _span_weight(span: Span) -> int:
    return _weight_of(span.attributes)


def _log_weight(record: Log) -> int:
    return _weight_of(record.attributes)


def _span_export(exporter: Any) -> Any:
    def export(batch: Sequence[Span]) -> bool:
        return exporter.export(batch) is SpanExportResult.SUCCESS

    return export


def _log_export(exporter: Any) -> Any:
    def export(batch: Sequence[Log]) -> bool:
        return exporter.export(batch) is LogRecordExportResult.SUCCESS

    return export


def _unused_export(batch: Sequence[object]) -> bool:  # (a queue of `joint_export`)
    raise AssertionError("exported by its joint export thread")


class _ScrubbedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub_line(super().format(record))


def build_pipeline(config: Config, env: MutableMapping[str, str]) -> Pipeline:
    """Sinks for every configured destination. Mutates ``env`` (our own os.environ) so the SDK's
    exporters see ``--otlp-endpoint``; OTEL_SDK_DISABLED turns off OTLP, never the store."""
    options = config.options
    endpoint = options.otlp_endpoint
    signals = otlp_signals(env, endpoint)
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env.pop("OTEL_SDK_DISABLED", None)
    sdk_logger = logging.getLogger("opentelemetry")
    sdk_logger.propagate = False  # exporter retries must not spam the MCP client's stderr log
    sdk_logger.setLevel(logging.ERROR)
    # Its lines can quote an endpoint or a payload: they pass the scrubber like any sink's.
    for old in [h for h in sdk_logger.handlers if isinstance(h.formatter, _ScrubbedFormatter)]:
        sdk_logger.removeHandler(old)  # a pipeline built before in this process
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ScrubbedFormatter("helmet-otel: %(name)s: %(message)s"))
    sdk_logger.addHandler(handler)
    if options.log_level in ("debug", "info"):  # --log-level: show the SDK's own logs
        sdk_logger.setLevel(logging.DEBUG if options.log_level == "debug" else logging.INFO)

    attributes: dict[str, Any] = {
        sc.SERVICE_NAME: config.service_name,
        sc.HELMET_TRANSPORT: config.transport,
        "telemetry.distro.name": "helmet-otel",
        "telemetry.distro.version": __version__,
    }
    resource = Resource.create(attributes)
    if env.get("OTEL_SERVICE_NAME") and not options.name:
        resource = resource.merge(Resource({sc.SERVICE_NAME: env["OTEL_SERVICE_NAME"]}))
    scope = InstrumentationScope(sc.SCOPE_NAME, __version__)
    # The SDK reads OTEL_TRACES_SAMPLER(_ARG); we only borrow its sampler.
    sampler = TracerProvider(resource=resource, shutdown_on_exit=False).sampler
    metrics = MetricSet(resource, scope, delta=delta_preferred(env))
    dropped = metrics.counter(
        sc.METRIC_TELEMETRY_DROPPED, "{record}",
        "Telemetry records that could not be recorded or exported", shared=True,
    )  # fmt: skip
    drops = DropCounter(dropped)
    pipeline = Pipeline(resource, scope, sampler, metrics, drops)
    encoder = OtlpEncoder()  # shared: one attribute cache for spans and log records
    span_settings = settings(env, "OTEL_BSP", delay_s=1.0)
    log_settings = settings(env, "OTEL_BLRP", delay_s=1.0)
    for signal in sorted(signals):
        protocol = otlp_protocol(signal, options, env)
        if protocol not in ("grpc", "http/protobuf"):
            sys.stderr.write(
                f"helmet-otel: OTLP protocol {protocol!r} is not supported; using http/protobuf\n"
            )
            protocol = "http/protobuf"
        exporter = otlp_exporter(signal, protocol, encoder)
        pipeline.sinks.append(f"otlp-{signal}({protocol})")
        if signal == "traces":
            pipeline.exporters.append(exporter)
            pipeline.span_queues.append(
                BatchQueue(
                    "otlp_spans",
                    _span_export(exporter),
                    drops.add,
                    span_settings,
                    weight=_span_weight,
                )
            )
        elif signal == "logs":
            pipeline.exporters.append(exporter)
            pipeline.log_queues.append(
                BatchQueue(
                    "otlp_logs",
                    _log_export(exporter),
                    drops.add,
                    log_settings,
                    weight=_log_weight,
                )
            )
        else:  # the periodic export shuts its exporter down
            pipeline.metric_export = PeriodicExport(
                metrics,
                exporter,
                options.metrics_interval,
                lambda: drops.add("otlp_metrics_export_failed"),
            )
    if options.store_enabled:
        from helmet_otel.store import Store, StoreExporter, StoreLogExporter

        # never raises: a bad store degrades, once
        # through apsw: this worker process opens no other connection to the store (the rule
        # of store/engine.py), and the writer's SQLite work per call is a quarter cheaper
        store = Store.open(
            options.store,
            max_bytes=options.store_max_bytes,
            max_age_s=options.store_max_age,
            engine="apsw",
        )
        pipeline.store = store
        pipeline.sinks.append(f"store({store.path})")
        # the OTel queue bounds, but every STORE_DELAY_S (`logs --follow` shows records soon)
        # or at STORE_BATCH records: fewer, larger transactions (a commit costs per batch)
        span_store = replace(
            span_settings, delay_s=STORE_DELAY_S,
            batch_size=min(STORE_BATCH, span_settings.max_queue),
        )  # fmt: skip
        log_store = replace(
            log_settings, delay_s=STORE_DELAY_S,
            batch_size=min(STORE_BATCH, log_settings.max_queue),
        )  # fmt: skip

        def store_drop(reason: str, count: int) -> None:  # the store reports its own failures
            drops.add(reason, count, quiet=reason.endswith("_export_failed"))

        pipeline.store_log_export = _log_export(StoreLogExporter(store))
        # The store always answers (a locked or broken store fails fast and counts): a full
        # queue may wait for it a little, which yields the worker's time to the writer.
        log_queue = BatchQueue[Log](
            "store_logs",
            _unused_export,
            store_drop,
            log_store,
            wait_s=STORE_QUEUE_WAIT_S,
            weight=_log_weight,
            start=False,
        )
        span_queue = BatchQueue[Span](
            "store_spans",
            _unused_export,
            store_drop,
            span_store,
            wait_s=STORE_QUEUE_WAIT_S,
            weight=_span_weight,
            start=False,
        )
        # One thread and one transaction for both: a batch of log records and the spans queued
        # meanwhile share a wake-up and a commit.
        store_export = StoreExporter(store).export
        joint_export("store", [log_queue, span_queue], lambda both: store_export(*both))
        pipeline.span_queues.append(span_queue)
        pipeline.log_queues.append(log_queue)
    return pipeline
