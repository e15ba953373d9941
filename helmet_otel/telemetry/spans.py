"""Spans as the worker builds them: a `Span` (``helmet_otel.store.records``) is a draft while
its operation is open, and is handed to the pipeline as it is when it ends.

The relay measured the times and chose the ids, so there is no live span to keep: a span is
plain data, ended by `SpanWriter` (unless its trace segment was not sampled).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind, TraceFlags, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from helmet_otel import semconv as sc
from helmet_otel.store.records import AttributeHead, Link, Origin, Span
from helmet_otel.telemetry.gathering import Gatherer
from helmet_otel.telemetry.pipeline import Pipeline

_TRACE_CONTEXT = TraceContextTextMapPropagator()
_CLIENT_LINK = {"helmet.link": "client_traceparent"}
_PREVIOUS_SEGMENT = {"helmet.link": "previous_segment"}
# what an ending span takes over from its operation's outcome
_OUTCOME_KEYS = (sc.ERROR_TYPE, sc.RPC_RESPONSE_STATUS_CODE, sc.MCP_PROTOCOL_VERSION)
_POLICY_ID = sc.HELMET_POLICY_ID
_SAMPLED = int(TraceFlags.SAMPLED)
ERROR = 2  # the status code of a failed span
INTERNAL, SERVER, CLIENT = SpanKind.INTERNAL.value, SpanKind.SERVER.value, SpanKind.CLIENT.value


def client_link(traceparent: str | None, kind: dict[str, str] = _CLIENT_LINK) -> Link | None:
    """A link to the span the client named in its request's ``_meta.traceparent`` (or its HTTP
    ``traceparent`` header), when that is a valid W3C trace context."""
    if traceparent is None:
        return None
    context = get_current_span(_TRACE_CONTEXT.extract({"traceparent": traceparent}))
    remote = context.get_span_context()
    return Link(remote.trace_id, remote.span_id, True, kind) if remote.is_valid else None


def segment_link(previous: Span) -> Link:
    return Link(previous.trace_id, previous.span_id, False, _PREVIOUS_SEGMENT)


class SpanWriter(Gatherer[Span]):
    """Starts spans and ends them into the pipeline's span queues."""

    def __init__(self, pipeline: Pipeline, origin: Origin) -> None:
        super().__init__(pipeline.emit_span, pipeline.emit_spans)
        self._emit_urgent = pipeline.emit_urgent_span
        self.origin = origin

    def new(
        self, name: str, trace_id: int, span_id: int, flags: int, parent: int, kind: int,
        ts: int, attributes: dict[str, Any], links: list[Link] | None = None,
        head: AttributeHead | None = None,
    ) -> Span:  # fmt: skip
        """A span in progress (``parent`` 0: a root; ``head``: what ``attributes`` begin with,
        `AttributeHead`)."""
        # (every field given, in order: no keyword matching, no default factories)
        return Span(name, trace_id, span_id, flags, parent, kind, ts, attributes, self.origin,
                    links or [], [], 0, 0, None, False, "", head)  # fmt: skip

    def end(self, span: Span, ts: int) -> None:
        if not span.flags & _SAMPLED:
            return
        span.end = ts
        # the spans of a call a policy decided on are never shed by a full queue
        (self._emit_urgent if _POLICY_ID in span.attributes else self._emit)(span)

    def finish(
        self, span: Span | None, ts: int, outcome: dict[str, Any], error: str | None
    ) -> None:
        """End ``span`` with its operation's ``outcome``; it failed when that carries
        ``error.type``."""
        if span is None:
            return
        _take_outcome(span, outcome, error)
        self.end(span, ts)

    def finish_call(
        self, server: Span, client: Span | None, ts: int, server_outcome: dict[str, Any] | None,
        client_outcome: dict[str, Any], error: str | None,
    ) -> None:  # fmt: skip
        """`finish` of a call's CLIENT span (if any), then its SERVER span, in one call.
        ``server_outcome`` None: both spans' attributes hold their outcome already (a success
        of the kind they were made with)."""
        emit = self._emit
        if client is not None:
            if server_outcome is not None:
                _take_outcome(client, client_outcome, error)
            if client.flags & _SAMPLED:
                client.end = ts
                (self._emit_urgent if _POLICY_ID in client.attributes else emit)(client)
        if server_outcome is not None:
            _take_outcome(server, server_outcome, error)
        if server.flags & _SAMPLED:
            server.end = ts
            (self._emit_urgent if _POLICY_ID in server.attributes else emit)(server)


def _take_outcome(span: Span, outcome: dict[str, Any], error: str | None) -> None:
    """``span``'s attributes take its operation's ``outcome``; it failed when that carries
    ``error.type``."""
    attributes = span.attributes
    for key in _OUTCOME_KEYS:
        if key in outcome:
            value = outcome[key]
            if key in attributes and span.head is not None:
                old = attributes[key]
                if type(old) is not type(value) or old != value:
                    span.head = None  # (a leading attribute changes: no longer the head's)
            attributes[key] = value
    if sc.ERROR_TYPE in outcome:
        span.status = ERROR
        span.description = error
