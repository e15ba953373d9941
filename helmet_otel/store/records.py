"""The telemetry worker's spans and log records as plain data: exactly what the store's rows and
the OTLP encoding take from them, built once per message and read by both.

The SDK's readable types (`ReadableSpan`, `ReadableLogRecord`) wrap the same facts in context,
status, link and event objects that each sink then walks again; these are the facts
themselves: ids as ints, times in ns since the epoch, kinds and status codes as their OTLP
numbers. ``helmet_otel.telemetry.sdk_adapter`` turns them into the SDK's types where the SDK
must see its own (the OTLP exporters' fallback). The store's exporters take both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["KIND_NAMES", "STATUS_NAMES", "AttributeHead", "Event", "Link", "Log", "Origin", "Span"]

# by `Span.kind` (OTel's SpanKind values) and `Span.status` (OTLP's status codes)
KIND_NAMES = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_NAMES = ("UNSET", "OK", "ERROR")


class Origin(NamedTuple):
    """Who recorded: one per worker process, shared by its records."""

    resource: Resource
    scope: InstrumentationScope | None
    service: str | None  # the resource's service.name


class AttributeHead:
    """Attributes that lead the attribute maps of many records: what every call of one kind in
    a session shares (its method and tool, the message's direction and kind, the session id...).

    A record that names a head (`Log.head`, `Span.head`) has ``attributes`` beginning with
    exactly these items, in this order, followed by its own (the request id, the size...); so
    a sink may encode the head once and only the rest per record (`OtlpEncoder` does). The
    record's ``attributes`` stay complete: a sink that does not care reads them alone. Neither
    the head nor its attributes change once made, and a record whose leading attributes
    change (a span's outcome overwriting one) drops its head."""

    __slots__ = ("attributes", "encoded", "size")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.size = len(attributes)
        self.encoded: dict[int, bytes] = {}  # an encoder's, by its field tag: encoded once


class Log(NamedTuple):
    """A log record."""

    ts: int  # 0: none
    observed: int
    trace_id: int  # 0: in no trace
    span_id: int
    flags: int  # W3C trace flags
    severity: int  # a SeverityNumber value; 0: unspecified
    severity_text: str | None
    event: str | None
    body: Any
    attributes: dict[str, Any]
    origin: Origin
    body_json: str | None = None  # `body` as compact JSON, when the recorder has it already
    head: AttributeHead | None = None  # what ``attributes`` begin with, shared with others


class Event(NamedTuple):
    name: str
    ts: int
    attributes: dict[str, Any]


class Link(NamedTuple):
    trace_id: int
    span_id: int
    remote: bool
    attributes: dict[str, Any] | None


def _no_links() -> list[Link]:  # plain functions: calling list[Link] is slow
    return []


def _no_events() -> list[Event]:
    return []


@dataclass(slots=True)
class Span:
    """A span: a draft while its operation is open (the recorder adds to it), then ended."""

    name: str
    trace_id: int
    span_id: int
    flags: int  # W3C trace flags
    parent: int  # the parent's span id; 0: a root
    kind: int  # a SpanKind value
    start: int
    attributes: dict[str, Any]
    origin: Origin
    links: list[Link] = field(default_factory=_no_links)
    events: list[Event] = field(default_factory=_no_events)
    end: int = 0
    status: int = 0  # 0 unset, 1 ok, 2 error
    description: str | None = None  # of an error status
    parent_remote: bool = False
    trace_state: str = ""  # W3C tracestate header
    head: AttributeHead | None = None  # what ``attributes`` begin with, shared with others
