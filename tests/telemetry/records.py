"""Span and log records as the worker's recorder makes them, for the encoding and export tests:
every field the encoder writes, odd values, and integers beyond int64."""

from __future__ import annotations

from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
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

RESOURCE = Resource({"service.name": "demo", "helmet.transport": "stdio", "n": 3})
SCOPE = InstrumentationScope("helmet-otel", "1.2.3")
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
ROOT = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, SAMPLED)
REMOTE = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, SAMPLED)
ODD_VALUES: dict[str, Any] = {
    "s": "héllo ✓", "empty": "", "i": -42, "big": 2**62, "f": 1.5, "t": True, "no": False,
    "list": ["a", "b"], "ints": [1, -2, 3], "long": "x" * 1000,
}  # fmt: skip


def span(span_id: int, **overrides: Any) -> ReadableSpan:
    fields: dict[str, Any] = dict(
        name="tools/call echo", context=SpanContext(ROOT.trace_id, span_id, False, SAMPLED),
        parent=ROOT, resource=RESOURCE, attributes={"mcp.method.name": "tools/call", **ODD_VALUES},
        kind=SpanKind.SERVER, status=Status(StatusCode.UNSET), start_time=1_700_000_000_000_000_001,
        end_time=1_700_000_000_000_900_000, instrumentation_scope=SCOPE,
    )  # fmt: skip
    fields.update(overrides)
    return ReadableSpan(**fields)


SPANS = [
    span(1),
    span(2, kind=SpanKind.CLIENT, status=Status(StatusCode.ERROR, "tool returned isError")),
    span(3, parent=None, kind=SpanKind.INTERNAL, name="session",
          links=[Link(REMOTE, {"helmet.link": "client_traceparent"}), Link(ROOT)]),
    span(4, parent=REMOTE, events=[Event("cancelled", {"reason": "user"}, 5)],
          context=SpanContext(ROOT.trace_id, 4, False, SAMPLED, TraceState([("k", "v")]))),
    span(5, attributes={}, status=Status(StatusCode.OK)),
]  # fmt: skip


def log(body: Any, **overrides: Any) -> ReadableLogRecord:
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
    log({"name": "echo", "arguments": {"text": "hi", "n": None, "deep": [{"a": [1.25]}]}}),
    log("a stderr line", severity_number=SeverityNumber.WARN, severity_text="WARN"),
    log(None, attributes={}, event_name=None, severity_text=None),
    log(b"\x00\xff", context=set_span_in_context(NonRecordingSpan(
        SpanContext(ROOT.trace_id, 9, False, TraceFlags(TraceFlags.DEFAULT))))),
    log([1, "two", 3.0, True, None, {"k": []}], timestamp=None),
]  # fmt: skip


# Integers OTLP's int64 cannot hold: OtlpEncoder writes them as strings; the SDK's encoder drops
# such an attribute, and fails a whole log batch on such a body.
HUGE = {"u64": 2**64 - 1, "below": -(2**63) - 1, "in_list": [1, 2**63], "fits": 2**63 - 1}
HUGE_AS_SENT = {"u64": str(2**64 - 1), "below": str(-(2**63) - 1), "in_list": [1, str(2**63)],
                "fits": 2**63 - 1}  # fmt: skip
HUGE_SPANS = [
    span(11, attributes={"mcp.method.name": "tools/call", **HUGE}),
    span(12, events=[Event("cancelled", HUGE, 5)], links=[Link(REMOTE, HUGE)]),
    span(13),
]
HUGE_LOGS = [
    log({"name": "echo", "arguments": HUGE}),
    log("fine", attributes=HUGE),
    log(None),
]
