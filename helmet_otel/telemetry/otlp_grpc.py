"""The SDK's OTLP/gRPC exporters, fed by `OtlpEncoder` (see `otlp_exporters`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan

from helmet_otel.telemetry.otlp_encoding import OtlpEncoder


class _Spans(OTLPSpanExporter):
    def __init__(self, encoder: OtlpEncoder) -> None:
        super().__init__()
        self._encoder = encoder

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(self._encoder.spans(data))


class _Logs(OTLPLogExporter):
    def __init__(self, encoder: OtlpEncoder) -> None:
        super().__init__()
        self._encoder = encoder

    def _translate_data(self, data: Sequence[ReadableLogRecord]) -> ExportLogsServiceRequest:
        return ExportLogsServiceRequest.FromString(self._encoder.logs(data))


def exporter(signal: str, encoder: OtlpEncoder) -> Any:
    if signal == "traces":
        return _Spans(encoder)
    if signal == "logs":
        return _Logs(encoder)
    return OTLPMetricExporter()
