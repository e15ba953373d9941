"""Spans as the worker builds them: a `SpanDraft` while in progress, a `ReadableSpan` when ended.

The relay measured the times and chose the ids, so there is no live span to keep: a draft is
plain data until its end, when `SpanWriter` hands the finished span to the pipeline (unless its
trace segment was not sampled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from helmet_otel import semconv as sc
from helmet_otel.telemetry.pipeline import Pipeline

_UNSET = Status(StatusCode.UNSET)
_TRACE_CONTEXT = TraceContextTextMapPropagator()
_CLIENT_LINK = {"helmet.link": "client_traceparent"}
_PREVIOUS_SEGMENT = {"helmet.link": "previous_segment"}
# what an ending span takes over from its operation's outcome
_OUTCOME_KEYS = (sc.ERROR_TYPE, sc.RPC_RESPONSE_STATUS_CODE, sc.MCP_PROTOCOL_VERSION)
_POLICY_ID = sc.HELMET_POLICY_ID


def _no_events() -> list[Event]:  # a plain function: calling list[Event] is slow
    return []


@dataclass(slots=True)
class SpanDraft:
    """A span in progress: what becomes a `ReadableSpan` when it ends."""

    name: str
    context: SpanContext
    parent: SpanContext | None
    kind: SpanKind
    start: int
    attributes: dict[str, Any]
    links: list[Link]
    events: list[Event] = field(default_factory=_no_events)
    status: Status = _UNSET


def new_span(
    name: str, trace_id: int, span_id: int, flags: TraceFlags, parent: SpanContext | None,
    kind: SpanKind, ts: int, attributes: dict[str, Any], links: list[Link] | None = None,
) -> SpanDraft:  # fmt: skip
    context = SpanContext(trace_id, span_id, False, flags)
    return SpanDraft(name, context, parent, kind, ts, attributes, links or [])


def log_context(span: SpanDraft) -> Context:
    """A context that makes log records carry ``span``'s ids."""
    return set_span_in_context(NonRecordingSpan(span.context))


def client_link(traceparent: str | None, kind: dict[str, str] = _CLIENT_LINK) -> Link | None:
    """A link to the span the client named in its request's ``_meta.traceparent`` (or its HTTP
    ``traceparent`` header), when that is a valid W3C trace context."""
    if traceparent is None:
        return None
    context = get_current_span(_TRACE_CONTEXT.extract({"traceparent": traceparent}))
    remote = context.get_span_context()
    return Link(remote, kind) if remote.is_valid else None


def segment_link(previous: SpanDraft) -> Link:
    return Link(previous.context, _PREVIOUS_SEGMENT)


class SpanWriter:
    """Ends drafts into the pipeline's span queues."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._emit = pipeline.emit_span
        self._emit_urgent = pipeline.emit_urgent_span
        self._resource = pipeline.resource
        self._scope = pipeline.scope

    def end(self, span: SpanDraft, ts: int) -> None:
        if not span.context.trace_flags.sampled:
            return
        # the spans of a call a policy decided on are never shed by a full queue
        (self._emit_urgent if _POLICY_ID in span.attributes else self._emit)(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=self._resource,
                attributes=span.attributes,
                events=span.events,
                links=span.links,
                kind=span.kind,
                status=span.status,
                start_time=span.start,
                end_time=ts,
                instrumentation_scope=self._scope,
            )
        )

    def finish(
        self, span: SpanDraft | None, ts: int, outcome: dict[str, Any], error: str | None
    ) -> None:
        """End ``span`` with its operation's ``outcome``; it failed when that carries
        ``error.type``."""
        if span is None:
            return
        for key in _OUTCOME_KEYS:
            if key in outcome:
                span.attributes[key] = outcome[key]
        if sc.ERROR_TYPE in outcome:
            span.status = Status(StatusCode.ERROR, error)
        self.end(span, ts)
