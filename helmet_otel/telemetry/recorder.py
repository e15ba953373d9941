"""Turn the relay's frames into spans, log records and metrics (runs in the worker process).

One trace per session: a ``session`` root span; for every request a SERVER span
``{mcp.method.name} {target}`` with a CLIENT child for the upstream call. Spans end as their
response arrives and are exported then; the root ends with the session (or when a long
session rolls over into a new, linked trace).

Spans and log records are built directly as the SDK's readable types (`ReadableSpan`,
`ReadableLogRecord`) from what the relay measured: the relay chose the ids and the times, so
there is no live span to keep, and skipping the SDK's tracer and logger saves most of the
per-record cost. The sampler from ``OTEL_TRACES_SAMPLER`` decides once per trace segment.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from helmet_otel import semconv as sc
from helmet_otel.protocol.message import JsonId, id_key
from helmet_otel.redaction import RedactionConfig, Redactor
from helmet_otel.telemetry.frames import CUT, NOT_JSON
from helmet_otel.telemetry.pipeline import Pipeline
from helmet_otel.telemetry.severity import mcp_level_severity, stderr_severity

# Server-side codes that mean "the caller sent something the receiver could not serve": not
# errors of the server (MCP semconv, genai PR #404). Client spans treat every code as an error.
CALLER_ERROR_CODES = frozenset({-32700, -32600, -32601, -32602, -32002})
DIRECTIONS = (sc.DIRECTION_C2S, sc.DIRECTION_S2C)
MAX_METHOD_LABELS = 64
LATENCY_SAMPLES = 10_000

_KNOWN_METHODS = frozenset(
    [
        "initialize",
        "notifications/initialized",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
        "completion/complete",
        "logging/setLevel",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
        "notifications/roots/list_changed",
        "notifications/elicitation/complete",
        "notifications/tasks/status",
        "notifications/subscriptions/acknowledged",
    ]
)


_UNSET = Status(StatusCode.UNSET)


def _no_events() -> list[Event]:  # a plain function: calling list[Event] is slow
    return []


@dataclass(slots=True)
class _Span:
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


@dataclass(slots=True)
class _Open:
    server: _Span
    client: _Span | None
    context: Context
    method: str
    name: str | None
    started_ns: int
    metric_attrs: dict[str, Any]
    weight: int
    cancelled: bool = False


@dataclass
class _Stats:
    count: int = 0
    errors: int = 0
    bytes: int = 0
    latencies_ms: list[float] = field(default_factory=list[float])


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return round(sorted_values[index], 3)


def _parse_traceparent(value: object) -> SpanContext | None:
    if not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


_SEVERITY_TEXT = {s: s.name.rstrip("0123456789") or s.name for s in SeverityNumber}


def _info_attributes(info: object, name_key: str, version_key: str) -> dict[str, str]:
    """``clientInfo`` / ``serverInfo`` as log-record attributes."""
    if not isinstance(info, dict):
        return {}
    fields = cast(dict[str, Any], info)
    return {name_key: str(fields.get("name", "")), version_key: str(fields.get("version", ""))}


class Recorder:
    def __init__(self, pipeline: Pipeline, config: Mapping[str, Any]) -> None:
        self.pipeline = pipeline
        self.config = config
        self.redactor = Redactor(
            RedactionConfig(
                capture=config.get("capture", "full"),
                max_body=int(config.get("max_body", 65536)),
                extra=tuple(config.get("redact") or ()),
            )
        )
        self.capture = str(config.get("capture", "full"))
        self.resource, self.scope = pipeline.resource, pipeline.scope
        metrics = pipeline.metrics
        durations = sc.DURATION_BUCKETS
        self.m_server_duration = metrics.histogram(
            sc.METRIC_SERVER_OPERATION_DURATION, "s",
            "MCP request duration as seen by the proxy facing the client", durations,
        )  # fmt: skip
        self.m_client_duration = metrics.histogram(
            sc.METRIC_CLIENT_OPERATION_DURATION, "s",
            "MCP request duration of the proxy's call to the upstream", durations,
        )  # fmt: skip
        self.m_session_duration = metrics.histogram(
            sc.METRIC_SERVER_SESSION_DURATION, "s", "MCP session duration", durations
        )
        self.m_sessions_active = metrics.up_down_counter(
            sc.METRIC_SESSIONS_ACTIVE, "{session}", "Sessions in progress"
        )
        self.m_messages = metrics.counter(sc.METRIC_MESSAGES, "{message}", "MCP messages relayed")
        self.m_message_size = metrics.histogram(
            sc.METRIC_MESSAGE_SIZE, "By", "Size of relayed MCP messages", sc.SIZE_BUCKETS
        )
        self.m_errors = metrics.counter(sc.METRIC_ERRORS, "{error}", "Failed MCP operations")
        self.dropped_total: dict[str, int] = defaultdict(int)
        self.trace_flags = TraceFlags(TraceFlags.SAMPLED)  # the sampler's say on this segment
        self.session_id = ""
        self.session_started_ns = 0
        self.root: _Span | None = None
        self.root_context: Context = Context()
        self.segment = 0
        self.open: dict[tuple[int, tuple[bool, JsonId]], _Open] = {}
        self.protocol_version: str | None = None
        self.client_info: dict[str, Any] | None = None
        self.server_info: dict[str, Any] | None = None
        self.methods_seen: set[str] = set()
        self.era = "unknown"
        self.requests = 0  # what the relay counts on the session, for a session_end we must write
        self.errors = 0
        self.ended = False
        self.closed = False
        self.stats: dict[str, _Stats] = defaultdict(_Stats)
        self.messages_total = 0
        self.interval_started = time.monotonic()

    # -- helpers ----------------------------------------------------------------------------
    def _emit(
        self,
        event: str,
        ts: int,
        context: Context | None,
        attributes: dict[str, Any],
        body: Any = None,
        severity: SeverityNumber = SeverityNumber.INFO,
    ) -> None:
        attributes[sc.HELMET_SESSION_ID] = self.session_id
        record = LogRecord(
            timestamp=ts,
            observed_timestamp=time.time_ns(),
            context=context if context is not None else self.root_context,
            severity_number=severity,
            severity_text=_SEVERITY_TEXT[severity],
            body=body,
            attributes=attributes,
            event_name=event,
        )
        self.pipeline.emit_log(ReadableLogRecord(record, self.resource, self.scope))

    def _context(self, span: _Span) -> Context:
        """A context that makes log records carry ``span``'s ids."""
        return set_span_in_context(NonRecordingSpan(span.context))

    def _new_span(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent: SpanContext | None,
        kind: SpanKind,
        ts: int,
        attributes: dict[str, Any],
        links: list[Link] | None = None,
    ) -> _Span:
        context = SpanContext(trace_id, span_id, False, self.trace_flags)
        return _Span(name, context, parent, kind, ts, attributes, links or [])

    def _end_span(self, span: _Span, ts: int) -> None:
        if not span.context.trace_flags.sampled:
            return
        self.pipeline.emit_span(
            ReadableSpan(
                span.name, span.context, span.parent, self.resource, span.attributes,
                span.events, span.links, span.kind, None, span.status, span.start, ts,
                self.scope,
            )
        )  # fmt: skip

    def _method_label(self, method: str | None) -> str:
        if method is None:
            return "unknown"
        if method in _KNOWN_METHODS or method in self.methods_seen:
            return method
        if len(self.methods_seen) < MAX_METHOD_LABELS:
            self.methods_seen.add(method)
            return method
        return "_other"

    def _body(self, raw: bytes | None, size: int, parsed: Any, part: str) -> Any:
        """The recorded body: the redacted ``part`` of the message, per ``--capture``."""
        if raw is None:
            return None
        if parsed is CUT:  # the relay sent only the head of a large message
            return self.redactor.body_from_json(raw, size)
        if parsed is NOT_JSON:
            return self.redactor.body(raw.decode("utf-8", "replace").rstrip("\r\n"))
        if isinstance(parsed, dict) and part:
            return self.redactor.body(cast(dict[str, Any], parsed).get(part))
        return self.redactor.body(cast(object, parsed))

    def _take_drops(self) -> dict[str, int]:
        drops = self.pipeline.drops.take()  # already in helmet.telemetry.dropped
        for reason, count in drops.items():
            self.dropped_total[reason] += count
        return drops

    # -- frames -----------------------------------------------------------------------------
    def handle(self, frame: tuple[Any, ...]) -> None:
        tag = frame[0]
        if tag == "msg":
            self.message(*frame[1:])
        elif tag == "stderr":
            self.stderr(frame[1], frame[2])
        elif tag == "start":
            self.start(frame[1], frame[2])
        elif tag == "end":
            self.end(frame[1], frame[2])
        elif tag == "segment":
            self.roll_over(frame[1], frame[2], frame[3])
        elif tag == "failed":
            self.failed(frame[1], frame[2])
        elif tag == "info":
            self.info(frame[1])
        elif tag == "dropped":
            self.pipeline.drops.add(frame[1], int(frame[2]), quiet=True)  # the relay said it
        elif tag == "close":
            self.close(frame[1], frame[2])

    def _start_root(self, ts: int, trace_id: int, span_id: int, links: list[Link]) -> None:
        attributes: dict[str, Any] = {
            sc.HELMET_SESSION_ID: self.session_id,
            sc.HELMET_TRANSPORT: self.config.get("transport", "stdio"),
            sc.HELMET_SERVER_NAME: self.config["service_name"],
            sc.NETWORK_TRANSPORT: "pipe",
            sc.HELMET_TRACE_SEGMENT: self.segment,
        }
        if self.protocol_version:
            attributes[sc.MCP_PROTOCOL_VERSION] = self.protocol_version
        decision = self.pipeline.sampler.should_sample(
            None, trace_id, sc.SPAN_SESSION, SpanKind.INTERNAL, attributes, links
        )
        sampled = decision.decision.is_sampled()
        self.trace_flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        self.root = self._new_span(
            sc.SPAN_SESSION, trace_id, span_id, None, SpanKind.INTERNAL, ts, attributes, links
        )
        self.root_context = self._context(self.root)

    def start(self, ts: int, info: dict[str, Any]) -> None:
        self.session_id = str(info["session_id"])
        self.session_started_ns = ts
        self._start_root(ts, int(info["trace_id"]), int(info["root_span_id"]), [])
        command = info.get("command")
        command_text = (
            " ".join(str(a) for a in cast(list[object], command))
            if isinstance(command, list)
            else None
        )
        assert self.root is not None
        if command_text is not None:
            self.root.attributes[sc.HELMET_SERVER_COMMAND] = self.redactor.scrub_text(command_text)
        if info.get("pid") is not None:
            self.root.attributes[sc.HELMET_SERVER_PID] = int(info["pid"])
        self.m_sessions_active.add(1)
        start_attrs: dict[str, Any] = {
            sc.HELMET_SERVER_NAME: self.config["service_name"],
            sc.HELMET_TRANSPORT: self.config.get("transport", "stdio"),
            sc.HELMET_PROXY_PID: int(self.config.get("proxy_pid", 0)),
            sc.HELMET_PROXY_HOST: str(self.config.get("proxy_host", "")),
        }
        if command_text is not None:
            start_attrs[sc.HELMET_SERVER_COMMAND] = self.redactor.scrub_text(command_text)
        self._emit(sc.EVENT_SESSION_START, ts, None, start_attrs)
        effective = {k: v for k, v in self.config.items() if k not in ("proxy_pid", "proxy_host")}
        self._emit(sc.EVENT_CONFIGURATION, ts, None, {}, body=self.redactor.scrub(effective))
        if "pid" in info:
            init_attrs: dict[str, Any] = {sc.HELMET_SERVER_PID: int(info["pid"])}
            if command_text is not None:
                init_attrs[sc.HELMET_SERVER_COMMAND] = self.redactor.scrub_text(command_text)
            self._emit(
                sc.EVENT_INITIALIZATION,
                ts,
                None,
                init_attrs,
                body={"cwd": self.redactor.scrub_text(str(info.get("cwd", "")))},
            )

    def roll_over(self, ts: int, trace_id: int, root_span_id: int) -> None:
        previous = self.root
        links: list[Link] = []
        if previous is not None:
            previous.attributes[sc.HELMET_SESSION_REQUESTS] = self.messages_total
            links.append(Link(previous.context, {"helmet.link": "previous_segment"}))
            self._end_span(previous, ts)
        self.segment += 1
        self._start_root(ts, trace_id, root_span_id, links)

    def message(
        self,
        ts: int,
        direction: int,
        size: int,
        raw: bytes | None,
        summary: tuple[Any, ...],
        trace_id: int,
        server_span_id: int,
        client_span_id: int,
        weight: int,
        parsed: Any,
    ) -> None:
        (kind, msg_id, method, name, uri, code, error_message, tool_error, client_tp,
         replied) = summary  # fmt: skip
        self.messages_total += 1
        attrs: dict[str, Any] = {
            sc.HELMET_DIRECTION: DIRECTIONS[direction],
            sc.HELMET_MESSAGE_KIND: kind,
            sc.HELMET_MESSAGE_SIZE: size,
        }
        if msg_id is not None:
            attrs[sc.JSONRPC_REQUEST_ID] = str(msg_id)
        if weight > 1:
            attrs[sc.HELMET_SAMPLE_WEIGHT] = weight
        if kind == "request":
            self.requests += weight
            self._request(ts, direction, attrs, raw, parsed, msg_id, method, name, uri, client_tp,
                          trace_id, server_span_id, client_span_id, replied, weight)  # fmt: skip
        elif kind in ("response", "error"):
            self._response(ts, direction, attrs, raw, parsed, msg_id, code, error_message,
                           tool_error, weight)  # fmt: skip
        elif kind == "notification":
            self._notification(ts, attrs, raw, parsed, method, weight)
        elif kind == "batch":
            self._count_message("batch", attrs, weight)
            self._emit(
                sc.EVENT_REQUEST,
                ts,
                None,
                attrs,
                self._body(raw, attrs[sc.HELMET_MESSAGE_SIZE], parsed, ""),
            )
        else:  # invalid
            attrs[sc.ERROR_TYPE] = "parse_error"
            self._count_message("unknown", attrs, weight)
            self.m_errors.add(weight, {sc.ERROR_TYPE: "parse_error", sc.MCP_METHOD_NAME: "unknown"})
            body = self._body(raw, size, NOT_JSON if parsed is not CUT else CUT, "")
            self._emit(sc.EVENT_ERROR, ts, None, attrs, body, SeverityNumber.WARN)

    def _count_message(self, label: str, attrs: dict[str, Any], weight: int) -> None:
        direction = attrs[sc.HELMET_DIRECTION]
        self.m_messages.add(
            weight, {sc.MCP_METHOD_NAME: label, sc.HELMET_DIRECTION: direction,
                     sc.HELMET_MESSAGE_KIND: attrs[sc.HELMET_MESSAGE_KIND]},
        )  # fmt: skip
        self.m_message_size.record(
            attrs[sc.HELMET_MESSAGE_SIZE],
            {sc.MCP_METHOD_NAME: label, sc.HELMET_DIRECTION: direction},
            weight=weight,
        )

    def _op_attributes(self, method: str, name: str | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {sc.MCP_METHOD_NAME: method}
        if name is not None:
            if method == "tools/call":
                attrs[sc.GEN_AI_TOOL_NAME] = name
                attrs[sc.GEN_AI_OPERATION_NAME] = sc.OPERATION_EXECUTE_TOOL
            elif method == "prompts/get":
                attrs[sc.GEN_AI_PROMPT_NAME] = name
        if self.protocol_version:
            attrs[sc.MCP_PROTOCOL_VERSION] = self.protocol_version
        attrs[sc.NETWORK_TRANSPORT] = "pipe"
        return attrs

    def _request(
        self, ts: int, direction: int, attrs: dict[str, Any], raw: bytes | None, parsed: Any,
        msg_id: Any, method: str, name: str | None, uri: str | None, client_tp: Any,
        trace_id: int, server_span_id: int, client_span_id: int, replied: bool, weight: int,
    ) -> None:  # fmt: skip
        if method == "initialize":
            attrs.update(_info_attributes(self.client_info, sc.HELMET_CLIENT_NAME,
                                          sc.HELMET_CLIENT_VERSION))  # fmt: skip
        label = self._method_label(method)
        op_attrs = self._op_attributes(label, name)
        span_attrs = dict(op_attrs)
        span_attrs[sc.MCP_METHOD_NAME] = method
        span_attrs[sc.HELMET_SESSION_ID] = self.session_id
        if msg_id is not None:
            span_attrs[sc.JSONRPC_REQUEST_ID] = str(msg_id)
        if uri is not None and method.startswith("resources/"):
            span_attrs[sc.MCP_RESOURCE_URI] = uri
            attrs[sc.MCP_RESOURCE_URI] = uri
        if weight > 1:
            span_attrs[sc.HELMET_SAMPLE_WEIGHT] = weight
        span_name = f"{method} {name}" if name else method
        links: list[Link] = []
        remote = _parse_traceparent(client_tp)
        if remote is not None:
            links.append(Link(remote, {"helmet.link": "client_traceparent"}))
        root = self.root
        if root is not None:
            trace_id = root.context.trace_id
        server = self._new_span(
            span_name, trace_id, server_span_id, root.context if root is not None else None,
            SpanKind.SERVER, ts, span_attrs, links,
        )  # fmt: skip
        server_context = self._context(server)
        client = None
        if not replied:
            client = self._new_span(
                span_name, trace_id, client_span_id, server.context, SpanKind.CLIENT, ts,
                dict(span_attrs),
            )  # fmt: skip
        if msg_id is not None:
            self.open[(direction, id_key(msg_id))] = _Open(
                server, client, server_context, method, name, ts, op_attrs, weight
            )
        for k in (sc.MCP_METHOD_NAME, sc.GEN_AI_TOOL_NAME, sc.GEN_AI_PROMPT_NAME):
            if k in span_attrs:
                attrs[k] = span_attrs[k]
        self._count_message(label, attrs, weight)
        self._emit(
            sc.EVENT_REQUEST,
            ts,
            server_context,
            attrs,
            self._body(raw, attrs[sc.HELMET_MESSAGE_SIZE], parsed, "params"),
        )

    def _response(
        self, ts: int, direction: int, attrs: dict[str, Any], raw: bytes | None, parsed: Any,
        msg_id: Any, code: int | None, error_message: str | None, tool_error: bool, weight: int,
    ) -> None:  # fmt: skip
        is_error = code is not None or attrs[sc.HELMET_MESSAGE_KIND] == "error"
        body_obj = self._body(
            raw, attrs[sc.HELMET_MESSAGE_SIZE], parsed, "error" if is_error else "result"
        )
        code_text = None
        severity = SeverityNumber.INFO
        if is_error:
            code_text = str(code) if code is not None else "unknown"
            attrs[sc.RPC_RESPONSE_STATUS_CODE] = attrs[sc.ERROR_TYPE] = code_text
            severity = SeverityNumber.ERROR
        opened = None
        if msg_id is not None:
            opened = self.open.pop((1 - direction, id_key(msg_id)), None)
        context = None
        label = "unknown"
        if opened is not None:  # a response stands for as many calls as its request
            weight = opened.weight
            attrs.pop(sc.HELMET_SAMPLE_WEIGHT, None)
            if weight > 1:
                attrs[sc.HELMET_SAMPLE_WEIGHT] = weight
            context = opened.context
            label = self._method_label(opened.method)
            self._end_operation(ts, opened, attrs, code, code_text, error_message, tool_error)
            if tool_error and not is_error:
                severity = SeverityNumber.ERROR
        elif code_text is not None:
            self.m_errors.add(weight, {sc.ERROR_TYPE: code_text, sc.MCP_METHOD_NAME: label})
        self.errors += (is_error or tool_error) * weight
        self._count_message(label, attrs, weight)
        self._emit(sc.EVENT_RESPONSE, ts, context, attrs, body_obj, severity)
        if is_error:
            error_attrs = dict(attrs)
            if code is not None:
                error_attrs[sc.HELMET_ERROR_CODE] = code
            if error_message is not None:
                error_attrs[sc.HELMET_ERROR_MESSAGE] = self.redactor.scrub_text(error_message)
            self._emit(sc.EVENT_ERROR, ts, context, error_attrs, body_obj, SeverityNumber.ERROR)

    def _end_operation(
        self, ts: int, opened: _Open, attrs: dict[str, Any], code: int | None,
        code_text: str | None, error_message: str | None, tool_error: bool,
    ) -> None:  # fmt: skip
        """End the request's SERVER and CLIENT spans and record its duration and errors."""
        attrs[sc.MCP_METHOD_NAME] = opened.method
        uri = opened.server.attributes.get(sc.MCP_RESOURCE_URI)
        if uri is not None:
            attrs[sc.MCP_RESOURCE_URI] = uri
        if opened.name is not None:
            key = sc.GEN_AI_TOOL_NAME if opened.method == "tools/call" else sc.GEN_AI_PROMPT_NAME
            attrs[key] = opened.name
        latency_s = max(ts - opened.started_ns, 0) / 1e9
        attrs[sc.HELMET_LATENCY_MS] = round(latency_s * 1000, 3)
        if opened.method == "initialize":
            attrs.update(_info_attributes(self.server_info, sc.HELMET_SERVER_INFO_NAME,
                                          sc.HELMET_SERVER_VERSION))  # fmt: skip
        server_attrs = dict(opened.metric_attrs)
        if self.protocol_version:
            server_attrs[sc.MCP_PROTOCOL_VERSION] = self.protocol_version
        client_attrs = dict(server_attrs)
        description = None
        if code_text is not None:
            description = error_message or "error"
            server_attrs[sc.RPC_RESPONSE_STATUS_CODE] = code_text
            client_attrs[sc.RPC_RESPONSE_STATUS_CODE] = code_text
            client_attrs[sc.ERROR_TYPE] = code_text  # a client sees every code as an error
            if code not in CALLER_ERROR_CODES:
                server_attrs[sc.ERROR_TYPE] = code_text
        elif tool_error:
            description = "tool returned isError"
            attrs[sc.ERROR_TYPE] = sc.ERROR_TYPE_TOOL_ERROR
            server_attrs[sc.ERROR_TYPE] = client_attrs[sc.ERROR_TYPE] = sc.ERROR_TYPE_TOOL_ERROR
        self._finish(opened.client, ts, client_attrs, description)
        self._finish(opened.server, ts, server_attrs, description)
        server = opened.server.context  # exemplars: a latency bucket links to a request's trace
        weight = opened.weight
        self.m_server_duration.record(
            latency_s, server_attrs, server.trace_id, server.span_id, ts, weight
        )
        if opened.client is not None:
            client = opened.client.context
            self.m_client_duration.record(
                latency_s, client_attrs, client.trace_id, client.span_id, ts, weight
            )
        stats = self.stats[f"{opened.method} {opened.name}" if opened.name else opened.method]
        stats.count += weight
        stats.bytes += attrs[sc.HELMET_MESSAGE_SIZE] * weight
        if len(stats.latencies_ms) < LATENCY_SAMPLES:
            stats.latencies_ms.append(latency_s * 1000)
        if sc.ERROR_TYPE in attrs:
            stats.errors += weight
            error_attrs = {sc.ERROR_TYPE: attrs[sc.ERROR_TYPE],
                           sc.MCP_METHOD_NAME: self._method_label(opened.method)}  # fmt: skip
            if sc.GEN_AI_TOOL_NAME in attrs:
                error_attrs[sc.GEN_AI_TOOL_NAME] = attrs[sc.GEN_AI_TOOL_NAME]
            self.m_errors.add(weight, error_attrs)

    def _finish(
        self, span: _Span | None, ts: int, attrs: dict[str, Any], error: str | None
    ) -> None:
        """End ``span``; it failed when its attributes carry ``error.type``."""
        if span is None:
            return
        for key in (sc.ERROR_TYPE, sc.RPC_RESPONSE_STATUS_CODE, sc.MCP_PROTOCOL_VERSION):
            if key in attrs:
                span.attributes[key] = attrs[key]
        if sc.ERROR_TYPE in attrs:
            span.status = Status(StatusCode.ERROR, error)
        self._end_span(span, ts)

    def _notification(
        self, ts: int, attrs: dict[str, Any], raw: bytes | None, parsed: Any, method: str,
        weight: int,
    ) -> None:  # fmt: skip
        attrs[sc.MCP_METHOD_NAME] = method
        severity = SeverityNumber.INFO
        message = cast(dict[str, Any], parsed) if isinstance(parsed, dict) else {}
        params: object = message.get("params")
        if isinstance(params, dict):
            params = cast(dict[str, Any], params)
            level = params.get("level")
            request_id = params.get("requestId")
            if method == "notifications/message" and isinstance(level, str):
                attrs[sc.HELMET_LOG_LEVEL] = level
                severity = mcp_level_severity(level)
            elif method in ("notifications/cancelled", "notifications/progress") and (
                request_id is not None
            ):
                attrs[sc.JSONRPC_REQUEST_ID] = str(request_id)
                if method == "notifications/cancelled":  # an event on the cancelled request
                    for direction in (0, 1):
                        opened = self.open.get((direction, id_key(request_id)))
                        if opened is not None:
                            reason = str(params.get("reason", ""))
                            opened.server.events.append(Event("cancelled", {"reason": reason}, ts))
                            opened.cancelled = True
        self._count_message(self._method_label(method), attrs, weight)
        body = self._body(raw, attrs[sc.HELMET_MESSAGE_SIZE], parsed, "params")
        self._emit(sc.EVENT_NOTIFICATION, ts, None, attrs, body, severity)

    def info(self, info: Mapping[str, Any]) -> None:
        """What the relay learned of the session (era, protocol version, client and server)."""
        self.era = str(info.get("era") or self.era)
        self.protocol_version = info.get("protocol_version")
        self.client_info = info.get("client_info")
        self.server_info = info.get("server_info")
        if self.protocol_version and self.root is not None:
            self.root.attributes[sc.MCP_PROTOCOL_VERSION] = self.protocol_version

    def stderr(self, ts: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text.strip():
            return
        severity = stderr_severity(text)
        self._emit(sc.EVENT_SERVER_STDERR, ts, None, {}, self.redactor.scrub_text(text), severity)

    def failed(self, ts: int, reason: str) -> None:
        self._emit(
            sc.EVENT_ERROR, ts, None, {sc.ERROR_TYPE: "upstream_start_failed",
                                       sc.HELMET_ERROR_MESSAGE: reason},
            reason, SeverityNumber.ERROR,
        )  # fmt: skip
        self.m_errors.add(
            1, {sc.ERROR_TYPE: "upstream_start_failed", sc.MCP_METHOD_NAME: "unknown"}
        )

    def end(self, ts: int, info: Mapping[str, Any]) -> None:
        if self.ended:
            return
        self.ended = True
        reason = str(info.get("exit_reason") or "session ended")
        for opened in self.open.values():  # a cancelled request expected no response
            attrs = {} if opened.cancelled else {sc.ERROR_TYPE: "no_response"}
            self._finish(opened.client, ts, attrs, f"no response: {reason}")
            self._finish(opened.server, ts, attrs, f"no response: {reason}")
        self.open.clear()
        status = info.get("exit_status")
        duration_s = max(ts - self.session_started_ns, 0) / 1e9
        client = info.get("client_info") or self.client_info or {}
        server = info.get("server_info") or self.server_info or {}
        version = info.get("protocol_version") or self.protocol_version
        attrs: dict[str, Any] = {
            sc.HELMET_SESSION_DURATION_MS: round(duration_s * 1000, 3),
            sc.HELMET_SESSION_REQUESTS: int(info.get("requests", 0)),
            sc.HELMET_SESSION_ERRORS: int(info.get("errors", 0)),
            sc.HELMET_EXIT_REASON: reason,
            sc.HELMET_ERA: str(info.get("era", "unknown")),
            sc.HELMET_SERVER_NAME: self.config["service_name"],
        }
        if status is not None:
            attrs[sc.HELMET_EXIT_STATUS] = int(status)
        if version:
            attrs[sc.MCP_PROTOCOL_VERSION] = str(version)
        for key, source, field_name in (
            (sc.HELMET_CLIENT_NAME, client, "name"),
            (sc.HELMET_CLIENT_VERSION, client, "version"),
            (sc.HELMET_SERVER_INFO_NAME, server, "name"),
            (sc.HELMET_SERVER_VERSION, server, "version"),
        ):
            if isinstance(source, dict) and source.get(field_name) is not None:  # pyright: ignore[reportUnknownMemberType]
                attrs[key] = str(source[field_name])  # pyright: ignore[reportUnknownArgumentType]
        crashed = status not in (None, 0) and not reason.startswith(
            ("client closed", "proxy received")
        )
        root = self.root
        if root is not None:
            for key, value in attrs.items():
                root.attributes[key] = value
            if crashed:
                root.status = Status(StatusCode.ERROR, reason)
            self._end_span(root, ts)
        session_metric: dict[str, Any] = {sc.NETWORK_TRANSPORT: "pipe"}
        if version:
            session_metric[sc.MCP_PROTOCOL_VERSION] = str(version)
        if crashed:
            session_metric[sc.ERROR_TYPE] = "server_exit"
        self.m_session_duration.record(duration_s, session_metric)
        self.m_sessions_active.add(-1)
        self._emit(
            sc.EVENT_SESSION_END, ts, None, attrs,
            {"method_counts": dict(info.get("method_counts") or {})},
            SeverityNumber.ERROR if crashed else SeverityNumber.INFO,
        )  # fmt: skip

    def performance(self, ts: int | None = None) -> None:
        ts = ts or time.time_ns()
        now = time.monotonic()
        methods: dict[str, Any] = {}
        for key, stats in sorted(self.stats.items()):
            values = sorted(stats.latencies_ms)
            methods[key] = {
                "count": stats.count,
                "errors": stats.errors,
                "bytes": stats.bytes,
                "p50_ms": _quantile(values, 0.5),
                "p95_ms": _quantile(values, 0.95),
                "p99_ms": _quantile(values, 0.99),
            }
        drops = self._take_drops()
        body = {
            "interval_s": round(now - self.interval_started, 3),
            "messages": self.messages_total,
            "open_requests": len(self.open),
            "methods": methods,
            "dropped": drops,
        }
        self.stats.clear()
        self.interval_started = now
        self._emit(sc.EVENT_PERFORMANCE, ts, None, {}, body)

    def close(self, ts: int, info: Mapping[str, Any]) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.ended and self.session_id:  # the relay never said: what we know of it
            self.end(ts, {"exit_reason": str(info.get("reason", "proxy closed")),
                          "requests": self.requests, "errors": self.errors, "era": self.era})  # fmt: skip
        self.performance(ts)
        body = {
            "reason": str(info.get("reason", "")),
            "dropped": dict(self.dropped_total),
            "sinks": list(self.pipeline.sinks),
        }
        self._emit(sc.EVENT_PROXY_CLOSE, ts, None, {}, body)
