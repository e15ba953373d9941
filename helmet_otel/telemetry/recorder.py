"""Turn the relay's frames into spans, log records and metrics (runs in the worker process).

One proxy process carries any number of sessions. Each is a `SessionRecorder`, keyed by the
session key its frames carry: one trace per session (a ``session`` root span; for every
request a SERVER span ``{mcp.method.name} {target}`` with a CLIENT child for the upstream
call), its own records and its own open requests. What belongs to the process rather than a
session lives here: the sinks, the metric instruments, ``helmet.performance`` and
``helmet.proxy_close``.

Spans and log records are built as plain data (``helmet_otel.store.records``) from what the
relay measured: the relay chose the ids and the times, so there is no live span to keep, and
the SDK's tracer, logger and readable types would only be walked again by each sink. The store
and `OtlpEncoder` read them as they are. The sampler from ``OTEL_TRACES_SAMPLER`` decides once
per trace segment.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from opentelemetry._logs import SeverityNumber

from helmet_otel import semconv as sc
from helmet_otel.redaction import RedactionConfig, Redactor
from helmet_otel.store.records import Origin
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
    Restarted,
    Security,
    Segment,
    Start,
    Stderr,
)
from helmet_otel.telemetry.instruments import Instruments
from helmet_otel.telemetry.pipeline import Pipeline
from helmet_otel.telemetry.process_tree import sample_trees
from helmet_otel.telemetry.records import RecordWriter
from helmet_otel.telemetry.session_recorder import SessionRecorder, Shared, finding_record
from helmet_otel.telemetry.spans import SpanWriter
from helmet_otel.telemetry.stderr_groups import GAP_NS


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
        service = pipeline.resource.attributes.get(sc.SERVICE_NAME)
        origin = Origin(
            pipeline.resource, pipeline.scope, None if service is None else str(service)
        )
        # (without a metric exporter nothing reads the messages' and calls' metrics)
        instruments = Instruments(pipeline.metrics, pipeline.metric_export is not None)
        self.shared = Shared(
            config, redactor, instruments, SpanWriter(pipeline, origin),
            RecordWriter(pipeline, origin), pipeline.sampler, redactor.scrub(configuration),
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
        self.close_ts = 0
        self.close_reason = ""

    def handle(self, frame: Frame) -> None:
        if type(frame) is Msg:  # (nearly every frame)
            session = self.sessions.get(frame.session)
            (session or self._session(frame.session)).message(frame)
            return
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
            case Restarted():
                self._session(frame.session).restarted(frame)
            case Close():
                self.close(frame.ts, frame.reason)
            case Config():
                pass  # the worker took the first; there is no other

    def gather(self) -> None:
        """Until `release`, the records and spans the frames make are kept and then handed to
        each sink queue at once (the worker does this per read of its pipe: a queue's ``put``
        per record cost more than the record's list append). Urgent ones go at once."""
        self.shared.records.gather()
        self.shared.spans.gather()

    def release(self) -> None:
        """Hand what was gathered to the queues; make the metric measurements the read
        deferred (`Instruments.settle`)."""
        self.shared.spans.release()
        self.shared.records.release()
        self.shared.instruments.settle()

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

    def _emit(
        self, event: str, ts: int, body: dict[str, Any], attrs: dict[str, Any] | None = None
    ) -> None:
        """A record of the process."""
        if self.owner is not None:
            self.owner.emit(event, ts, None, attrs or {}, body)
        else:
            self.shared.records.emit(event, ts, None, attrs or {}, body)

    def stderr_due(self) -> int | None:
        """When the next stderr record being gathered is due (ns since the epoch), if any."""
        due = [
            s.stderr_lines.last_ts + GAP_NS for s in self.sessions.values() if s.stderr_lines.lines
        ]
        return min(due) if due else None

    def flush_stderr(self, now_ns: int) -> None:
        """Write the stderr records nothing joined within the gap."""
        for session in self.sessions.values():
            if session.stderr_lines.due(now_ns):
                session.flush_stderr()

    def sample_servers(self) -> None:
        """Sample every live session's server process tree (one pass over /proc)."""
        usages = {s.usage.pid: s.usage for s in self.sessions.values() if s.usage is not None}
        for pid, sample in sample_trees(usages).items():
            usages[pid].observe(sample)

    def _process_findings(self, frame: Security) -> None:
        """Findings of the process (an auth failure before any session): records of no
        session and no trace, under the proxy's own identity (its pid and host)."""
        config = self.shared.config
        for finding in frame.findings:
            attrs, message = finding_record(self.shared, finding)
            attrs[sc.HELMET_PROXY_PID] = config.proxy_pid
            attrs[sc.HELMET_PROXY_HOST] = config.proxy_host
            self.shared.records.emit(
                sc.EVENT_SECURITY, frame.ts, None, attrs, message, SeverityNumber.WARN
            )

    def _take_drops(self) -> dict[str, int]:
        drops = self.pipeline.drops.take()  # already in helmet.telemetry.dropped
        for reason, count in drops.items():
            self.dropped_total[reason] += count
        return drops

    def performance(self, ts: int | None = None) -> None:
        """``helmet.performance``: the interval's statistics, and what each session's server
        uses (a stdio proxy's one session: in the same record; `serve`: a record per session)."""
        self.sample_servers()
        ts = ts or time.time_ns()
        body = self.shared.instruments.interval()
        body["sessions"] = len(self.sessions)
        body["open_requests"] = sum(len(s.operations.open) for s in self.sessions.values())
        body["dropped"] = self._take_drops()
        owner = self.owner
        if owner is not None and owner.usage is not None:
            body["server"] = owner.usage.figures()
            self._emit(sc.EVENT_PERFORMANCE, ts, body, owner.usage.attributes())
            return
        self._emit(sc.EVENT_PERFORMANCE, ts, body)
        for session in self.sessions.values():
            if session.usage is not None:
                session.emit(
                    sc.EVENT_PERFORMANCE, ts, None, session.usage.attributes(),
                    {"server": session.usage.figures()},
                )  # fmt: skip

    def close(self, ts: int, reason: str) -> None:
        """End every session still open (the relay never said how): the process is ending.
        Its ``helmet.proxy_close`` is written by `proxy_close`, once its sinks are drained."""
        if self.closed:
            return
        self.closed = True
        self.close_ts, self.close_reason = ts, reason
        for session in self.sessions.values():
            session.end_unannounced(ts, reason)
        self.sessions.clear()
        self.performance(ts)

    def proxy_close(self) -> dict[str, int]:
        """``helmet.proxy_close`` with every drop counted so far; returns those counts."""
        self._take_drops()
        dropped = dict(self.dropped_total)
        body = {"reason": self.close_reason, "dropped": dropped,
                "sinks": list(self.pipeline.sinks)}  # fmt: skip
        self._emit(sc.EVENT_PROXY_CLOSE, self.close_ts, body)
        return dropped

    def final_drops(self) -> dict[str, int]:
        """Every drop of the process, the last sink's drain included."""
        self._take_drops()
        return dict(self.dropped_total)
