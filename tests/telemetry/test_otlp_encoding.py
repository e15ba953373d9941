"""Our OTLP encoder against the SDK's: the same records must parse to the same messages."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from helmet_otel.telemetry.otlp_encoding import OtlpEncoder

RESOURCE = Resource({"service.name": "demo", "helmet.transport": "stdio", "n": 3})
SCOPE = InstrumentationScope("helmet-otel", "1.2.3")
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
ROOT = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, SAMPLED)
REMOTE = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, SAMPLED)
ODD_VALUES: dict[str, Any] = {
    "s": "héllo ✓", "empty": "", "i": -42, "big": 2**62, "f": 1.5, "t": True, "no": False,
    "list": ["a", "b"], "ints": [1, -2, 3], "long": "x" * 1000,
}  # fmt: skip


def _span(span_id: int, **overrides: Any) -> ReadableSpan:
    fields: dict[str, Any] = dict(
        name="tools/call echo", context=SpanContext(ROOT.trace_id, span_id, False, SAMPLED),
        parent=ROOT, resource=RESOURCE, attributes={"mcp.method.name": "tools/call", **ODD_VALUES},
        kind=SpanKind.SERVER, status=Status(StatusCode.UNSET), start_time=1_700_000_000_000_000_001,
        end_time=1_700_000_000_000_900_000, instrumentation_scope=SCOPE,
    )  # fmt: skip
    fields.update(overrides)
    return ReadableSpan(**fields)


SPANS = [
    _span(1),
    _span(2, kind=SpanKind.CLIENT, status=Status(StatusCode.ERROR, "tool returned isError")),
    _span(3, parent=None, kind=SpanKind.INTERNAL, name="session",
          links=[Link(REMOTE, {"helmet.link": "client_traceparent"}), Link(ROOT)]),
    _span(4, parent=REMOTE, events=[Event("cancelled", {"reason": "user"}, 5)],
          context=SpanContext(ROOT.trace_id, 4, False, SAMPLED, TraceState([("k", "v")]))),
    _span(5, attributes={}, status=Status(StatusCode.OK)),
]  # fmt: skip


def _log(body: Any, **overrides: Any) -> ReadableLogRecord:
    fields: dict[str, Any] = dict(
        timestamp=1_700_000_000_000_000_123, observed_timestamp=1_700_000_000_000_000_456,
        context=set_span_in_context(NonRecordingSpan(ROOT)), severity_number=SeverityNumber.INFO,
        severity_text="INFO", body=body, attributes={"helmet.direction": "client->server",
                                                     **ODD_VALUES},
        event_name="helmet.request",
    )  # fmt: skip
    fields.update(overrides)
    return ReadableLogRecord(LogRecord(**fields), RESOURCE, SCOPE)


LOGS = [
    _log({"name": "echo", "arguments": {"text": "hi", "n": None, "deep": [{"a": [1.25]}]}}),
    _log("a stderr line", severity_number=SeverityNumber.WARN, severity_text="WARN"),
    _log(None, attributes={}, event_name=None, severity_text=None),
    _log(b"\x00\xff", context=set_span_in_context(NonRecordingSpan(
        SpanContext(ROOT.trace_id, 9, False, TraceFlags(TraceFlags.DEFAULT))))),
    _log([1, "two", 3.0, True, None, {"k": []}], timestamp=None),
]  # fmt: skip


def test_spans_parse_to_the_sdk_encoders_messages() -> None:
    ours = ExportTraceServiceRequest.FromString(OtlpEncoder().spans(SPANS))
    assert ours == encode_spans(SPANS)


def test_log_records_parse_to_the_sdk_encoders_messages() -> None:
    ours = ExportLogsServiceRequest.FromString(OtlpEncoder().logs(LOGS))
    assert ours == encode_logs(LOGS)


def test_the_attribute_cache_never_changes_the_output() -> None:
    encoder = OtlpEncoder()
    first = encoder.spans(SPANS)
    assert encoder.spans(SPANS) == first  # served from the cache the second time
    assert encoder.logs(LOGS) == OtlpEncoder().logs(LOGS)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_beyond_int64_become_strings_instead_of_failing_the_batch(value: int) -> None:
    decoded = ExportLogsServiceRequest.FromString(OtlpEncoder().logs([_log({"n": value})]))
    body = decoded.resource_logs[0].scope_logs[0].log_records[0].body
    assert body.kvlist_value.values[0].value.string_value == str(value)
