"""The SDK's OTLP/gRPC exporters (the ``grpc`` extra), fed by `OtlpEncoder` through
`sdk_adapter`. Imported only when OTLP/gRPC is asked for (see `otlp_exporters`)."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from helmet_otel.telemetry import sdk_adapter
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder


def exporter(signal: str, encoder: OtlpEncoder) -> Any:
    if signal == "traces":
        spans = OTLPSpanExporter()
        return sdk_adapter.encoded_grpc(
            spans, sdk_adapter.SPANS, encoder, ExportTraceServiceRequest
        )
    if signal == "logs":
        logs = OTLPLogExporter()
        return sdk_adapter.encoded_grpc(logs, sdk_adapter.LOGS, encoder, ExportLogsServiceRequest)
    return OTLPMetricExporter()
