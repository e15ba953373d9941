"""OpenTelemetry SDK providers for the worker process: OTLP and the local store as sinks.

Every sink gets its own batch processor, so a dead collector never holds up the store and the
other way round. Drops are counted: the SDK's "queue full" warnings and failed exports both end
up in `DropCounter`, which feeds ``helmet.telemetry.dropped``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from helmet_otel import __version__
from helmet_otel.config import otlp_signals
from helmet_otel.telemetry import semconv as sc


class DropCounter:
    """Thread-safe counts of telemetry that never reached a sink, by reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._reported = False

    def add(self, reason: str, count: int = 1) -> None:
        if count <= 0:
            return
        with self._lock:
            self._counts[reason] += count
            first = not self._reported
            self._reported = True
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


class _QueueFullHandler(logging.Handler):
    """The SDK reports a full batch queue only as a log line; turn it into a count."""

    def __init__(self, drops: DropCounter) -> None:
        super().__init__(logging.WARNING)
        self.drops = drops

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Queue full"):
            self.drops.add("export_queue_full")


class _CountingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, drops: DropCounter, sink: str) -> None:
        self.inner, self.drops, self.sink = inner, drops, sink

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.drops.add(f"{self.sink}_export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, drops: DropCounter, sink: str) -> None:
        self.inner, self.drops, self.sink = inner, drops, sink

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self.inner.export(batch)
        except Exception:
            result = LogRecordExportResult.FAILURE
        if result is not LogRecordExportResult.SUCCESS:
            self.drops.add(f"{self.sink}_export_failed", len(batch))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class PresetIdGenerator(IdGenerator):
    """Hands out ids the relay chose (it needs them for ``traceparent``); random otherwise."""

    def __init__(self) -> None:
        self.next_trace_id = 0
        self.next_span_id = 0
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        value, self.next_span_id = self.next_span_id, 0
        return value or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        value, self.next_trace_id = self.next_trace_id, 0
        return value or self._random.generate_trace_id()


def otlp_protocol(signal: str, config: Mapping[str, Any], env: Mapping[str, str]) -> str:
    return str(
        config.get("otlp_protocol")
        or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _exporter(signal: str, protocol: str) -> Any:
    if protocol == "grpc":
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        if signal == "logs":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

            return OTLPLogExporter()
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        return OTLPLogExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


@dataclass
class Pipeline:
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    meter_provider: MeterProvider
    ids: PresetIdGenerator
    drops: DropCounter
    store: Any = None  # helmet_otel.store.Store when the local store is on
    sinks: list[str] = field(default_factory=list[str])

    def flush_and_shutdown(self, timeout_s: float) -> None:
        millis = max(int(timeout_s * 1000), 1)
        self.meter_provider.force_flush(millis)  # small and carries the drop counts: first
        self.tracer_provider.force_flush(millis)
        self.logger_provider.force_flush(millis)
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()
        if self.store is not None:
            self.store.close()


def build_pipeline(config: Mapping[str, Any], env: MutableMapping[str, str]) -> Pipeline:
    """Providers for every configured sink. Mutates ``env`` (our own os.environ) so the SDK's
    exporters see ``--otlp-endpoint``; OTEL_SDK_DISABLED turns off OTLP, never the store."""
    endpoint = config.get("otlp_endpoint")
    signals = otlp_signals(env, endpoint)
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = str(endpoint)
    env.pop("OTEL_SDK_DISABLED", None)  # the providers must stay live for the store
    drops = DropCounter()
    sdk_logger = logging.getLogger("opentelemetry")
    sdk_logger.addHandler(_QueueFullHandler(drops))
    sdk_logger.propagate = False  # exporter retries must not spam the MCP client's stderr log
    sdk_logger.setLevel(logging.WARNING)
    if config.get("log_level") in ("debug", "info"):  # --log-level: show the SDK's own logs
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("helmet-otel: %(name)s: %(message)s"))
        sdk_logger.addHandler(handler)
        sdk_logger.setLevel(logging.DEBUG if config["log_level"] == "debug" else logging.INFO)

    attributes: dict[str, Any] = {
        sc.SERVICE_NAME: config["service_name"],
        sc.HELMET_TRANSPORT: config.get("transport", "stdio"),
        "telemetry.distro.name": "helmet-otel",
        "telemetry.distro.version": __version__,
    }
    resource = Resource.create(attributes)
    if env.get("OTEL_SERVICE_NAME") and not config.get("name"):
        resource = resource.merge(Resource({sc.SERVICE_NAME: env["OTEL_SERVICE_NAME"]}))
    ids = PresetIdGenerator()
    tracer_provider = TracerProvider(resource=resource, id_generator=ids)
    logger_provider = LoggerProvider(resource=resource)
    readers: list[MetricReader] = []
    sinks: list[str] = []
    for signal in sorted(signals):
        protocol = otlp_protocol(signal, config, env)
        if protocol not in ("grpc", "http/protobuf"):
            sys.stderr.write(
                f"helmet-otel: OTLP protocol {protocol!r} is not supported; using http/protobuf\n"
            )
            protocol = "http/protobuf"
        exporter = _exporter(signal, protocol)
        sinks.append(f"otlp-{signal}({protocol})")
        if signal == "traces":
            tracer_provider.add_span_processor(
                BatchSpanProcessor(_CountingSpanExporter(exporter, drops, "otlp"))
            )
        elif signal == "logs":
            logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(_CountingLogExporter(exporter, drops, "otlp"))
            )
        else:
            interval = float(config.get("metrics_interval") or 60.0)
            readers.append(
                PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000)
            )
    store = None
    if not config.get("no_store"):
        from helmet_otel.store import Store, StoreLogExporter, StoreSpanExporter

        store = Store.open(config.get("store"))  # never raises: a bad store degrades, once
        sinks.append(f"store({store.path})")
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                _CountingSpanExporter(StoreSpanExporter(store), drops, "store"),
                schedule_delay_millis=200,
            )
        )
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                _CountingLogExporter(StoreLogExporter(store), drops, "store"),
                schedule_delay_millis=200,
            )
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Pipeline(tracer_provider, logger_provider, meter_provider, ids, drops, store, sinks)
