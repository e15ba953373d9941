"""Records shaped like the telemetry worker's, fed through the real OTel SDK into a store.

Used in-process by the tests and as a writer process:
``python -m tests.store.scenario write --store PATH --prefix P --sessions N --calls C``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from helmet_otel import semconv as sc
from helmet_otel.store import Store, StoreLogExporter, StoreSpanExporter

BASE_NS = 1_795_000_000_000_000_000  # 2026-11-18T08:26:40Z
MS = 1_000_000
SECRET = "sk-live-51HqLyjWDarjtT1zdp7dcXYZ"  # what the (upstream) redaction removed
MARKER = "[REDACTED:api_key]"


@dataclass
class Rec:
    ts: int
    event: str
    attrs: dict[str, object]
    body: object = None
    severity: SeverityNumber = SeverityNumber.INFO
    span_id: int = 0


@dataclass
class Sp:
    name: str
    kind: SpanKind
    span_id: int
    parent: int | None
    start: int
    end: int
    attrs: dict[str, object] = field(default_factory=dict[str, object])
    error: str | None = None


@dataclass
class Session:
    session_id: str
    service: str
    trace_id: int
    records: list[Rec]
    spans: list[Sp]


def everything_session(
    session_id: str = "s-everything-0001",
    *,
    base_ns: int = BASE_NS,
    service: str = "everything",
    pid: int = 4242,
    host: str = "devbox",
    end: bool = True,
    trace_id: int = 0x0AF7651916CD43DD8448EB211C80319C,
) -> Session:
    """One complete stdio session: handshake, two tool calls (one failing), a bad prompt."""
    sid = {sc.HELMET_SESSION_ID: session_id}
    t = base_ns
    root = 0x1000_0000_0000_0001
    recs: list[Rec] = [
        Rec(
            t,
            sc.EVENT_SESSION_START,
            {
                **sid,
                sc.HELMET_SERVER_NAME: service,
                sc.HELMET_SERVER_COMMAND: "python server.py",
                sc.HELMET_TRANSPORT: "stdio",
                sc.HELMET_PROXY_PID: pid,
                sc.HELMET_PROXY_HOST: host,
            },
            span_id=root,
        ),
    ]
    spans: list[Sp] = []

    def call(
        n: int,
        at: int,
        method: str,
        target: str | None,
        latency_ms: float,
        params: object,
        result: object,
        *,
        error_type: str | None = None,
        status_code: str | None = None,
        extra_error: bool = False,
        c2s: dict[str, object] | None = None,
        s2c: dict[str, object] | None = None,
    ) -> None:
        server_span = 0x2000_0000_0000_0000 + n
        client_span = 0x3000_0000_0000_0000 + n
        common: dict[str, object] = {
            **sid,
            sc.MCP_METHOD_NAME: method,
            sc.JSONRPC_REQUEST_ID: str(n),
        }
        if target is not None:
            key = (
                sc.GEN_AI_TOOL_NAME
                if method == "tools/call"
                else sc.GEN_AI_PROMPT_NAME
                if method == "prompts/get"
                else sc.MCP_RESOURCE_URI
            )
            common[key] = target
        recs.append(
            Rec(
                at,
                sc.EVENT_REQUEST,
                {
                    **common,
                    sc.HELMET_DIRECTION: sc.DIRECTION_C2S,
                    sc.HELMET_MESSAGE_KIND: "request",
                    sc.HELMET_MESSAGE_SIZE: 100 + n,
                    **(c2s or {}),
                },
                params,
                span_id=server_span,
            )
        )
        done = at + int(latency_ms * MS)
        kind = (
            "error" if status_code is not None else "response"
        )  # a JSON-RPC error, as the worker says
        failure: dict[str, object] = {}
        if error_type is not None:
            failure[sc.ERROR_TYPE] = error_type
        if status_code is not None:
            failure[sc.RPC_RESPONSE_STATUS_CODE] = status_code
        recs.append(
            Rec(
                done,
                sc.EVENT_RESPONSE,
                {
                    **common,
                    sc.HELMET_DIRECTION: sc.DIRECTION_S2C,
                    sc.HELMET_MESSAGE_KIND: kind,
                    sc.HELMET_MESSAGE_SIZE: 200 + n,
                    sc.HELMET_LATENCY_MS: latency_ms,
                    **failure,
                    **(s2c or {}),
                },
                result,
                severity=SeverityNumber.ERROR if failure else SeverityNumber.INFO,
                span_id=server_span,
            )
        )
        if extra_error:
            recs.append(
                Rec(
                    done,
                    sc.EVENT_ERROR,
                    {
                        **common,
                        sc.HELMET_DIRECTION: sc.DIRECTION_S2C,
                        sc.HELMET_MESSAGE_KIND: kind,
                        sc.HELMET_MESSAGE_SIZE: 200 + n,
                        sc.HELMET_LATENCY_MS: latency_ms,
                        sc.HELMET_ERROR_CODE: -32602,
                        **failure,
                    },
                    result,
                    severity=SeverityNumber.ERROR,
                    span_id=server_span,
                )
            )
        name = f"{method} {target}" if target else method
        span_attrs: dict[str, object] = {
            k: v for k, v in common.items() if k != sc.HELMET_SESSION_ID
        }
        span_attrs[sc.HELMET_SESSION_ID] = session_id
        spans.append(Sp(name, SpanKind.SERVER, server_span, root, at, done, span_attrs, error_type))
        spans.append(
            Sp(
                name,
                SpanKind.CLIENT,
                client_span,
                server_span,
                at + MS // 10,
                done - MS // 10,
                span_attrs,
                error_type,
            )
        )

    call(
        0,
        t + 10 * MS,
        "initialize",
        None,
        2.5,
        {
            "protocolVersion": "2025-11-25",
            "clientInfo": {"name": "claude-code", "version": "2.1.0"},
        },
        {
            "protocolVersion": "2025-11-25",
            "serverInfo": {"name": "everything-server", "version": "1.4.0"},
        },
        c2s={sc.HELMET_CLIENT_NAME: "claude-code", sc.HELMET_CLIENT_VERSION: "2.1.0"},
        s2c={sc.HELMET_SERVER_INFO_NAME: "everything-server", sc.HELMET_SERVER_VERSION: "1.4.0"},
    )
    recs.append(
        Rec(
            t + 15 * MS,
            sc.EVENT_NOTIFICATION,
            {
                **sid,
                sc.HELMET_DIRECTION: sc.DIRECTION_C2S,
                sc.HELMET_MESSAGE_KIND: "notification",
                sc.MCP_METHOD_NAME: "notifications/initialized",
                sc.HELMET_MESSAGE_SIZE: 54,
            },
            span_id=root,
        )
    )
    call(
        1,
        t + 100 * MS,
        "tools/call",
        "search",
        120.5,
        {"name": "search", "arguments": {"query": "weather in Paris", "api_key": MARKER}},
        {"content": [{"type": "text", "text": "Sunny, 21°C\nlight wind"}], "isError": False},
    )
    call(
        2,
        t + 300 * MS,
        "tools/call",
        "broken",
        3.25,
        {"name": "broken", "arguments": {}},
        {"content": [{"type": "text", "text": "boom"}], "isError": True},
        error_type=sc.ERROR_TYPE_TOOL_ERROR,
    )
    recs.append(
        Rec(
            t + 310 * MS,
            sc.EVENT_SERVER_STDERR,
            {**sid},
            "warning: cache miss for key=42",
            severity=SeverityNumber.WARN,
            span_id=root,
        )
    )
    call(
        3,
        t + 400 * MS,
        "prompts/get",
        "greet",
        1.0,
        {"name": "greet", "arguments": {"who": "world"}},
        {"code": -32602, "message": "Unknown prompt: greet"},
        error_type="-32602",
        status_code="-32602",
        extra_error=True,
    )
    end_ts = t + 1500 * MS
    if end:
        recs.append(
            Rec(
                end_ts,
                sc.EVENT_SESSION_END,
                {
                    **sid,
                    sc.HELMET_SESSION_DURATION_MS: 1500.0,
                    sc.HELMET_SESSION_REQUESTS: 4,
                    sc.HELMET_SESSION_ERRORS: 2,
                    sc.HELMET_EXIT_STATUS: 0,
                    sc.HELMET_EXIT_REASON: "client closed stdin",
                    sc.HELMET_CLIENT_NAME: "claude-code",
                    sc.HELMET_CLIENT_VERSION: "2.1.0",
                    sc.HELMET_SERVER_INFO_NAME: "everything-server",
                    sc.HELMET_SERVER_VERSION: "1.4.0",
                    sc.MCP_PROTOCOL_VERSION: "2025-11-25",
                    sc.HELMET_ERA: "legacy",
                },
                span_id=root,
            )
        )
        spans.insert(
            0,
            Sp(
                sc.SPAN_SESSION,
                SpanKind.INTERNAL,
                root,
                None,
                t,
                end_ts,
                {
                    sc.HELMET_SESSION_ID: session_id,
                    sc.HELMET_TRACE_SEGMENT: 0,
                    sc.HELMET_TRANSPORT: "stdio",
                },
            ),
        )
    return Session(session_id, service, trace_id, recs, spans)


def bulk_session(session_id: str, calls: int, *, base_ns: int, service: str = "bulk") -> Session:
    """A session with ``calls`` tool calls (2 records each), plus start and end."""
    sid = {sc.HELMET_SESSION_ID: session_id}
    recs = [
        Rec(
            base_ns,
            sc.EVENT_SESSION_START,
            {**sid, sc.HELMET_PROXY_PID: os.getpid(), sc.HELMET_PROXY_HOST: socket.gethostname()},
        )
    ]
    for i in range(calls):
        at = base_ns + (i + 1) * MS
        common: dict[str, object] = {
            **sid,
            sc.MCP_METHOD_NAME: "tools/call",
            sc.JSONRPC_REQUEST_ID: str(i),
            sc.GEN_AI_TOOL_NAME: f"tool{i % 7}",
        }
        recs.append(
            Rec(
                at,
                sc.EVENT_REQUEST,
                {
                    **common,
                    sc.HELMET_DIRECTION: sc.DIRECTION_C2S,
                    sc.HELMET_MESSAGE_KIND: "request",
                },
                {"name": f"tool{i % 7}", "arguments": {"n": i, "who": session_id}},
            )
        )
        recs.append(
            Rec(
                at + MS // 2,
                sc.EVENT_RESPONSE,
                {
                    **common,
                    sc.HELMET_DIRECTION: sc.DIRECTION_S2C,
                    sc.HELMET_MESSAGE_KIND: "response",
                    sc.HELMET_LATENCY_MS: 0.5,
                },
                {"content": [{"type": "text", "text": f"result {i} for {session_id}"}]},
            )
        )
    recs.append(
        Rec(base_ns + (calls + 2) * MS, sc.EVENT_SESSION_END, {**sid, sc.HELMET_EXIT_STATUS: 0})
    )
    return Session(session_id, service, 0x1234 + calls, recs, [])


class FixedIds(IdGenerator):
    def __init__(self) -> None:
        self.trace_id = 1
        self.span_id = 1

    def generate_span_id(self) -> int:
        return self.span_id

    def generate_trace_id(self) -> int:
        return self.trace_id


@dataclass
class Pipeline:
    """Real SDK providers exporting into a store, as the telemetry worker builds them."""

    store: Store
    loggers: dict[str, LoggerProvider] = field(default_factory=dict[str, LoggerProvider])
    tracers: dict[str, tuple[TracerProvider, FixedIds]] = field(
        default_factory=dict[str, tuple[TracerProvider, FixedIds]]
    )
    batch: bool = False

    def _providers(self, service: str) -> tuple[LoggerProvider, TracerProvider, FixedIds]:
        if service not in self.loggers:
            resource = Resource.create({sc.SERVICE_NAME: service})
            lp = LoggerProvider(resource=resource)
            ids = FixedIds()
            tp = TracerProvider(resource=resource, id_generator=ids)
            log_proc: LogRecordProcessor
            span_proc: SpanProcessor
            if self.batch:
                log_proc = BatchLogRecordProcessor(
                    StoreLogExporter(self.store), max_queue_size=100_000
                )
                span_proc = BatchSpanProcessor(
                    StoreSpanExporter(self.store), max_queue_size=100_000
                )
            else:
                log_proc = SimpleLogRecordProcessor(StoreLogExporter(self.store))
                span_proc = SimpleSpanProcessor(StoreSpanExporter(self.store))
            lp.add_log_record_processor(log_proc)
            tp.add_span_processor(span_proc)
            self.loggers[service] = lp
            self.tracers[service] = (tp, ids)
        tp, ids = self.tracers[service]
        return self.loggers[service], tp, ids

    def emit(self, session: Session) -> None:
        lp, tp, ids = self._providers(session.service)
        logger = lp.get_logger(sc.SCOPE_NAME)
        for rec in session.records:
            context: Context | None = None
            if rec.span_id:
                ctx = SpanContext(
                    session.trace_id, rec.span_id, is_remote=False, trace_flags=TraceFlags(1)
                )
                context = trace.set_span_in_context(NonRecordingSpan(ctx))
            logger.emit(
                timestamp=rec.ts,
                observed_timestamp=rec.ts,
                context=context,
                severity_number=rec.severity,
                severity_text=rec.severity.name if rec.severity != SeverityNumber.WARN else "WARN",
                body=rec.body,  # pyright: ignore[reportArgumentType]
                attributes=rec.attrs,  # pyright: ignore[reportArgumentType]
                event_name=rec.event,
            )
        tracer = tp.get_tracer(sc.SCOPE_NAME)
        by_id = {s.span_id: s for s in session.spans}
        for sp in session.spans:
            ids.trace_id = session.trace_id
            ids.span_id = sp.span_id
            parent_ctx: Context | None = None
            if sp.parent is not None:
                pctx = SpanContext(
                    session.trace_id, sp.parent, is_remote=False, trace_flags=TraceFlags(1)
                )
                parent_ctx = trace.set_span_in_context(NonRecordingSpan(pctx))
            else:
                parent_ctx = Context()
            span = tracer.start_span(
                sp.name, context=parent_ctx, kind=sp.kind, attributes=sp.attrs, start_time=sp.start
            )  # pyright: ignore[reportArgumentType]
            if sp.error is not None:
                span.set_status(Status(StatusCode.ERROR, sp.error))
            span.end(end_time=sp.end)
        del by_id

    def shutdown(self) -> None:
        for lp in self.loggers.values():
            lp.shutdown()
        for tp, _ in self.tracers.values():
            tp.shutdown()


def write_store(path: Path, sessions: Sequence[Session], **store_kwargs: object) -> Store:
    store = Store.open(path, **store_kwargs)  # pyright: ignore[reportArgumentType]
    pipe = Pipeline(store)
    for s in sessions:
        pipe.emit(s)
    pipe.shutdown()
    return store


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def main(argv: Sequence[str] | None = None) -> int:
    """Writer process: emit bulk sessions through batch processors, then report counts."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["write"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--base-ns", type=int, default=BASE_NS)
    parser.add_argument("--max-bytes", type=int, default=0)
    parser.add_argument("--lock-timeout", type=float, default=30.0)
    parser.add_argument("--batch", action="store_true", help="batch processors (as the worker)")
    args = parser.parse_args(argv)
    store = Store.open(
        args.store, max_bytes=args.max_bytes, max_age_s=0, lock_timeout_s=args.lock_timeout
    )
    pipe = Pipeline(store, batch=args.batch)
    for i in range(args.sessions):
        pipe.emit(
            bulk_session(f"{args.prefix}-{i:03d}", args.calls, base_ns=args.base_ns + i * 10**9)
        )
        sys.stdout.write(f"session {i}\n")
        sys.stdout.flush()
    pipe.shutdown()
    store.close()
    sys.stdout.write(f"written {store.written_logs} dropped {store.dropped}\n")
    return 0 if store.dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
