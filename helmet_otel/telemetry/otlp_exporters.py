"""The OTLP exporter of each signal: the SDK's, fed by `OtlpEncoder` through `sdk_adapter`.

Over OTLP/HTTP, spans and log records are posted by our `otlp_http.HttpSender` (one kept-alive
HTTP/1.1 connection, configured from the ``OTEL_EXPORTER_OTLP_*`` variables as the SDK
is), unless the configuration needs the SDK's transport (`otlp_http.http_settings` says why).
Metrics go through the SDK's exporter untouched (one request per interval). OTLP/gRPC comes with the ``grpc`` extra (``pip install 'helmet-otel[grpc]'``);
asked for without it, the worker says so once on stderr and exports over http/protobuf, the
OTLP default (to the SDK's http/protobuf endpoint: the given endpoint, or localhost:4318).
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

from helmet_otel.telemetry import otlp_http, sdk_adapter
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder

GRPC_MISSING = (
    "helmet-otel: OTLP over gRPC needs the grpc extra: pip install 'helmet-otel[grpc]'; "
    "using http/protobuf\n"
)
_said: set[str] = set()  # stderr lines already written by this process


def otlp_exporter(signal: str, protocol: str, encoder: OtlpEncoder) -> Any:
    """The exporter of one signal ("traces", "logs", "metrics") over one protocol."""
    if protocol == "grpc":
        grpc = _grpc_exporters()
        if grpc is not None:
            return grpc.exporter(signal, encoder)
    if signal == "traces":
        sender, reason = otlp_http.sender_for("traces", os.environ)
        return sdk_adapter.encoded_http(HttpSpans(), sdk_adapter.SPANS, encoder, sender, reason)
    if signal == "logs":
        sender, reason = otlp_http.sender_for("logs", os.environ)
        return sdk_adapter.encoded_http(HttpLogs(), sdk_adapter.LOGS, encoder, sender, reason)
    return HttpMetrics()


def _grpc_exporters() -> ModuleType | None:
    """`otlp_grpc`, imported only when asked for (grpc is slow to import); None without it."""
    try:
        from helmet_otel.telemetry import otlp_grpc
    except ImportError:
        if GRPC_MISSING not in _said:
            _said.add(GRPC_MISSING)
            sys.stderr.write(GRPC_MISSING)
            sys.stderr.flush()
        return None
    return otlp_grpc
