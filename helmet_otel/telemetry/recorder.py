"""Turn the relay's frames into spans, log records and metrics (runs in the worker process).

One proxy process carries any number of sessions. Each is a `SessionRecorder`, keyed by the
session key its frames carry: one trace per session (a ``session`` root span; for every
request a SERVER span ``{mcp.method.name} {target}`` with a CLIENT child for the upstream
call), its own records and its own open requests. What belongs to the process rather than a
session lives here: the sinks, the metric instruments, ``helmet.performance`` and
``helmet.proxy_close``.

Spans and log records are built directly as the SDK's readable types (`ReadableSpan`,
`ReadableLogRecord`) from what the relay measured: the relay chose the ids and the times, so
there is no live span to keep, and skipping the SDK's tracer and logger saves most of the
per-record cost. The sampler from ``OTEL_TRACES_SAMPLER`` decides once per trace segment.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context

from helmet_otel import semconv as sc
from helmet_otel.redaction import RedactionConfig, Redactor
from helmet_otel.telemetry.frames import (
    PROCESS,
    Close,
    Config,
    Dropped,
    End,
    Failed,
    Frame,
    Info,
    Msg,
    Security,
    Segment,
    Start,
    Stderr,
)
from helmet_otel.telemetry.instruments import Instruments
from helmet_otel.telemetry.pipeline import Pipeline
from helmet_otel.telemetry.records import RecordWriter
from helmet_otel.telemetry.session_recorder import SessionRecorder, Shared, finding_record
from helmet_otel.telemetry.spans import SpanWriter

_NO_TRACE = Context()


class Recorder:
    def __init__(self, pipeline: Pipeline, config: Config) -> None:
        options = config.options
        redactor = Redactor(
            RedactionConfig(
                capture=options.capture,
                max_body=options.max_body,
                extra=tuple(options.redact),
            )
        )
        configuration = {**options.recorded(), "service_name": config.service_name}
        self.shared = Shared(
            config, redactor, Instruments(pipeline.metrics), SpanWriter(pipeline),
            RecordWriter(pipeline), pipeline.sampler, redactor.scrub(configuration),
        )  # fmt: skip
        # Exported as 0 from the start: a series that starts at 1 has no increase to
        # Prometheus, and the bundled alert rules fire on the first drift or auth failure.
        alerted = [("tool_drift", "high")]
        if config.transport == "http":
            alerted += [("auth_failure", severity) for severity in ("low", "medium", "high")]
        for kind, severity in alerted:
            self.shared.instruments.security_events.add(
                0, {sc.HELMET_SECURITY_TYPE: kind, sc.HELMET_SECURITY_SEVERITY: severity}
            )
        self.pipeline = pipeline
        self.sessions: dict[int, SessionRecorder] = {}
        # A stdio proxy is one session: its own records are that session's too.
        self.owner: SessionRecorder | None = None
        self.dropped_total: defaultdict[str, int] = defaultdict(int)
        self.closed = False

    def handle(self, frame: Frame) -> None:
        match frame:  # the frames in the order of how often they come
            case Msg():
                self._session(frame.session).message(frame)
            case Info():
                self._session(frame.session).info(frame)
            case Stderr():
                self._session(frame.session).stderr(frame.ts, frame.line)
            case Segment():
                self._session(frame.session).roll_over(frame.ts, frame.trace_id, frame.root_span_id)
            case Security():
                if frame.session == PROCESS:
                    self._process_findings(frame)
                else:
                    self._session(frame.session).security(frame)
            case Dropped():
                self.pipeline.drops.add(frame.reason, frame.count, quiet=True)  # the relay said
            case Start():
                self._start(frame)
            case End():
                self._session(frame.session).end(frame)
                del self.sessions[frame.session]
            case Failed():
                self._session(frame.session).failed(frame)
            case Close():
                self.close(frame.ts, frame.reason)
            case Config():
                pass  # the worker took the first; there is no other

    def _session(self, key: int) -> SessionRecorder:
        session = self.sessions.get(key)
        if session is None:
            raise LookupError(f"a frame for session {key}, which has not started or has ended")
        return session

    def _start(self, start: Start) -> None:
        if start.session in self.sessions:
            raise ValueError(f"session {start.session} started twice")
        session = SessionRecorder(self.shared, start)
        self.sessions[start.session] = session
        if self.shared.config.transport == "stdio":
            self.owner = session

    def _emit(self, event: str, ts: int, body: dict[str, Any]) -> None:
        """A record of the process."""
        if self.owner is not None:
            self.owner.emit(event, ts, None, {}, body)
        else:
            self.shared.records.emit(event, ts, _NO_TRACE, {}, body)

    def _process_findings(self, frame: Security) -> None:
        """Findings of the process (an auth failure before any session): records of no
        session and no trace, under the proxy's own identity (its pid and host)."""
        config = self.shared.config
        for finding in frame.findings:
            attrs, message = finding_record(self.shared, finding)
            attrs[sc.HELMET_PROXY_PID] = config.proxy_pid
            attrs[sc.HELMET_PROXY_HOST] = config.proxy_host
            self.shared.records.emit(
                sc.EVENT_SECURITY, frame.ts, _NO_TRACE, attrs, message, SeverityNumber.WARN
            )

    def _take_drops(self) -> dict[str, int]:
        drops = self.pipeline.drops.take()  # already in helmet.telemetry.dropped
        for reason, count in drops.items():
            self.dropped_total[reason] += count
        return drops

    def performance(self, ts: int | None = None) -> None:
        body = self.shared.instruments.interval()
        body["sessions"] = len(self.sessions)
        body["open_requests"] = sum(len(s.operations.open) for s in self.sessions.values())
        body["dropped"] = self._take_drops()
        self._emit(sc.EVENT_PERFORMANCE, ts or time.time_ns(), body)

    def close(self, ts: int, reason: str) -> None:
        """End every session still open (the relay never said how), then the process."""
        if self.closed:
            return
        self.closed = True
        for session in self.sessions.values():
            session.end_unannounced(ts, reason)
        self.sessions.clear()
        self.performance(ts)
        body = {
            "reason": reason,
            "dropped": dict(self.dropped_total),
            "sinks": list(self.pipeline.sinks),
        }
        self._emit(sc.EVENT_PROXY_CLOSE, ts, body)
