"""One session's telemetry: its trace, its records and what the worker knows of it.

A session is one trace with a ``session`` root span (or several linked traces, when a long
session rolls over into a new segment). Every span and log record of the session carries its
``helmet.session.id``, and its ``mcp.session.id`` once the protocol gave it one. The calls of
the session are its `Operations`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import Link as SdkLink
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from helmet_otel import semconv as sc
from helmet_otel.core.verdicts import Decision, Finding
from helmet_otel.protocol.message import JsonId
from helmet_otel.redaction import Redactor
from helmet_otel.store.records import AttributeHead, Link, Span
from helmet_otel.telemetry.frames import (
    CUT,
    NOT_JSON,
    STDERR_LINE_MAX,
    Config,
    End,
    Failed,
    Info,
    Msg,
    Restarted,
    Security,
    Start,
)
from helmet_otel.telemetry.instruments import Instruments
from helmet_otel.telemetry.operations import DIRECTIONS, Operations, decision_attributes
from helmet_otel.telemetry.process_tree import sample_trees
from helmet_otel.telemetry.records import (
    RecordWriter,
    id_text,
    recorded_body,
    scrubbed_info,
    scrubbed_name,
    scrubbed_summary,
)
from helmet_otel.telemetry.server_usage import ServerUsage
from helmet_otel.telemetry.severity import mcp_level_severity
from helmet_otel.telemetry.spans import ERROR, INTERNAL, SpanWriter, segment_link
from helmet_otel.telemetry.stderr_groups import StderrGroup

# network.transport of the client's side of a session, by the session's transport
NETWORK_TRANSPORTS = {"stdio": "pipe", "http": "tcp"}
# (plain ints: a TraceFlags, an int subclass, costs more in every ``&``)
_SAMPLED = int(TraceFlags.SAMPLED)
_NOT_SAMPLED = int(TraceFlags.DEFAULT)
_JSON_IDS = (str, int, float)
_CANCELLED = "notifications/cancelled"
# From a session start's ``upstream``: the client's side of an HTTP session (SERVER spans) and
# the HTTP upstream's (CLIENT spans; ``upstream.network.*`` become ``network.*`` there)
PEER_KEYS = (sc.CLIENT_ADDRESS, sc.CLIENT_PORT, sc.NETWORK_PROTOCOL_NAME)
UPSTREAM_KEYS = (sc.SERVER_ADDRESS, sc.SERVER_PORT)
UPSTREAM_NETWORK = {
    "upstream.network.transport": sc.NETWORK_TRANSPORT,
    "upstream.network.protocol.name": sc.NETWORK_PROTOCOL_NAME,
}


def _pick(
    upstream: dict[str, Any], keys: tuple[str, ...], scrub: Callable[[str], str] | None = None
) -> dict[str, Any]:
    picked = {key: upstream[key] for key in keys if isinstance(upstream.get(key), str | int)}
    if scrub is not None:  # (the peer's address and the like: any text is scrubbed)
        for key, value in picked.items():
            if isinstance(value, str):
                picked[key] = scrub(value)
    return picked


def finding_record(shared: Shared, finding: Finding) -> tuple[dict[str, Any], str]:
    """The attributes and body of a finding's ``helmet.security`` record; counts it."""
    redactor = shared.redactor
    attrs: dict[str, Any] = {}
    for key, value in (finding.attributes or {}).items():  # (a peer's address: text is scrubbed)
        attrs[key] = redactor.scrub_text(value) if isinstance(value, str) else value
    attrs[sc.HELMET_SECURITY_TYPE] = finding.type
    attrs[sc.HELMET_SECURITY_SEVERITY] = finding.severity
    attrs[sc.HELMET_SECURITY_RULE] = finding.rule_id
    attrs[sc.HELMET_SERVER_NAME] = shared.config.service_name
    if finding.tool is not None:  # a name from the traffic
        attrs[sc.GEN_AI_TOOL_NAME] = redactor.scrub_name(finding.tool)
    shared.instruments.security_events.add(
        1, {sc.HELMET_SECURITY_TYPE: finding.type, sc.HELMET_SECURITY_SEVERITY: finding.severity}
    )
    return attrs, redactor.scrub_text(finding.message)


@dataclass(slots=True)
class Shared:
    """What every session of the worker process shares."""

    config: Config
    redactor: Redactor
    instruments: Instruments
    spans: SpanWriter
    records: RecordWriter
    sampler: Sampler
    configuration: object  # the effective configuration, scrubbed (helmet.configuration)


class SessionRecorder:
    def __init__(self, shared: Shared, start: Start) -> None:
        self.shared = shared
        self.key = start.session
        self.session_id = start.session_id
        self.transport = start.transport
        upstream = start.upstream
        transport = upstream.get(sc.NETWORK_TRANSPORT)
        self.network_transport = (
            transport if isinstance(transport, str) else NETWORK_TRANSPORTS.get(start.transport)
        )
        # the client's side (SERVER spans) and the upstream's (CLIENT spans), when over HTTP
        scrub = shared.redactor.scrub_name
        self.peer_attributes = _pick(upstream, PEER_KEYS, scrub)
        self.upstream_attributes = _pick(upstream, UPSTREAM_KEYS, scrub)
        for key, name in UPSTREAM_NETWORK.items():
            value = upstream.get(key)
            if isinstance(value, str):
                self.upstream_attributes[name] = scrub(value)
        self.mcp_session_id: str | None = None
        self.started_ns = start.ts
        self.era = "unknown"
        self.protocol_version: str | None = None
        self.client_info: dict[str, Any] | None = None
        self.server_info: dict[str, Any] | None = None
        self.requests = 0  # what the relay counts, for a session_end the worker must write
        self.errors = 0
        self.messages = 0
        self.segment = 0
        self.trace_flags = _SAMPLED  # the sampler's say on the current segment
        self.root = self._new_root(start.ts, start.trace_id, start.root_span_id, [])
        self.operations = Operations(self)
        # a request's decision and findings, by its SERVER span id, until its record arrives
        self.verdicts: dict[int, tuple[Decision | None, tuple[Finding, ...]]] = {}
        self.ended = False
        self.stderr_lines = StderrGroup()
        self.restarts = 0  # servers that replaced a crashed one
        pid = start.upstream.get("pid")
        # the server process's tree, sampled from /proc (`Recorder.sample_servers`)
        self.usage = ServerUsage(pid, shared.instruments) if isinstance(pid, int) else None
        self._start(start)
        if self.usage is not None:
            for sample in sample_trees([self.usage.pid]).values():
                self.usage.observe(sample)

    def emit(
        self,
        event: str,
        ts: int,
        span: Span | None,
        attributes: dict[str, Any],
        body: Any = None,
        severity: SeverityNumber = SeverityNumber.INFO,
        body_json: str | None = None,
        head: AttributeHead | None = None,
    ) -> None:
        """A record of this session (in the root span unless ``span`` says). ``head``: what
        ``attributes`` begin with (`AttributeHead`), the session's ids included."""
        if head is None:
            attributes[sc.HELMET_SESSION_ID] = self.session_id
            if self.mcp_session_id is not None:
                attributes[sc.MCP_SESSION_ID] = self.mcp_session_id
        self.shared.records.emit(
            event, ts, self.root if span is None else span, attributes, body, severity, body_json,
            head,
        )  # fmt: skip

    def _new_root(self, ts: int, trace_id: int, span_id: int, links: list[Link]) -> Span:
        attributes: dict[str, Any] = {
            sc.HELMET_SESSION_ID: self.session_id,
            sc.HELMET_TRANSPORT: self.transport,
            sc.HELMET_SERVER_NAME: self.shared.config.service_name,
            sc.HELMET_TRACE_SEGMENT: self.segment,
        }
        if self.network_transport is not None:
            attributes[sc.NETWORK_TRANSPORT] = self.network_transport
        attributes.update(self.peer_attributes)
        attributes.update(_pick(self.upstream_attributes, UPSTREAM_KEYS))
        if self.mcp_session_id is not None:
            attributes[sc.MCP_SESSION_ID] = self.mcp_session_id
        if self.protocol_version:
            attributes[sc.MCP_PROTOCOL_VERSION] = self.protocol_version
        sdk_links = [  # (once per trace segment: the sampler takes the SDK's links)
            SdkLink(SpanContext(link.trace_id, link.span_id, link.remote), link.attributes)
            for link in links
        ]
        decision = self.shared.sampler.should_sample(
            None, trace_id, sc.SPAN_SESSION, SpanKind.INTERNAL, attributes, sdk_links
        )
        self.trace_flags = _SAMPLED if decision.decision.is_sampled() else _NOT_SAMPLED
        return self.shared.spans.new(
            sc.SPAN_SESSION, trace_id, span_id, self.trace_flags, 0, INTERNAL, ts, attributes,
            links,
        )  # fmt: skip

    def _start(self, start: Start) -> None:
        shared = self.shared
        config = shared.config
        redactor = shared.redactor
        upstream = start.upstream
        command = upstream.get("command")
        command_text = None
        if isinstance(command, list):
            text = " ".join(str(a) for a in cast(list[object], command))
            command_text = redactor.scrub_text(text)
            self.root.attributes[sc.HELMET_SERVER_COMMAND] = command_text
        pid = upstream.get("pid")
        if isinstance(pid, int):
            self.root.attributes[sc.HELMET_SERVER_PID] = pid
        url = upstream.get("url")
        url_text = redactor.scrub_text(url) if isinstance(url, str) else None
        if url_text is not None:
            self.root.attributes[sc.HELMET_SERVER_URL] = url_text
        shared.instruments.sessions_active.add(1)
        if start.resumed:  # a new worker takes over: the start was recorded by the first
            return
        start_attrs: dict[str, Any] = {
            sc.HELMET_SERVER_NAME: config.service_name,
            sc.HELMET_TRANSPORT: self.transport,
            sc.HELMET_PROXY_PID: config.proxy_pid,
            sc.HELMET_PROXY_HOST: config.proxy_host,
        }
        if command_text is not None:
            start_attrs[sc.HELMET_SERVER_COMMAND] = command_text
        if url_text is not None:
            start_attrs[sc.HELMET_SERVER_URL] = url_text
        start_attrs.update(self.peer_attributes)
        start_attrs.update(_pick(self.upstream_attributes, UPSTREAM_KEYS))
        self.emit(sc.EVENT_SESSION_START, start.ts, None, start_attrs)
        self.emit(sc.EVENT_CONFIGURATION, start.ts, None, {}, shared.configuration)
        if isinstance(pid, int):
            init_attrs: dict[str, Any] = {sc.HELMET_SERVER_PID: pid}
            if command_text is not None:
                init_attrs[sc.HELMET_SERVER_COMMAND] = command_text
            body = {"cwd": redactor.scrub_text(str(upstream.get("cwd", "")))}
            self.emit(sc.EVENT_INITIALIZATION, start.ts, None, init_attrs, body)

    def roll_over(self, ts: int, trace_id: int, root_span_id: int) -> None:
        """The session goes on in a new trace, linked to the one it leaves."""
        previous = self.root
        previous.attributes[sc.HELMET_SESSION_REQUESTS] = self.messages
        self.shared.spans.end(previous, ts)
        self.segment += 1
        self.root = self._new_root(ts, trace_id, root_span_id, [segment_link(previous)])

    def message(self, frame: Msg) -> None:
        summary = frame.summary
        kind = summary.kind
        self.messages += 1
        if kind == "request":  # (its names are scrubbed once per call kind: `Operations`)
            self.requests += frame.weight
            self.operations.request(frame)
            return
        if kind == "response" and summary.error_message is None:
            # (no text to scrub: a response's summary has no method, target or URI)
            self.operations.response(frame)
            return
        if (
            summary.method is not None
            or summary.target is not None
            or summary.resource_uri is not None
            or summary.error_message is not None
        ):
            clean = scrubbed_summary(self.shared.redactor, summary)
            if clean is not summary:
                frame = frame._replace(summary=clean)
        if kind == "response" or kind == "error":
            self.operations.response(frame)
        elif kind == "notification":
            self._notification(frame, self.message_attributes(frame))
        else:
            self._other(frame, self.message_attributes(frame))

    def message_attributes(self, frame: Msg) -> dict[str, Any]:
        """The attributes a message's record begins with when no call kind's head gives them."""
        summary = frame.summary
        attrs: dict[str, Any] = {
            sc.HELMET_DIRECTION: DIRECTIONS[frame.s2c],
            sc.HELMET_MESSAGE_KIND: summary.kind,
            sc.HELMET_MESSAGE_SIZE: frame.size,
        }
        if summary.id is not None:
            attrs[sc.JSONRPC_REQUEST_ID] = id_text(self.shared.redactor, summary.id)
        weight = frame.weight
        if weight > 1:
            attrs[sc.HELMET_SAMPLE_WEIGHT] = weight
        return attrs

    def _other(self, frame: Msg, attrs: dict[str, Any]) -> None:
        """A batch (recorded as a request), or something that is not JSON-RPC."""
        instruments = self.shared.instruments
        weight = frame.weight
        if frame.summary.kind == "batch":
            instruments.count_message("batch", attrs, weight)
            body, text = recorded_body(
                self.shared.redactor, frame.body, frame.size, frame.parsed, ""
            )
            self.emit(sc.EVENT_REQUEST, frame.ts, None, attrs, body, body_json=text)
            return
        attrs[sc.ERROR_TYPE] = "parse_error"
        instruments.count_message("unknown", attrs, weight)
        instruments.count_error(weight, "parse_error", "unknown")
        parsed = CUT if frame.parsed is CUT else NOT_JSON
        body, text = recorded_body(self.shared.redactor, frame.body, frame.size, parsed, "")
        self.emit(sc.EVENT_ERROR, frame.ts, None, attrs, body, SeverityNumber.WARN, text)

    def _notification(self, frame: Msg, attrs: dict[str, Any]) -> None:
        method = frame.summary.method or ""
        attrs[sc.MCP_METHOD_NAME] = method
        severity = SeverityNumber.INFO
        parsed = frame.parsed
        message = cast(dict[str, Any], parsed) if isinstance(parsed, dict) else {}
        params: object = message.get("params")
        if isinstance(params, dict):
            fields = cast(dict[str, Any], params)
            level = fields.get("level")
            request_id: object = fields.get("requestId")
            if method == "notifications/message" and isinstance(level, str):
                attrs[sc.HELMET_LOG_LEVEL] = self.shared.redactor.scrub_name(level)
                severity = mcp_level_severity(level)
            elif method in (_CANCELLED, "notifications/progress") and request_id is not None:
                attrs[sc.JSONRPC_REQUEST_ID] = id_text(self.shared.redactor, request_id)
                if method == _CANCELLED and type(request_id) in _JSON_IDS:
                    reason = self.shared.redactor.scrub_text(str(fields.get("reason", "")))
                    self.operations.cancel(cast(JsonId, request_id), reason, frame.ts)
        shared = self.shared
        shared.instruments.count_message(
            shared.instruments.method_label(method), attrs, frame.weight
        )
        body, text = recorded_body(shared.redactor, frame.body, frame.size, frame.parsed, "params")
        self.emit(sc.EVENT_NOTIFICATION, frame.ts, None, attrs, body, severity, text)

    def security(self, frame: Security) -> None:
        """A policy's decision and the findings on a message (handed over before it): counted
        now; recorded with the request they concern when it is traced, else at once."""
        instruments = self.shared.instruments
        if frame.policy is not None:
            body = self.shared.redactor.scrub({"policy": frame.policy})
            self.emit(sc.EVENT_CONFIGURATION, frame.ts, None, {}, body)
        decision = frame.decision
        if decision is not None and decision.tool is not None:  # a name from the traffic
            decision = decision._replace(tool=self.shared.redactor.scrub_name(decision.tool))
        if decision is not None:
            instruments.policy_decisions.add(1, decision_attributes(decision))
        if frame.server_span_id and (decision is not None or frame.findings):
            self.verdicts[frame.server_span_id] = (decision, frame.findings)
            return
        for finding in frame.findings:
            self.finding(finding, frame.ts, None)

    def finding(self, finding: Finding, ts: int, span: Span | None) -> None:
        """A ``helmet.security`` record (in ``span``: its request's, if any)."""
        attrs, message = finding_record(self.shared, finding)
        self.emit(sc.EVENT_SECURITY, ts, span, attrs, message, SeverityNumber.WARN)

    def info(self, info: Info) -> None:
        """What the relay learned of the session (era, protocol version, client and server,
        the protocol's session id)."""
        redactor = self.shared.redactor
        self.era = info.era or self.era
        self.protocol_version = scrubbed_name(redactor, info.protocol_version)
        self.client_info = scrubbed_info(redactor, info.client_info)
        self.server_info = scrubbed_info(redactor, info.server_info)
        if info.mcp_session_id is not None:  # chosen by the server: it could be anything
            self.mcp_session_id = redactor.scrub_text(info.mcp_session_id)
            self.root.attributes[sc.MCP_SESSION_ID] = self.mcp_session_id
        if self.protocol_version:
            self.root.attributes[sc.MCP_PROTOCOL_VERSION] = self.protocol_version
        self.operations.forget_kinds()

    def stderr(self, ts: int, line: bytes) -> None:
        """A line the server wrote to stderr: gathered with the lines that belong with it
        (`StderrGroup`), written as one record."""
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text.strip():
            return
        # the relay hands over the first STDERR_LINE_MAX bytes of a line: a longer one is cut,
        # and is scrubbed as cut before it joins its group (a secret may be cut in two)
        if len(line) >= STDERR_LINE_MAX:
            text = self.shared.redactor.scrub_text(text, truncated=True)
        self._stderr_record(self.stderr_lines.add(ts, text))

    def flush_stderr(self) -> None:
        """Write the stderr record being gathered (nothing joined it in time, or the end)."""
        self._stderr_record(self.stderr_lines.take())

    def _stderr_record(self, record: tuple[int, str, SeverityNumber] | None) -> None:
        if record is not None:
            ts, text, severity = record
            scrubbed = self.shared.redactor.scrub_text(text)
            self.emit(sc.EVENT_SERVER_STDERR, ts, None, {}, scrubbed, severity)

    def failed(self, failed: Failed) -> None:
        """The server could not be started."""
        reason = self.shared.redactor.scrub_text(failed.reason)
        attrs = {sc.ERROR_TYPE: "upstream_start_failed", sc.HELMET_ERROR_MESSAGE: reason}
        self.emit(sc.EVENT_ERROR, failed.ts, None, attrs, reason, SeverityNumber.ERROR)
        self.shared.instruments.count_error(1, "upstream_start_failed", "unknown")

    def restarted(self, frame: Restarted) -> None:
        """A new server replaced a crashed one: a ``helmet.initialization`` record that says so;
        the session's resource figures go on with the new process."""
        redactor = self.shared.redactor
        self.flush_stderr()  # the crashed server's last lines come first
        self.restarts = frame.number
        attrs: dict[str, Any] = {
            sc.HELMET_RESTART: True,
            sc.HELMET_RESTART_COUNT: frame.number,
            sc.HELMET_ERA: self.era,
        }
        pid = frame.upstream.get("pid")
        if isinstance(pid, int):
            attrs[sc.HELMET_SERVER_PID] = pid
            if self.usage is None:
                self.usage = ServerUsage(pid, self.shared.instruments)
            else:
                self.usage.next_child(pid, frame.usage)
        command = self.root.attributes.get(sc.HELMET_SERVER_COMMAND)
        if command is not None:
            attrs[sc.HELMET_SERVER_COMMAND] = command
        body: dict[str, Any] = {
            "cwd": redactor.scrub_text(str(frame.upstream.get("cwd", ""))),
            "previous_exit": redactor.scrub_text(frame.previous),
            "replayed_initialize": frame.replayed,
        }
        severity = SeverityNumber.WARN
        if frame.failure is not None:
            failure = redactor.scrub_text(frame.failure)
            body["failure"] = failure
            attrs[sc.HELMET_ERROR_MESSAGE] = failure
            severity = SeverityNumber.ERROR
        self.emit(sc.EVENT_INITIALIZATION, frame.ts, None, attrs, body, severity)

    def end_unannounced(self, ts: int, reason: str) -> None:
        """End a session the relay never said had ended, from what the worker knows of it."""
        self.end(
            End(
                self.key, ts, None, reason, self.requests, self.errors, {}, self.era,
                self.protocol_version, self.client_info, self.server_info,
            )
        )  # fmt: skip

    def end(self, end: End) -> None:
        if self.ended:
            return
        self.ended = True
        redactor = self.shared.redactor
        self.flush_stderr()
        ts = end.ts
        reason = redactor.scrub_text(end.exit_reason or "session ended")
        for _decision, findings in self.verdicts.values():  # requests never recorded
            for finding in findings:
                self.finding(finding, ts, None)
        self.verdicts.clear()
        unanswered = self.operations.abandon(ts, reason)
        status = end.exit_status
        duration_s = max(ts - self.started_ns, 0) / 1e9
        version = scrubbed_name(redactor, end.protocol_version) or self.protocol_version
        attrs: dict[str, Any] = {
            sc.HELMET_SESSION_DURATION_MS: round(duration_s * 1000, 3),
            sc.HELMET_SESSION_REQUESTS: end.requests,
            sc.HELMET_SESSION_ERRORS: end.errors + unanswered,
            sc.HELMET_EXIT_REASON: reason,
            sc.HELMET_ERA: end.era,
            sc.HELMET_SERVER_NAME: self.shared.config.service_name,
        }
        if status is not None:
            attrs[sc.HELMET_EXIT_STATUS] = status
        if self.restarts:
            attrs[sc.HELMET_RESTART_COUNT] = self.restarts
        if version:
            attrs[sc.MCP_PROTOCOL_VERSION] = version
        client = scrubbed_info(redactor, end.client_info) or self.client_info or {}
        server = scrubbed_info(redactor, end.server_info) or self.server_info or {}
        for key, source, field_name in (
            (sc.HELMET_CLIENT_NAME, client, "name"),
            (sc.HELMET_CLIENT_VERSION, client, "version"),
            (sc.HELMET_SERVER_INFO_NAME, server, "name"),
            (sc.HELMET_SERVER_VERSION, server, "version"),
        ):
            value = source.get(field_name)
            if value is not None:
                attrs[key] = str(value)
        counts = {redactor.scrub_name(m): n for m, n in end.method_counts.items()}
        body: dict[str, Any] = {"method_counts": counts}
        if self.usage is not None:
            self.usage.finish(end.usage)
            attrs.update(self.usage.attributes())
            body["server"] = self.usage.figures()
        crashed = status not in (None, 0) and not reason.startswith(sc.NORMAL_END_REASONS)
        self.root.attributes.update(attrs)
        if crashed:
            self.root.status = ERROR
            self.root.description = reason
        self.shared.spans.end(self.root, ts)
        instruments = self.shared.instruments
        session_metric: dict[str, Any] = {}
        if self.network_transport is not None:
            session_metric[sc.NETWORK_TRANSPORT] = self.network_transport
        if version:
            session_metric[sc.MCP_PROTOCOL_VERSION] = version
        if crashed:
            session_metric[sc.ERROR_TYPE] = "server_exit"
        instruments.session_duration.record(duration_s, session_metric)
        instruments.sessions_active.add(-1)
        self.emit(
            sc.EVENT_SESSION_END, ts, None, attrs, body,
            SeverityNumber.ERROR if crashed else SeverityNumber.INFO,
        )  # fmt: skip
