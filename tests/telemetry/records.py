"""Span and log records as the worker's recorder makes them (``helmet_otel.store.records``),
for the encoding and export tests: every field the encoder writes, odd values, and integers
beyond int64."""

from __future__ import annotations

from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from helmet_otel.store.records import Event, Link, Log, Origin, Span

RESOURCE = Resource({"service.name": "demo", "helmet.transport": "stdio", "n": 3})
SCOPE = InstrumentationScope("helmet-otel", "1.2.3")
ORIGIN = Origin(RESOURCE, SCOPE, "demo")
SAMPLED = 1
TRACE, ROOT = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
REMOTE_TRACE, REMOTE = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
UNSET, OK, ERROR = 0, 1, 2
ODD_VALUES: dict[str, Any] = {
    "s": "héllo ✓", "empty": "", "i": -42, "big": 2**62, "f": 1.5, "t": True, "no": False,
    "list": ["a", "b"], "ints": [1, -2, 3], "long": "x" * 1000,
}  # fmt: skip


def span(span_id: int, **overrides: Any) -> Span:
    fields: dict[str, Any] = dict(
        name="tools/call echo", trace_id=TRACE, span_id=span_id, flags=SAMPLED, parent=ROOT,
        kind=SpanKind.SERVER.value, start=1_700_000_000_000_000_001,
        attributes={"mcp.method.name": "tools/call", **ODD_VALUES}, origin=ORIGIN,
        end=1_700_000_000_000_900_000,
    )  # fmt: skip
    fields.update(overrides)
    return Span(**fields)


SPANS = [
    span(1),
    span(2, kind=SpanKind.CLIENT.value, status=ERROR, description="tool returned isError"),
    span(3, parent=0, kind=SpanKind.INTERNAL.value, name="session",
         links=[Link(REMOTE_TRACE, REMOTE, True, {"helmet.link": "client_traceparent"}),
                Link(TRACE, ROOT, False, None)]),
    span(4, parent=REMOTE, parent_remote=True, events=[Event("cancelled", 5, {"reason": "user"})],
         trace_state="k=v"),
    span(5, attributes={}, status=OK),
]  # fmt: skip


def log(body: Any, **overrides: Any) -> Log:
    fields: dict[str, Any] = dict(
        ts=1_700_000_000_000_000_123, observed=1_700_000_000_000_000_456, trace_id=TRACE,
        span_id=ROOT, flags=SAMPLED, severity=SeverityNumber.INFO.value, severity_text="INFO",
        event="helmet.request", body=body,
        attributes={"helmet.direction": "client->server", **ODD_VALUES}, origin=ORIGIN,
    )  # fmt: skip
    fields.update(overrides)
    return Log(**fields)


LOGS = [
    log({"name": "echo", "arguments": {"text": "hi", "n": None, "deep": [{"a": [1.25]}]}}),
    log("a stderr line", severity=SeverityNumber.WARN.value, severity_text="WARN"),
    log(None, attributes={}, event=None, severity_text=None),
    log(b"\x00\xff", span_id=9, flags=0),
    log([1, "two", 3.0, True, None, {"k": []}], ts=0),
    log("in no trace", trace_id=0, span_id=0, flags=0, severity=0, severity_text=None),
]  # fmt: skip


# Integers OTLP's int64 cannot hold: OtlpEncoder writes them as strings; the SDK's encoder drops
# such an attribute, and fails a whole log batch on such a body.
HUGE = {"u64": 2**64 - 1, "below": -(2**63) - 1, "in_list": [1, 2**63], "fits": 2**63 - 1}
HUGE_AS_SENT = {"u64": str(2**64 - 1), "below": str(-(2**63) - 1), "in_list": [1, str(2**63)],
                "fits": 2**63 - 1}  # fmt: skip
HUGE_SPANS = [
    span(11, attributes={"mcp.method.name": "tools/call", **HUGE}),
    span(12, events=[Event("cancelled", 5, HUGE)], links=[Link(REMOTE_TRACE, REMOTE, True, HUGE)]),
    span(13),
]
HUGE_LOGS = [
    log({"name": "echo", "arguments": HUGE}),
    log("fine", attributes=HUGE),
    log(None),
]
