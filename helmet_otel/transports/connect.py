"""``connect``: our stdin/stdout face a stdio client, a remote MCP server over HTTP is upstream.

The stdio side is the stdio proxy's (the same pipes, line splitting and `Relay`); the upstream is
`mcp_client.StreamableUpstream` (or the deprecated HTTP+SSE transport when the server only has
that). Each client message is routed through the relay and POSTed; what answers it is routed
back and written to stdout message by message, as it arrives. ``initialize``, notifications and
responses are sent in order, one at a time; other requests each in their own task, so a slow
tool does not hold up the rest. A request the upstream refuses or cannot be reached for is
answered by the proxy with a JSON-RPC error that names the HTTP status (and carries it in
``data``), and so is one whose SSE stream ended before its answer and could not be resumed
(``Last-Event-ID``, where the server gives event ids); one that gets no answer within ``request_timeout`` (each progress notification for it
starts the clock again) is answered with a timeout error and cancelled upstream. The process is one session; at stdin's end, in-flight requests get
``grace`` seconds, then the upstream session is DELETEd.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import anyio
from anyio.abc import TaskGroup

from helmet_otel.core.envelope import C2S, S2C, Envelope
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.lifecycle import Lifecycle
from helmet_otel.core.relay import HTTP_STATUS_KEY, UPSTREAM_GONE_CODE
from helmet_otel.core.session import Session
from helmet_otel.protocol.framing import LineSplitter
from helmet_otel.protocol.message import PROGRESS, REQUEST, JsonId, id_key, progress_key
from helmet_otel.transports.http_client import Headers, split_url
from helmet_otel.transports.http_front import sweep_period
from helmet_otel.transports.mcp_client import (
    Failure,
    SseUpstream,
    StreamableUpstream,
    upstream_info,
)
from helmet_otel.transports.pipes import ByteReader, ByteWriter, open_reader, open_writer


@dataclass(eq=False, slots=True)
class _Wait:
    """A request waiting for its answer: its deadline, and the scope that ends the wait."""

    scope: anyio.CancelScope
    request_id: JsonId
    token: object  # its progress token, if any
    deadline: float = float("inf")  # time.monotonic()


class ConnectProxy:
    def __init__(
        self,
        url: str,
        headers: Headers,
        session: Session,
        interceptors: Sequence[Interceptor] = (),
        *,
        request_timeout: float = 0.0,
        grace: float = 2.0,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        signals: bool = True,
        recorded_url: str | None = None,
    ) -> None:
        self.url = url
        self.recorded_url = recorded_url or url  # what telemetry shows (no credentials)
        self.origin, _ = split_url(url)
        self.headers = headers
        self.session = session
        self.lifecycle = Lifecycle(session, interceptors)
        self.relay = self.lifecycle.relay
        self.request_timeout = request_timeout
        self.grace = grace
        self._signals = signals
        self._stdin = stdin or open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115
        self._stdout = stdout or open(1, "wb", buffering=0, closefd=False)  # noqa: SIM115
        self._stderr = stderr or open(2, "wb", buffering=0, closefd=False)  # noqa: SIM115
        self._out: ByteWriter | None = None
        self._err: ByteWriter | None = None
        self._upstream: StreamableUpstream | SseUpstream | None = None
        self._inflight = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._status = 0
        self._tg: TaskGroup | None = None
        self._waits: dict[_Wait, None] = {}  # requests with a deadline (an ordered set)
        self._by_token: dict[object, _Wait] = {}  # the same, by progress token

    def diag(self, text: str) -> None:
        """One line of our own on stderr (stdout belongs to the wire)."""
        data = f"helmet-otel: {text}\n".encode()
        if self._err is not None and not self._err.closed:
            try:
                self._err.write(data)
            except BrokenPipeError:
                pass
        else:
            os.write(self._stderr.fileno(), data)

    def upstream_info(self) -> dict[str, object]:
        """The HTTP upstream; the client's side is a pipe."""
        info = upstream_info(self.url, self.recorded_url)
        info["network.transport"] = "pipe"
        del info["network.protocol.name"]
        return info

    # -- entry point ------------------------------------------------------------------------
    async def run(self) -> int:
        reader = await open_reader(self._stdin)
        self._out = await open_writer(self._stdout)
        self._err = await open_writer(self._stderr)
        self.lifecycle.upstream_started(self.upstream_info())
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._upstream = StreamableUpstream(
                    self.url, self.headers, self._deliver, self.diag, tg
                )
                if self._signals:
                    tg.start_soon(self._watch_signals, tg)
                tg.start_soon(self._sweep, tg)
                await self._pump(reader, tg)
                self.lifecycle.client_closed()
                with anyio.move_on_after(self.grace):
                    await self._idle.wait()
                with anyio.CancelScope(shield=True):
                    await self._upstream.end()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self._answer_pending()
                for stream in (self._out, self._err):
                    with anyio.move_on_after(2.0):
                        try:
                            await stream.flush()
                        except BrokenPipeError:
                            pass
                    stream.close()
                reader.close()
        self.session.exit_status = self._status
        self.lifecycle.ended()
        return self._status

    async def _watch_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                self.lifecycle.signalled(signal.Signals(signum).name)
                self._status = 128 + signum
                upstream = self._upstream
                with anyio.CancelScope(shield=True):
                    if upstream is not None:
                        await upstream.end()
                tg.cancel_scope.cancel()
                return

    # -- client -> server ------------------------------------------------------------------
    async def _pump(self, reader: ByteReader, tg: TaskGroup) -> None:
        splitter = LineSplitter()
        while True:
            chunk = await reader.receive()
            if not chunk:
                break
            for line in splitter.feed(chunk):
                await self._client_line(line, tg)
        rest = splitter.flush()
        if rest:
            await self._client_line(rest, tg)

    async def _client_line(self, line: bytes, tg: TaskGroup) -> None:
        routed = self.relay.route(C2S, [line])
        env = routed.envelopes[0]
        if routed.replies:  # answered by the proxy (a policy)
            await self._write(routed.replies)
            self.relay.forwarded(routed)
            return
        self.relay.forwarded(routed)
        if not routed.forward:
            return
        body = env.wire.rstrip(b"\r\n")
        msg = env.msg
        if msg.kind is REQUEST and msg.id is not None and msg.method != "initialize":
            self._started()
            tg.start_soon(self._request, body, env, msg.id)
        else:
            await self._send(body, env)

    def _started(self) -> None:
        self._inflight += 1
        self._idle = anyio.Event() if self._idle.is_set() else self._idle

    def _finished(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def _request(self, body: bytes, env: Envelope, request_id: JsonId) -> None:
        wait = _Wait(anyio.CancelScope(), request_id, progress_key(env.msg))
        if self.request_timeout > 0:
            wait.deadline = time.monotonic() + self.request_timeout
            self._waits[wait] = None
            if wait.token is not None:
                self._by_token[wait.token] = wait
        try:
            with wait.scope:
                await self._send(body, env)
        finally:
            self._forget(wait)
            self._finished()

    def _forget(self, wait: _Wait) -> bool:
        if wait.token is not None and self._by_token.get(wait.token) is wait:
            del self._by_token[wait.token]
        return self._waits.pop(wait, False) is None

    async def _sweep(self, tg: TaskGroup) -> None:
        """Time out requests (an eighth of the timeout late at most, one second at most)."""
        period = sweep_period(0, self.request_timeout)
        if period is None:
            return
        while True:
            await anyio.sleep(period)
            now = time.monotonic()
            for wait in [w for w in self._waits if w.deadline <= now]:
                self._forget(wait)
                tg.start_soon(self._timed_out, wait)

    async def _send(self, body: bytes, env: Envelope) -> None:
        upstream = self._upstream
        assert upstream is not None
        msg = env.msg
        answered = None
        if msg.kind is REQUEST and msg.id is not None and msg.method != "initialize":
            key = (True, id_key(msg.id))
            pending = self.session.pending
            answered = lambda: key not in pending  # noqa: E731
        failure = await upstream.send(body, msg, answered)
        if (
            failure is not None
            and isinstance(upstream, StreamableUpstream)
            and upstream.session_id is None
            and env.msg.method == "initialize"
            and failure.status is not None
            and 400 <= failure.status < 500
            and failure.status not in (401, 403)
        ):
            failure = await self._fall_back(body, env) or None
        if failure is not None:
            await self._failed(env, failure)

    async def _fall_back(self, body: bytes, env: Envelope) -> Failure | None:
        """The URL refused Streamable HTTP's first POST: try the deprecated HTTP+SSE one."""
        legacy = SseUpstream(self.url, self.headers, self._deliver, self.diag)
        if not await legacy.open():
            await legacy.end()
            return Failure(None, "the server speaks neither Streamable HTTP nor HTTP+SSE")
        old = self._upstream
        self._upstream = legacy
        if old is not None:
            await old.end()
        self.diag(f"{self.url} has only the deprecated HTTP+SSE transport: using it")
        assert self._tg is not None
        self._tg.start_soon(legacy.run)
        return await legacy.send(body, env.msg)

    async def _failed(self, env: Envelope, failure: Failure) -> None:
        msg = env.msg
        if msg.kind is not REQUEST or msg.id is None:
            self.diag(f"{msg.method or 'a message'} was not delivered: {failure.reason}")
            return
        data: dict[str, object] = {}
        if failure.status is not None:
            data[HTTP_STATUS_KEY] = failure.status
        if failure.www_authenticate is not None:
            data["www-authenticate"] = failure.www_authenticate
        routed = self.relay.answer(msg.id, UPSTREAM_GONE_CODE, failure.reason, data or None)
        await self._write(routed.forward)
        self.relay.forwarded(routed)

    async def _timed_out(self, wait: _Wait) -> None:
        """The client gets -32001 at once; the upstream gets ``notifications/cancelled``
        before the request's own POST is dropped (so it learns why before the disconnect)."""
        try:
            timed_out = self.relay.time_out(wait.request_id, self.request_timeout)
            if timed_out is None:
                return
            answer, cancel = timed_out
            await self._write(answer.forward)
            self.relay.forwarded(answer)
            self.relay.forwarded(cancel)
            upstream = self._upstream
            if upstream is not None:
                env = cancel.envelopes[0]
                with anyio.move_on_after(5.0):
                    await upstream.send(env.wire.rstrip(b"\n"), env.msg)
        finally:
            wait.scope.cancel()

    # -- server -> client ------------------------------------------------------------------
    async def _deliver(self, data: bytes) -> None:
        routed = self.relay.route(S2C, [data + b"\n"])
        if self._by_token and routed.envelopes[0].msg.method == PROGRESS:
            wait = self._by_token.get(progress_key(routed.envelopes[0].msg))
            if wait is not None:  # progress: the request's clock starts again
                wait.deadline = time.monotonic() + self.request_timeout
        await self._write(routed.forward)
        self.relay.forwarded(routed)
        if routed.replies:  # the proxy answered a server request itself (a policy)
            upstream = self._upstream
            for env in routed.envelopes:
                if env.proxy and upstream is not None:
                    await upstream.send(env.wire.rstrip(b"\n"), env.msg)

    async def _write(self, lines: list[bytes]) -> None:
        out = self._out
        if not lines or out is None:
            return
        try:
            out.write(lines[0] if len(lines) == 1 else b"".join(lines))
            await out.drain()
        except BrokenPipeError:
            pass  # the client is gone; stdin's end follows

    def _answer_pending(self) -> None:
        """Requests still waiting when the session ends get an error (as on stdio)."""
        routed = self.relay.answer_pending("connection to the MCP server closed")
        out = self._out
        if routed.forward and out is not None and not out.closed:
            try:
                out.write(b"".join(routed.forward))
            except BrokenPipeError:
                pass
        self.relay.forwarded(routed)
