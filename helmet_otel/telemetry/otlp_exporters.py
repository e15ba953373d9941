"""The SDK's OTLP exporters, fed by `OtlpEncoder` instead of the SDK's encoders.

Everything else stays the SDK's: endpoints, headers, compression, TLS, timeouts and retries
from the ``OTEL_EXPORTER_OTLP_*`` variables. Over HTTP the encoded bytes go to the exporter's
HTTP client; over gRPC they are parsed (in C) into the request message the stub sends. Should
a future SDK rename what these subclasses rely on, they fall back to the SDK's own encoding:
slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from helmet_otel.telemetry.otlp_encoding import OtlpEncoder

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # larger batches go in halves (collectors cap bodies)


def _send(client: Any, data: bytes) -> bool | None:
    """Post over the HTTP exporter's client; None when there is no such client to use."""
    export = getattr(client, "export", None)
    if export is None:
        return None
    return bool(export(data).success)


def _export_halves(items: Sequence[Any], encode: Any, client: Any) -> bool | None:
    data = encode(items)
    if len(data) > MAX_REQUEST_BYTES and len(items) > 1:
        half = len(items) // 2
        first = _export_halves(items[:half], encode, client)
        second = _export_halves(items[half:], encode, client)
        return None if first is None or second is None else first and second
    return _send(client, data)


class _HttpSpans(HttpSpans):
    def __init__(self, encoder: OtlpEncoder) -> None:
        super().__init__()
        self._encoder = encoder

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        sent = _export_halves(spans, self._encoder.spans, getattr(self, "_client", None))
        if sent is None:
            return super().export(spans)
        return SpanExportResult.SUCCESS if sent else SpanExportResult.FAILURE


class _HttpLogs(HttpLogs):
    def __init__(self, encoder: OtlpEncoder) -> None:
        super().__init__()
        self._encoder = encoder

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._shutdown:
            return LogRecordExportResult.FAILURE
        sent = _export_halves(batch, self._encoder.logs, getattr(self, "_client", None))
        if sent is None:
            return super().export(batch)
        return LogRecordExportResult.SUCCESS if sent else LogRecordExportResult.FAILURE


def otlp_exporter(signal: str, protocol: str, encoder: OtlpEncoder) -> Any:
    """The exporter of one signal ("traces", "logs", "metrics") over one protocol."""
    if protocol == "grpc":  # imported only when asked for: grpc is slow to import
        from helmet_otel.telemetry import otlp_grpc

        return otlp_grpc.exporter(signal, encoder)
    if signal == "traces":
        return _HttpSpans(encoder)
    if signal == "logs":
        return _HttpLogs(encoder)
    return HttpMetrics()
