"""One HTTP session in front of one stdio child: which HTTP response each message goes to.

Client messages arrive one per POST; the session routes each through the core's `Relay` (as the
stdio transport does), writes it to the child and remembers which response waits for which
request id. What the child writes is routed back the same way and delivered:

- a response goes to the POST that waits for its id: as ``application/json`` when nothing was
  streamed for it yet, else as the last event of its SSE stream, which then ends;
- a progress notification goes to the POST whose request carried its ``progressToken`` (which
  becomes an SSE stream at that moment, so progress arrives before the result);
- anything else (server-to-client requests, other notifications) goes to the session's GET
  stream, else to the newest POST that accepts SSE, else waits (bounded) for a GET stream.

A client that goes away before its answer cancels the request upstream with
``notifications/cancelled``; a request with no answer within the request timeout (each progress
notification for it starts the clock again) is answered with -32001 and cancelled the same way. Legacy era: one session per ``Mcp-Session-Id``. 2026-07-28 era: the
session of a client identity; two requests with the same id from it are sent one after the other
(bytes are never rewritten to tell them apart).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from helmet_otel.core.envelope import C2S, S2C, Envelope
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.lifecycle import Lifecycle
from helmet_otel.core.relay import UPSTREAM_GONE_CODE, Routed
from helmet_otel.core.session import Session
from helmet_otel.protocol.framing import LineSplitter
from helmet_otel.protocol.message import (
    ERROR,
    NOTIFICATION,
    PROGRESS,
    REQUEST,
    RESPONSE,
    JsonId,
    error_response,
    id_key,
    progress_key,
)
from helmet_otel.transports.child import ChildProcess, ServerCommand, pump_stderr
from helmet_otel.transports.http_server import Exchange, Headers
from helmet_otel.transports.pipes import ByteReader, ByteWriter, open_reader, open_writer

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
BACKLOG_LIMIT = 1000  # messages kept for a GET stream that is not open yet (oldest dropped)
STDOUT_DRAIN_AFTER_EXIT = 1.0

Key = tuple[bool, JsonId]


def sse_event(data: bytes) -> bytes:
    return b"event: message\ndata: " + data + b"\n\n"


def as_line(body: bytes) -> bytes:
    """A POST body as one stdio line: raw CR and LF bytes in valid JSON are whitespace between
    tokens (inside strings they must be escaped), so they become spaces; nothing else changes."""
    body = body.strip()
    if b"\n" in body or b"\r" in body:
        body = body.replace(b"\r", b" ").replace(b"\n", b" ")
    return body + b"\n"


@dataclass(slots=True)
class Waiting:
    exchange: Exchange
    sse: bool  # the client accepts an SSE stream for this request
    progress: object = None  # the request's progressToken, if any
    deadline: float = float("inf")  # time.monotonic() when it times out


class HttpSession:
    """A helmet session carried over HTTP, with its own child process."""

    def __init__(
        self,
        command: ServerCommand,
        session: Session,
        interceptors: Sequence[Interceptor],
        *,
        legacy: bool,
        stderr: Callable[[bytes], None],
        on_gone: Callable[[HttpSession], None],
        upstream: dict[str, object],
        request_timeout: float = 0.0,
    ) -> None:
        """Start the child (raises OSError when it cannot be started; the session has then
        failed, see `failed`)."""
        self.session = session
        self.lifecycle = Lifecycle(session, interceptors)
        self.relay = self.lifecycle.relay
        self.legacy = legacy
        self._stderr = stderr
        self._on_gone = on_gone
        self.request_timeout = request_timeout if request_timeout > 0 else float("inf")
        self._waiting: dict[Key, Waiting] = {}
        self._progress: dict[object, Key] = {}
        self._deferred: dict[Key, deque[tuple[bytes, Exchange, bool]]] = {}
        self._get: Exchange | None = None
        self._backlog: deque[bytes] = deque(maxlen=BACKLOG_LIMIT)
        self._queued: list[bytes] = []  # written before the child's stdin was opened
        self._stdin: ByteWriter | None = None
        self._tg: TaskGroup | None = None
        self.gone = False  # the child has exited: the session takes no more requests
        self.last_active = time.monotonic()
        self.child = ChildProcess(command)
        self.command = command
        self.lifecycle.upstream_started({**upstream, "pid": self.child.pid})

    # -- state the front reads -------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing in flight and no GET stream open."""
        return not self._waiting and not self._deferred and (self._get is None or self._get.closed)

    def extra_headers(self) -> Headers:
        sid = self.session.mcp_session_id
        return [(b"mcp-session-id", sid.encode())] if sid is not None else []

    # -- client -> server ------------------------------------------------------------------
    def post(self, line: bytes, exchange: Exchange, sse: bool, msg_id: JsonId | None) -> None:
        """Route one client message (``msg_id``: its id when it is a request)."""
        now = self.last_active = time.monotonic()
        if msg_id is not None:
            key = id_key(msg_id)
            if key in self._waiting:  # the same id in flight (two clients of one identity)
                self._deferred.setdefault(key, deque()).append((line, exchange, sse))
                return
        routed = self.relay.route(C2S, [line])
        env = routed.envelopes[0]
        if routed.replies:  # answered by the proxy (a policy, or an upstream that is gone)
            self._respond(exchange, routed.replies[0].rstrip(b"\n"))
        elif env.msg.kind is REQUEST and env.msg.id is not None:
            key = id_key(env.msg.id)
            waiting = Waiting(exchange, sse, progress_key(env.msg), now + self.request_timeout)
            self._waiting[key] = waiting
            if waiting.progress is not None:
                self._progress[waiting.progress] = key
            exchange.on_close = lambda: self._abandoned(key)
            self._write(routed.forward)
        else:
            self._write(routed.forward)
            exchange.respond(202, self.extra_headers())
        self.relay.forwarded(routed)

    def open_stream(self, exchange: Exchange) -> None:
        """A GET: the stream for server-initiated messages (a new one replaces the old)."""
        self.last_active = time.monotonic()
        old, self._get = self._get, exchange
        if old is not None:
            old.finish()
        exchange.start(200, SSE_HEADERS + self.extra_headers())
        exchange.on_close = self._stream_closed
        while self._backlog and not exchange.closed:
            exchange.send(sse_event(self._backlog.popleft()))

    def _stream_closed(self) -> None:
        self._get = None
        self.last_active = time.monotonic()

    def _abandoned(self, key: Key) -> None:
        """The client went away before its answer: cancel the request upstream."""
        waiting = self._waiting.pop(key, None)
        self.last_active = time.monotonic()
        if waiting is None:
            return
        if waiting.progress is not None:
            self._progress.pop(waiting.progress, None)
        pending = self.session.pending.get((True, key))
        if self.gone or pending is None or pending.cancelled:
            return  # answered meanwhile, or the client had cancelled it itself
        routed = self.relay.cancel(key[1], "the HTTP client disconnected")
        self._write(routed.forward)
        self.relay.forwarded(routed)
        self._next_deferred(key)

    def _write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        if self._stdin is None:
            self._queued.append(data)
            return
        try:
            self._stdin.write(data)
        except BrokenPipeError:
            pass  # the child is going: the exit watcher answers what is pending

    # -- server -> client ------------------------------------------------------------------
    def _deliver(self, env: Envelope) -> None:
        msg = env.msg
        kind = msg.kind
        data = env.wire.rstrip(b"\r\n")
        if kind is RESPONSE or kind is ERROR:
            if msg.id is None:
                self._to_stream(data)
                return
            key = id_key(msg.id)
            waiting = self._waiting.pop(key, None)
            if waiting is None:  # its client went away (and was cancelled): nobody waits
                return
            if waiting.progress is not None:
                self._progress.pop(waiting.progress, None)
            self._final(waiting.exchange, data)
            self._next_deferred(key)
            return
        if kind is NOTIFICATION and msg.method == PROGRESS:
            key = self._progress.get(progress_key(msg))
            waiting = self._waiting.get(key) if key is not None else None
            if waiting is not None:
                waiting.deadline = time.monotonic() + self.request_timeout
                if waiting.sse and not waiting.exchange.closed:
                    self._stream_on(waiting.exchange, data)
                    return
        self._to_stream(data)

    def _to_stream(self, data: bytes) -> None:
        get = self._get
        if get is not None and not get.closed:
            get.send(sse_event(data))
            return
        for waiting in reversed(self._waiting.values()):
            if waiting.sse and not waiting.exchange.closed:
                self._stream_on(waiting.exchange, data)
                return
        if self.legacy:
            self._backlog.append(data)

    def _stream_on(self, exchange: Exchange, data: bytes) -> None:
        if not exchange.streaming:
            exchange.start(200, SSE_HEADERS + self.extra_headers())
        exchange.send(sse_event(data))

    def _respond(self, exchange: Exchange, data: bytes) -> None:
        exchange.respond(200, JSON_HEADERS + self.extra_headers(), data)

    def _final(self, exchange: Exchange, data: bytes) -> None:
        """A request's answer: the last event of its SSE stream, else its JSON response."""
        if exchange.streaming:
            exchange.send(sse_event(data))
            exchange.finish()
        else:
            self._respond(exchange, data)

    def expire(self, now: float) -> None:
        """Answer and cancel upstream the requests whose deadline has passed."""
        if self.gone:
            return  # the child's exit answers them
        for key, waiting in list(self._waiting.items()):
            if waiting.deadline <= now and self._waiting.get(key) is waiting:
                del self._waiting[key]
                if waiting.progress is not None:
                    self._progress.pop(waiting.progress, None)
                timed_out = self.relay.time_out(key[1], self.request_timeout)
                if timed_out is not None:
                    answer, cancel = timed_out
                    self._final(waiting.exchange, answer.forward[0].rstrip(b"\n"))
                    self.relay.forwarded(answer)
                    self._write(cancel.forward)
                    self.relay.forwarded(cancel)
                self._next_deferred(key)

    def _next_deferred(self, key: Key) -> None:
        queue = self._deferred.get(key)
        if not queue:
            return
        line, exchange, sse = queue.popleft()
        if not queue:
            del self._deferred[key]
        if not exchange.closed:
            self.post(line, exchange, sse, key[1])

    def _route_from_server(self, lines: list[bytes]) -> list[Exchange]:
        routed = self.relay.route(S2C, lines)
        if routed.replies:  # answers to the server's own requests (a policy)
            self._write(routed.replies)
        touched: list[Exchange] = []
        for env in routed.envelopes:
            if env.direction is S2C and env.reply is None:
                self._deliver(env)
        for waiting in self._waiting.values():
            if waiting.exchange.buffered:
                touched.append(waiting.exchange)
        self.relay.forwarded(routed)
        return touched

    def _answer(self, routed: Routed) -> None:
        """The proxy's own answers (the child is gone): to the POSTs that wait for them."""
        for env in routed.envelopes:
            if env.direction is S2C:
                self._deliver(env)
        self.relay.forwarded(routed)

    # -- running ---------------------------------------------------------------------------
    async def run(self) -> None:
        child = self.child
        proc = child.proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        out: ByteReader | None = None
        err: ByteReader | None = None
        try:
            self._stdin = await open_writer(proc.stdin)
            out = await open_reader(proc.stdout)
            err = await open_reader(proc.stderr)
            queued, self._queued = self._queued, []
            self._write(queued)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(child.watch_exit)
                done = anyio.Event()
                tg.start_soon(self._pump_out, out, done)
                tg.start_soon(self._pump_err, err)
                await child.exited.wait()
                # no new request from now on (404), while what the child wrote last drains
                self.gone = True
                with anyio.move_on_after(STDOUT_DRAIN_AFTER_EXIT):
                    await done.wait()
                self._answer(self.lifecycle.upstream_exited(*child.describe_exit(), child.usage))
                self._end_streams()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self.gone = True
                self._on_gone(self)
                for stream in (self._stdin, out, err):
                    if stream is not None:
                        stream.close()
                if not child.exited.is_set():
                    child.signal_group(9)
                    with anyio.move_on_after(2.0):
                        await child.watch_exit()
                await child.reap_group()
                self.lifecycle.ended()

    def _end_streams(self) -> None:
        for queue in self._deferred.values():
            for line, exchange, _ in queue:
                routed = self.relay.route(C2S, [line])  # the relay answers: upstream gone
                if routed.replies:
                    self._respond(exchange, routed.replies[0].rstrip(b"\n"))
                self.relay.forwarded(routed)
        self._deferred.clear()
        for key, waiting in list(self._waiting.items()):  # cancelled requests the server dropped
            data = error_response(key[1], UPSTREAM_GONE_CODE, "MCP server exited").rstrip(b"\n")
            self._final(waiting.exchange, data)
        self._waiting.clear()
        if self._get is not None:
            self._get.finish()
            self._get = None

    async def _pump_out(self, reader: ByteReader, done: anyio.Event) -> None:
        splitter = LineSplitter()
        try:
            while True:
                chunk = await reader.receive()
                if not chunk:
                    break
                lines = splitter.feed(chunk)
                if lines:
                    for exchange in self._route_from_server(lines):
                        if exchange.buffered:
                            await exchange.drain()
            rest = splitter.flush()
            if rest:
                self._route_from_server([rest])
        finally:
            done.set()

    async def _pump_err(self, reader: ByteReader) -> None:
        async def copy(chunk: bytes) -> None:
            self._stderr(chunk)

        await pump_stderr(reader, self.lifecycle, copy)

    def close(self, reason: str) -> None:
        """End the session (DELETE, idle timeout, shutdown): the child's stdin closes and it is
        terminated as on stdio (grace, SIGTERM, grace, SIGKILL)."""
        if self.gone:
            return
        self.lifecycle.client_closed(reason)
        if self._stdin is not None:
            self._stdin.close()
        if self._tg is not None:
            self._tg.start_soon(self.child.terminate, None)
        else:
            self.child.signal_group(15)
