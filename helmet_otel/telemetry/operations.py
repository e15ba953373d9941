"""The calls of one session: a request opens an operation (a SERVER span facing the caller
and a CLIENT child for the call the proxy forwards), its response ends it.

Operations are keyed by the request's direction and JSON-RPC id within their session, so two
sessions may use the same ids at the same time. A response the proxy wrote itself (a policy
block, an "upstream gone" error) ends its operation like any other, and its records say
``helmet.origin = proxy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from opentelemetry._logs import SeverityNumber

from helmet_otel import semconv as sc
from helmet_otel.core.verdicts import Decision
from helmet_otel.protocol.message import JsonId, id_key
from helmet_otel.store.records import AttributeHead, Event, Span
from helmet_otel.telemetry.frames import Msg
from helmet_otel.telemetry.metrics import Key, attribute_key
from helmet_otel.telemetry.records import id_text, info_attributes, recorded_body
from helmet_otel.telemetry.spans import CLIENT, SERVER, client_link

if TYPE_CHECKING:
    from helmet_otel.telemetry.session_recorder import SessionRecorder


def decision_attributes(decision: Decision) -> dict[str, Any]:
    """A decision as attributes (of its SERVER span, its records and its metric)."""
    attrs: dict[str, Any] = {
        sc.HELMET_POLICY_ID: decision.rule_id,
        sc.HELMET_POLICY_ACTION: decision.action,
        sc.HELMET_POLICY_MODE: "shadow" if decision.shadow else "enforce",
    }
    if decision.tool is not None:
        attrs[sc.GEN_AI_TOOL_NAME] = decision.tool
    return attrs


# Server-side codes that mean "the caller sent something the receiver could not serve": not
# errors of the server (MCP semconv, genai PR #404). Client spans treat every code as an error.
CALLER_ERROR_CODES = frozenset({-32700, -32600, -32601, -32602, -32002})
_NAMED_KEYS = (sc.MCP_METHOD_NAME, sc.GEN_AI_TOOL_NAME, sc.GEN_AI_PROMPT_NAME)
HTTP_HEADER_LINK = {"helmet.link": "http_traceparent"}


def _http_status(parsed: object) -> int | None:
    """The HTTP status a proxy-written error carries in ``error.data`` (the upstream failed the
    request over HTTP), or None."""
    if not isinstance(parsed, dict):
        return None
    error = cast(dict[str, Any], parsed).get("error")
    data = cast(dict[str, Any], error).get("data") if isinstance(error, dict) else None
    status = (
        cast(dict[str, Any], data).get(sc.HTTP_RESPONSE_STATUS_CODE)
        if isinstance(data, dict)
        else None
    )
    return status if type(status) is int else None


_POLICY_KEYS = (sc.HELMET_POLICY_ID, sc.HELMET_POLICY_ACTION, sc.HELMET_POLICY_MODE)
# (module constants: an enum member looked up on its class costs ~0.2 us each time)
_INFO, _ERROR = SeverityNumber.INFO, SeverityNumber.ERROR


_KINDS_MAX = 256  # kinds of call remembered per session (names come from the traffic)


def milliseconds(ns: int) -> float:
    """``round(ns / 1e9 * 1000, 3)`` (a call's ``helmet.latency_ms``), the same float, without
    ``round``'s decimal conversion but at a tie (half a microsecond), where it decides."""
    us, rest = divmod(ns, 1000)
    if rest == 500:
        return round(ns / 1e9 * 1000, 3)
    return (us + (rest > 500)) / 1000


DIRECTIONS = (sc.DIRECTION_C2S, sc.DIRECTION_S2C)  # by `Msg.s2c`
_REQUESTS = ((0, "request"), (1, "request"))  # `CallKind.heads` keys of requests, by `Msg.s2c`


def _no_heads() -> dict[tuple[int, str], tuple[AttributeHead, tuple[Key, Key]]]:
    return {}


@dataclass(slots=True)
class CallKind:
    """What every call of one method and target in a session shares, worked out once: its
    method and target names scrubbed, its metric label and attributes, its spans' name, its
    spans' attributes before the call's own (the request id...), and its records'
    (`records`). Kinds are found by the names as the traffic gave them."""

    method: str  # scrubbed, as the records and spans show it
    label: str
    metric_attrs: dict[str, Any]  # shared: never changed
    span_head: AttributeHead  # what its spans' attributes begin with: copied per call
    span_name: str
    named: tuple[tuple[str, Any], ...]  # method, tool and prompt names for the records
    # a success's span outcomes (SERVER, CLIENT), shared, the protocol version they have, and
    # their metric key (the durations': the same for both)
    ended: tuple[dict[str, Any], dict[str, Any], str | None, Key] | None = None
    # by (direction, message kind): what its messages' records' attributes begin with (the
    # direction, the kind, the method and target names, the session's ids), and the keys of
    # their message metrics
    heads: dict[tuple[int, str], tuple[AttributeHead, tuple[Key, Key]]] = field(
        default_factory=_no_heads
    )


class Operation(NamedTuple):
    """An open call (a tuple: built without a Python ``__init__``, `_operation`). A call
    cancelled by ``notifications/cancelled`` has a ``cancelled`` event on its SERVER span."""

    server: Span  # (its records are in it)
    client: Span | None  # None when the proxy answered the request itself
    method: str  # the method and target as the traffic gave them (its kind's key)
    name: str | None
    started_ns: int
    kind: CallKind
    weight: int
    request_id: JsonId | None  # the request's id, and as its records show it
    id_text: str | None
    generation: int  # `Operations.generation` when it started

    @property
    def cancelled(self) -> bool:
        return any(event.name == _CANCELLED for event in self.server.events)


_operation = tuple[Any, ...].__new__  # an `Operation` from its fields, without its __new__
_CANCELLED = "cancelled"  # the event on a cancelled call's SERVER span


class Operations:
    def __init__(self, session: SessionRecorder) -> None:
        self.session = session
        # by the request's direction and `id_key` (flat: one tuple per call)
        self.open: dict[tuple[int, bool, JsonId], Operation] = {}
        self._kinds: dict[tuple[str, str | None], CallKind] = {}
        self.generation = 0  # of the session's facts the kinds hold: counts `forget_kinds`

    def forget_kinds(self) -> None:
        """The session's protocol version, transport or session id changed: what calls share
        is worked out again."""
        self._kinds.clear()
        self.generation += 1

    def _kind(self, raw_method: str, raw_name: str | None) -> CallKind:
        """The kind of the calls of ``raw_method`` and ``raw_name`` (as the traffic gave them:
        scrubbed here, once per kind)."""
        kind = self._kinds.get((raw_method, raw_name))
        if kind is not None:
            return kind
        session = self.session
        scrub = session.shared.redactor.scrub_name
        method = scrub(raw_method)
        name = raw_name if raw_name is None else scrub(raw_name)
        label = session.shared.instruments.method_label(method)
        metric_attrs = self._metric_attributes(label, name)
        span_attrs = dict(metric_attrs)
        span_attrs[sc.MCP_METHOD_NAME] = method
        span_attrs[sc.HELMET_SESSION_ID] = session.session_id
        if session.mcp_session_id is not None:
            span_attrs[sc.MCP_SESSION_ID] = session.mcp_session_id
        named = tuple((key, span_attrs[key]) for key in _NAMED_KEYS if key in span_attrs)
        span_name = f"{method} {name}" if name else method
        kind = CallKind(method, label, metric_attrs, AttributeHead(span_attrs), span_name, named)
        if len(self._kinds) >= _KINDS_MAX:
            self._kinds.clear()
        self._kinds[(raw_method, raw_name)] = kind
        return kind

    def _head(
        self, kind: CallKind, s2c: int, message: str
    ) -> tuple[AttributeHead, tuple[Key, Key]]:
        """What the records of ``kind``'s ``message``s (request, response, error) in direction
        ``s2c`` begin with, and their message metrics' keys."""
        found = kind.heads.get((s2c, message))
        if found is None:
            session = self.session
            direction = DIRECTIONS[s2c]
            attrs: dict[str, Any] = {
                sc.HELMET_DIRECTION: direction,
                sc.HELMET_MESSAGE_KIND: message,
            }
            attrs.update(kind.named)
            attrs[sc.HELMET_SESSION_ID] = session.session_id
            if session.mcp_session_id is not None:
                attrs[sc.MCP_SESSION_ID] = session.mcp_session_id
            keys = session.shared.instruments.message_keys(kind.label, direction, message)
            found = kind.heads[(s2c, message)] = (AttributeHead(attrs), keys)
        return found

    def _metric_attributes(self, label: str, name: str | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {sc.MCP_METHOD_NAME: label}
        if name is not None:
            if label == "tools/call":
                attrs[sc.GEN_AI_TOOL_NAME] = name
                attrs[sc.GEN_AI_OPERATION_NAME] = sc.OPERATION_EXECUTE_TOOL
            elif label == "prompts/get":
                attrs[sc.GEN_AI_PROMPT_NAME] = name
        session = self.session
        if session.protocol_version:
            attrs[sc.MCP_PROTOCOL_VERSION] = session.protocol_version
        if session.network_transport is not None:
            attrs[sc.NETWORK_TRANSPORT] = session.network_transport
        return attrs

    def request(self, frame: Msg) -> None:
        """A request (its summary as the traffic gave it: what it records is scrubbed)."""
        session = self.session
        shared = session.shared
        summary = frame.summary
        raw_method = summary.method or ""
        raw_name = summary.target
        ts = frame.ts
        kind = self._kinds.get((raw_method, raw_name)) or self._kind(raw_method, raw_name)
        method = kind.method
        head, keys = kind.heads.get(_REQUESTS[frame.s2c]) or self._head(kind, frame.s2c, "request")
        attrs = head.attributes.copy()
        attrs[sc.HELMET_MESSAGE_SIZE] = frame.size
        span_attrs = kind.span_head.attributes.copy()
        text_id = None
        request_id = summary.id
        if request_id is not None:
            text_id = id_text(shared.redactor, request_id)
            span_attrs[sc.JSONRPC_REQUEST_ID] = attrs[sc.JSONRPC_REQUEST_ID] = text_id
        uri = summary.resource_uri
        if uri is not None and method.startswith("resources/"):
            uri = shared.redactor.scrub_text(uri)
            span_attrs[sc.MCP_RESOURCE_URI] = uri
            attrs[sc.MCP_RESOURCE_URI] = uri
        weight = frame.weight
        if weight > 1:
            span_attrs[sc.HELMET_SAMPLE_WEIGHT] = attrs[sc.HELMET_SAMPLE_WEIGHT] = weight
        if method == "initialize":
            attrs.update(info_attributes(session.client_info, sc.HELMET_CLIENT_NAME,
                                         sc.HELMET_CLIENT_VERSION))  # fmt: skip
        verdict = session.verdicts.pop(frame.server_span_id, None) if session.verdicts else None
        if verdict is not None and verdict[0] is not None:
            policy_attrs = {k: v for k, v in decision_attributes(verdict[0]).items()
                            if k in _POLICY_KEYS}  # fmt: skip
            span_attrs.update(policy_attrs)
            attrs.update(policy_attrs)
        span_name = kind.span_name
        links = None
        if summary.client_traceparent is not None or summary.http_traceparent is not None:
            links = [
                link for link in (client_link(summary.client_traceparent),
                                  client_link(summary.http_traceparent, HTTP_HEADER_LINK))
                if link is not None
            ]  # fmt: skip
        root = session.root
        trace_id = root.trace_id
        flags = session.trace_flags
        span_head = kind.span_head
        origin = shared.spans.origin
        client = None
        # (`SpanWriter.new`, inlined: every field given, in order)
        if not summary.replied:
            client_attrs = span_attrs.copy()
            if session.upstream_attributes:
                client_attrs.update(session.upstream_attributes)
            client = Span(span_name, trace_id, frame.client_span_id, flags, frame.server_span_id,
                          CLIENT, ts, client_attrs, origin, [], [], 0, 0, None, False, "",
                          span_head)  # fmt: skip
        if session.peer_attributes:
            span_attrs.update(session.peer_attributes)
        server = Span(span_name, trace_id, frame.server_span_id, flags, root.span_id, SERVER, ts,
                      span_attrs, origin, links or [], [], 0, 0, None, False, "",
                      span_head)  # fmt: skip
        if request_id is not None:  # (`id_key`, inlined: JSON gives exact types)
            self.open[(frame.s2c, type(request_id) is str, request_id)] = _operation(
                Operation,
                (server, client, raw_method, raw_name, ts, kind, weight, request_id, text_id,
                 self.generation),
            )  # fmt: skip
        shared.instruments.messages_seen.append((keys, frame.size, weight))
        parsed = frame.parsed
        if type(parsed) is dict:  # (`recorded_body` of nearly every request, inlined)
            message: dict[str, Any] = parsed  # pyright: ignore[reportUnknownVariableType]
            body, text = shared.redactor.body_and_json(message.get("params"))
        else:
            body, text = recorded_body(shared.redactor, frame.body, frame.size, parsed, "params")
        # (its head holds the session's ids: straight to the writer)
        shared.records.emit(sc.EVENT_REQUEST, ts, server, attrs, body, _INFO, text, head)
        if verdict is not None:
            for finding in verdict[1]:
                session.finding(finding, ts, server)

    def response(self, frame: Msg) -> None:
        session = self.session
        shared = session.shared
        summary = frame.summary
        ts = frame.ts
        code = summary.error_code
        is_error = code is not None or summary.kind == "error"
        opened = None
        if summary.id is not None:
            answered = summary.id  # (`id_key`, inlined: JSON gives exact types)
            opened = self.open.pop((1 - frame.s2c, type(answered) is str, answered), None)
        if opened is None:
            head = keys = None
            weight = frame.weight
            attrs = session.message_attributes(frame)
        else:  # a response stands for as many calls as its request
            weight = opened.weight
            # (the session's kind now: its ids are the session's now, as every record's)
            kind = opened.kind
            if opened.generation != self.generation:
                kind = self._kind(opened.method, opened.name)
            head, keys = kind.heads.get((frame.s2c, summary.kind)) or self._head(
                kind, frame.s2c, summary.kind
            )
            attrs = head.attributes.copy()
            attrs[sc.HELMET_MESSAGE_SIZE] = frame.size
            # (the request's id as shown, unless the two differ in type: 1 answers 1.0)
            request_id = summary.id
            same = type(request_id) is type(opened.request_id) and opened.id_text is not None
            attrs[sc.JSONRPC_REQUEST_ID] = (
                opened.id_text if same else id_text(shared.redactor, request_id)
            )
            if weight > 1:
                attrs[sc.HELMET_SAMPLE_WEIGHT] = weight
        part = "error" if is_error else "result"
        parsed = frame.parsed
        if type(parsed) is dict:  # (`recorded_body` of nearly every answer, inlined)
            answer: dict[str, Any] = parsed  # pyright: ignore[reportUnknownVariableType]
            body, text = shared.redactor.body_and_json(answer.get(part))
        else:
            body, text = recorded_body(shared.redactor, frame.body, frame.size, parsed, part)
        if summary.proxy:
            attrs[sc.HELMET_ORIGIN] = sc.ORIGIN_PROXY
        code_text = None
        severity = _INFO
        http_status = _http_status(frame.parsed) if summary.proxy and is_error else None
        if is_error:
            code_text = str(code) if code is not None else "unknown"
            attrs[sc.RPC_RESPONSE_STATUS_CODE] = code_text
            # an HTTP failure of the upstream: its status is the error's type (HTTP semconv)
            attrs[sc.ERROR_TYPE] = str(http_status) if http_status is not None else code_text
            if http_status is not None:
                attrs[sc.HTTP_RESPONSE_STATUS_CODE] = http_status
            severity = _ERROR
        span = None
        label = "unknown"
        tool_error = summary.is_tool_error
        if opened is not None:
            span = opened.server
            server_attributes = opened.server.attributes
            if sc.HELMET_POLICY_ID in server_attributes:  # the answer to a decided request
                for key in _POLICY_KEYS:
                    attrs[key] = server_attributes[key]
            label = opened.kind.label
            self._end(ts, opened, attrs, code, code_text, summary.error_message, tool_error,
                      http_status)  # fmt: skip
            if tool_error and not is_error:
                severity = _ERROR
        elif code_text is not None:
            shared.instruments.count_error(weight, attrs[sc.ERROR_TYPE], label)
        session.errors += (is_error or tool_error) * weight
        if keys is None:
            shared.instruments.count_message(label, attrs, weight)
        else:
            shared.instruments.messages_seen.append((keys, frame.size, weight))
        emit = session.emit if head is None else shared.records.emit  # (a head: a span too)
        emit(sc.EVENT_RESPONSE, ts, span, attrs, body, severity, text, head)
        if is_error:
            error_attrs = dict(attrs)
            if code is not None:
                error_attrs[sc.HELMET_ERROR_CODE] = code
            if summary.error_message is not None:
                message = shared.redactor.scrub_text(summary.error_message)
                error_attrs[sc.HELMET_ERROR_MESSAGE] = message
            emit(sc.EVENT_ERROR, ts, span, error_attrs, body, _ERROR, text,
                         head)  # fmt: skip

    def _end(
        self, ts: int, opened: Operation, attrs: dict[str, Any], code: int | None,
        code_text: str | None, error_message: str | None, tool_error: bool,
        http_status: int | None = None,
    ) -> None:  # fmt: skip
        """End the request's SERVER and CLIENT spans and record its duration and errors
        (``attrs``: the response's record's, which begin with the method and target names)."""
        session = self.session
        shared = session.shared
        instruments = shared.instruments
        uri = opened.server.attributes.get(sc.MCP_RESOURCE_URI)
        if uri is not None:
            attrs[sc.MCP_RESOURCE_URI] = uri
        elapsed = max(ts - opened.started_ns, 0)
        latency_s = elapsed / 1e9
        attrs[sc.HELMET_LATENCY_MS] = milliseconds(elapsed)
        if opened.kind.method == "initialize":
            attrs.update(info_attributes(session.server_info, sc.HELMET_SERVER_INFO_NAME,
                                         sc.HELMET_SERVER_VERSION))  # fmt: skip
        kind = opened.kind
        version = session.protocol_version
        description = None
        duration_key = None
        taken = False  # the spans hold their outcome already
        if code_text is None and not tool_error:  # (read only from here on: shared)
            ended = kind.ended
            if ended is None or ended[2] != version:
                server_attrs, client_attrs = self._outcomes(kind, version)
                ended = (server_attrs, client_attrs, version, attribute_key(server_attrs))
                kind.ended = ended
            server_attrs, client_attrs, _, duration_key = ended
            # A success's outcome is its kind's metric attributes and the protocol version:
            # what the spans began with, unless the session's facts changed since the request.
            taken = opened.generation == self.generation
        else:
            server_attrs, client_attrs = self._outcomes(kind, version)
        if code_text is not None:
            description = error_message or "error"
            error_type = str(http_status) if http_status is not None else code_text
            server_attrs[sc.RPC_RESPONSE_STATUS_CODE] = code_text
            client_attrs[sc.RPC_RESPONSE_STATUS_CODE] = code_text
            client_attrs[sc.ERROR_TYPE] = error_type  # a client sees every code as an error
            if http_status is not None:
                client_attrs[sc.HTTP_RESPONSE_STATUS_CODE] = http_status
            if code not in CALLER_ERROR_CODES or http_status is not None:
                server_attrs[sc.ERROR_TYPE] = error_type
        elif tool_error:
            description = "tool returned isError"
            attrs[sc.ERROR_TYPE] = sc.ERROR_TYPE_TOOL_ERROR
            server_attrs[sc.ERROR_TYPE] = client_attrs[sc.ERROR_TYPE] = sc.ERROR_TYPE_TOOL_ERROR
        shared.spans.finish_call(
            opened.server, opened.client, ts, None if taken else server_attrs, client_attrs,
            description,
        )  # fmt: skip
        weight = opened.weight
        if duration_key is None:
            server_key, client_key = attribute_key(server_attrs), attribute_key(client_attrs)
        else:
            server_key = client_key = duration_key
        failed = sc.ERROR_TYPE in attrs
        # (the durations, their exemplars and helmet.performance: made at `settle`)
        instruments.calls_done.append((
            latency_s, server_key, client_key, opened.server, opened.client, ts, weight,
            kind.span_name, attrs[sc.HELMET_MESSAGE_SIZE], failed,
        ))  # fmt: skip
        if failed:
            tool = attrs.get(sc.GEN_AI_TOOL_NAME)
            instruments.count_error(weight, attrs[sc.ERROR_TYPE], kind.label, tool)

    @staticmethod
    def _outcomes(kind: CallKind, version: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The attributes an ending call's SERVER and CLIENT spans (and durations) start from."""
        server_attrs = dict(kind.metric_attrs)
        if version:
            server_attrs[sc.MCP_PROTOCOL_VERSION] = version
        return server_attrs, dict(server_attrs)

    def cancel(self, request_id: JsonId, reason: str, ts: int) -> None:
        """``notifications/cancelled``: an event on the request, which now expects no
        response."""
        is_str, value = id_key(request_id)
        for direction in (0, 1):
            opened = self.open.get((direction, is_str, value))
            if opened is not None:
                opened.server.events.append(Event(_CANCELLED, ts, {"reason": reason}))

    def abandon(self, ts: int, reason: str) -> int:
        """The session ended: what is still open got no response (unless it was cancelled).

        Each such call also gets a ``helmet.error`` record (``error.type`` ``no_response``), so
        the log records, the store's session counts and ``logs --calls`` say what the trace
        says. Returns how many calls that were (weighted)."""
        session = self.session
        spans = session.shared.spans
        description = f"no response: {reason}"
        failed = 0
        for (direction, _, _), opened in self.open.items():
            cancelled = opened.cancelled
            outcome = {} if cancelled else {sc.ERROR_TYPE: sc.ERROR_TYPE_NO_RESPONSE}
            spans.finish(opened.client, ts, outcome, description)
            spans.finish(opened.server, ts, outcome, description)
            if cancelled:
                continue
            failed += opened.weight
            attrs: dict[str, Any] = {
                sc.HELMET_DIRECTION: sc.DIRECTION_S2C if direction == 0 else sc.DIRECTION_C2S,
                sc.HELMET_MESSAGE_KIND: "error",
                sc.ERROR_TYPE: sc.ERROR_TYPE_NO_RESPONSE,
                sc.HELMET_ERROR_MESSAGE: description,
            }
            for key in (sc.JSONRPC_REQUEST_ID, *_NAMED_KEYS, sc.MCP_RESOURCE_URI):
                value = opened.server.attributes.get(key)
                if value is not None:
                    attrs[key] = value
            if opened.weight > 1:
                attrs[sc.HELMET_SAMPLE_WEIGHT] = opened.weight
            body = {"message": description}
            session.emit(sc.EVENT_ERROR, ts, opened.server, attrs, body, SeverityNumber.ERROR)
        self.open.clear()
        return failed
