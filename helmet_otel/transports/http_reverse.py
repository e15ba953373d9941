"""`serve --upstream URL`: a reverse proxy in front of a remote Streamable HTTP MCP server.

Requests to the MCP path go to the upstream URL, with the client's headers (``Authorization``
included; hop-by-hop headers, ``Host`` and ``Accept-Encoding`` excepted, so bodies arrive
readable); the answer comes back with the upstream's status and headers (``WWW-Authenticate``
included). JSON answers are relayed whole, SSE answers event by event as they arrive: each
event's own bytes (``id:``, comments and keep-alives included) unless the relay changed its
message. The OAuth discovery paths (``/.well-known/oauth-protected-resource...``,
``/.well-known/oauth-authorization-server...``) pass through untouched, on the upstream's origin.

Sessions follow the upstream's ``Mcp-Session-Id``: an ``initialize`` opens a helmet session,
keyed by the id the upstream answers with; DELETE, a 404 for the id, the idle timeout and
shutdown end it. Requests that name no session (a stateless or 2026-07-28 server) share a
session per client identity. Every message goes through the session's `Relay`, so telemetry
and interceptors see it as on stdio; a request the upstream failed with an HTTP error (401, 502)
ends in telemetry with that status as its ``error.type``, while the client gets the upstream's
own answer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from helmet_otel.core.envelope import C2S, HTTP_TRACEPARENT, S2C
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.lifecycle import Lifecycle
from helmet_otel.core.relay import HTTP_STATUS_KEY, UPSTREAM_GONE_CODE, Routed
from helmet_otel.core.session import Session
from helmet_otel.protocol.message import (
    PROGRESS,
    REQUEST,
    JsonId,
    Message,
    id_key,
    inspect,
    progress_key,
)
from helmet_otel.protocol.sse import SseSplitter, sse_message
from helmet_otel.transports.http_client import (
    Headers,
    HttpClient,
    HttpError,
    Response,
    split_url,
)
from helmet_otel.transports.http_front import sweep_period
from helmet_otel.transports.http_guard import Guard
from helmet_otel.transports.http_server import Early, Exchange, Request
from helmet_otel.transports.http_sessions import JSON_HEADERS, as_line

WELL_KNOWN = ("/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server")
# not passed on, either way: hop-by-hop, the framing we write ourselves, and compression (the
# proxy reads the bodies)
_REQUEST_SKIP = frozenset({
    "host", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
    "transfer-encoding", "content-length", "expect", "accept-encoding", "proxy-authorization",
})  # fmt: skip
_RESPONSE_SKIP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
    b"transfer-encoding", b"content-length",
})  # fmt: skip


def _error_body(code: int, message: str, data: object = None) -> bytes:
    from helmet_otel.protocol.message import error_response

    return error_response(None, code, message, data).rstrip(b"\n")


@dataclass
class UpstreamSettings:
    url: str
    guard: Guard
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/mcp"
    max_message_size: int = 64 * 1024 * 1024
    idle_timeout: float = 1800.0
    request_timeout: float = 300.0
    upstream: dict[str, object] = field(default_factory=dict[str, object])


@dataclass(eq=False, slots=True)
class Clock:
    """A POST waiting for its upstream answer: its deadline, and the scope that ends the wait."""

    scope: anyio.CancelScope
    request: Request
    exchange: Exchange
    request_id: JsonId | None = None
    deadline: float = float("inf")  # time.monotonic() when it times out
    token: object = None  # its progress token, if any


class ProxiedSession:
    """One helmet session carried to the upstream (no child: the upstream is the server)."""

    def __init__(
        self, core: Session, interceptors: Sequence[Interceptor], upstream: dict[str, object]
    ) -> None:
        self.session = core
        self.lifecycle = Lifecycle(core, interceptors)
        self.relay = self.lifecycle.relay
        self.last_active = time.monotonic()
        self.inflight = 0
        self.gone = False
        self.clocks: dict[Clock, None] = {}  # the requests waiting for an answer (ordered set)
        self.by_token: dict[object, Clock] = {}  # the same, by progress token
        self.lifecycle.upstream_started(upstream)

    def pending(self, request_id: JsonId) -> bool:
        return (True, id_key(request_id)) in self.session.pending

    def progressed(self, msg: Message, timeout: float) -> None:
        """A progress notification: its request's clock starts again."""
        clock = self.by_token.get(progress_key(msg))
        if clock is not None:
            clock.deadline = time.monotonic() + timeout

    def forget(self, clock: Clock) -> bool:
        """The request no longer waits (answered, timed out, abandoned); False if it did not."""
        if clock.token is not None and self.by_token.get(clock.token) is clock:
            del self.by_token[clock.token]
        return self.clocks.pop(clock, False) is None

    def route(self, direction: bool, line: bytes) -> Routed:
        return self.relay.route(C2S if direction else S2C, [line])

    def end(self, reason: str) -> None:
        if self.gone:
            return
        self.gone = True
        self.lifecycle.client_closed(reason)
        routed = self.relay.answer_pending(f"{reason} before responding (helmet-otel)")
        self.relay.forwarded(routed)  # telemetry only: the client had the upstream's answer
        self.lifecycle.ended()


def _forward_headers(request: Request) -> Headers:
    headers: Headers = []
    for name, value in request.headers.items():
        if name not in _REQUEST_SKIP:
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return headers


def _back_headers(response: Response) -> Headers:
    return [(n, v) for n, v in response.headers if n.lower() not in _RESPONSE_SKIP]


class ReverseFront:
    """The `http_server.Handler` of ``serve --upstream``."""

    def __init__(
        self,
        settings: UpstreamSettings,
        interceptors_for: Callable[[Session], Sequence[Interceptor]],
        stderr: Callable[[bytes], None],
        tg: TaskGroup,
    ) -> None:
        self.settings = settings
        self.guard = settings.guard
        origin, self.target = split_url(settings.url)
        self.origin = origin
        self.client = HttpClient(origin)
        self._interceptors_for = interceptors_for
        self._stderr = stderr
        self._tg = tg
        self.sessions: dict[str, ProxiedSession] = {}  # by the upstream's Mcp-Session-Id
        self.stateless: dict[str, ProxiedSession] = {}  # by client identity
        self.running: set[ProxiedSession] = set()
        self.closing = False
        limit = settings.max_message_size
        self.too_large = Early(
            413, list(JSON_HEADERS),
            _error_body(-32600, f"message too large: the limit is {limit} bytes "
                        "(--max-message-size)", {"limit": limit}),
        )  # fmt: skip

    # -- the gate --------------------------------------------------------------------------
    def check(self, request: Request, length: int | None) -> Early | None:
        if request.path != self.settings.path and not request.path.startswith(WELL_KNOWN):
            return Early(404, list(JSON_HEADERS), _error_body(-32600, "not found"))
        guard = self.guard
        if not guard.host_ok(request.header("host")):
            return Early(403, list(JSON_HEADERS), _error_body(-32600, "Host not allowed"))
        if not guard.origin_ok(request.header("origin")):
            return Early(403, list(JSON_HEADERS), _error_body(-32600, "Origin not allowed"))
        if length is not None and length > self.settings.max_message_size:
            return self.too_large
        return None

    def handle(self, request: Request, exchange: Exchange) -> None:
        if self.closing:
            exchange.respond(503, list(JSON_HEADERS), _error_body(-32600, "shutting down"))
            return
        self._tg.start_soon(self._handle, request, exchange)

    async def _handle(self, request: Request, exchange: Exchange) -> None:
        try:
            if request.path != self.settings.path:
                await self._pass_through(request, exchange, request.path)
            elif request.method == "POST":
                await self._post(request, exchange)
            elif request.method == "GET":
                await self._get(request, exchange)
            else:
                await self._other(request, exchange)
        except HttpError as exc:
            if exchange.streaming:
                exchange.finish()
            else:
                message = f"MCP server unreachable: {exc}"
                exchange.respond(502, list(JSON_HEADERS), _error_body(UPSTREAM_GONE_CODE, message))

    # -- pass-through (OAuth discovery, OPTIONS) -------------------------------------------
    async def _pass_through(self, request: Request, exchange: Exchange, path: str) -> None:
        target = path + (f"?{request.query}" if request.query else "")
        response = await self.client.request(
            request.method, target, _forward_headers(request), request.body
        )
        await self._copy(response, exchange)

    async def _copy(self, response: Response, exchange: Exchange) -> None:
        exchange.on_close = response.close
        exchange.start(response.status, _back_headers(response))
        try:
            while chunk := await response.receive():
                exchange.send(chunk)
                await exchange.drain()
        finally:
            response.close()
            exchange.finish()

    # -- sessions --------------------------------------------------------------------------
    def _identity(self, request: Request) -> str:
        auth = request.header("authorization")
        if auth is not None:
            return "auth:" + hashlib.sha256(auth.encode()).hexdigest()[:16]
        return f"addr:{request.client[0]}"

    def _new_session(self, request: Request) -> ProxiedSession:
        core = Session(transport="http")
        address, port = request.client
        upstream: dict[str, object] = {
            **self.settings.upstream, "client.address": address, "client.port": port,
        }  # fmt: skip
        session = ProxiedSession(core, self._interceptors_for(core), upstream)
        self.running.add(session)
        return session

    def _session_for(self, request: Request, initialize: bool) -> ProxiedSession | None:
        sid = request.header("mcp-session-id")
        if sid is not None:
            return self.sessions.get(sid)
        if initialize:
            return self._new_session(request)
        identity = self._identity(request)
        session = self.stateless.get(identity)
        if session is None or session.gone:
            session = self._new_session(request)
            self.stateless[identity] = session
        return session

    def _end(self, session: ProxiedSession, reason: str) -> None:
        session.end(reason)
        self.running.discard(session)
        sid = session.session.mcp_session_id
        if sid is not None and self.sessions.get(sid) is session:
            del self.sessions[sid]
        for identity, other in list(self.stateless.items()):
            if other is session:
                del self.stateless[identity]

    # -- POST ------------------------------------------------------------------------------
    async def _post(self, request: Request, exchange: Exchange) -> None:
        line = as_line(request.body)
        msg = inspect(line)
        initialize = msg.kind is REQUEST and msg.method == "initialize"
        session = self._session_for(request, initialize)
        if session is None:  # an id the upstream gave no session of ours: pass it untouched
            await self._pass_through(request, exchange, self.target)
            return
        session.last_active = time.monotonic()
        routed = session.route(True, line)
        env = routed.envelopes[0]
        traceparent = request.header("traceparent")
        if traceparent is not None:
            env.annotations[HTTP_TRACEPARENT] = traceparent
        if routed.replies:  # the proxy answered (a policy)
            exchange.respond(200, list(JSON_HEADERS), routed.replies[0].rstrip(b"\n"))
            session.relay.forwarded(routed)
            return
        session.relay.forwarded(routed)
        body = request.body if env.wire is env.raw else env.wire.rstrip(b"\n")
        request_id = msg.id if msg.kind is REQUEST else None
        session.inflight += 1
        clock = Clock(anyio.CancelScope(), request, exchange)
        if request_id is not None:
            clock.request_id = request_id
            clock.deadline = time.monotonic() + self._timeout
            clock.token = progress_key(msg)
            session.clocks[clock] = None
            if clock.token is not None:
                session.by_token[clock.token] = clock
            exchange.on_close = lambda: self._client_left(session, clock)
        try:
            with clock.scope:
                response = await self._send(request, body, session, request_id)
                if initialize:
                    self._take_session(session, response, request)
                await self._answer(session, response, exchange, request_id)
        finally:
            session.forget(clock)
            session.inflight -= 1
            session.last_active = time.monotonic()

    def _client_left(self, session: ProxiedSession, clock: Clock) -> None:
        """The client went away before its answer: ``notifications/cancelled`` upstream, then
        the wait for the answer ends."""
        if not session.forget(clock):
            return  # timed out already: that cancelled it
        if clock.request_id is None or not session.pending(clock.request_id):
            clock.scope.cancel()
            return
        cancel = session.relay.cancel(clock.request_id, "the HTTP client disconnected")
        session.relay.forwarded(cancel)
        self._tg.start_soon(self._notify, clock, cancel.forward[0].rstrip(b"\n"))

    @property
    def _timeout(self) -> float:
        timeout = self.settings.request_timeout
        return timeout if timeout > 0 else float("inf")

    async def _send(
        self, request: Request, body: bytes, session: ProxiedSession, request_id: JsonId | None
    ) -> Response:
        try:
            return await self.client.request(
                "POST", self._target(request), _forward_headers(request), body
            )
        except HttpError as exc:
            if request_id is not None:
                self._failed(session, request_id, None, f"MCP server unreachable: {exc}")
            raise

    def _target(self, request: Request) -> str:
        return self.target + (
            ("&" if "?" in self.target else "?") + request.query if request.query else ""
        )

    def _take_session(self, session: ProxiedSession, response: Response, request: Request) -> None:
        sid = response.header(b"mcp-session-id")
        if sid is None or response.status >= 300:
            if response.status < 300:  # a stateless server: group by identity
                self.stateless[self._identity(request)] = session
            return
        text = sid.decode("latin-1")
        session.session.mcp_session_id = text
        session.session.revision += 1
        self.sessions[text] = session

    async def _answer(
        self, session: ProxiedSession, response: Response, exchange: Exchange,
        request_id: JsonId | None,
    ) -> None:  # fmt: skip
        status = response.status
        if status >= 300:
            body = await response.read(self.settings.max_message_size)
            if request_id is not None:
                self._failed(session, request_id, status, f"HTTP {status} from the MCP server")
            exchange.respond(status, _back_headers(response), body)
            if status == 404 and session.session.mcp_session_id is not None:
                self._end(session, "the MCP server ended the session (404)")
            return
        if response.content_type == "text/event-stream":
            await self._stream(session, response, exchange, status)
            return
        body = await response.read(self.settings.max_message_size)
        if body.strip():
            routed = session.route(False, as_line(body))
            out = routed.forward[0].rstrip(b"\n") if routed.forward else b""
            if routed.envelopes[0].wire is routed.envelopes[0].raw:
                out = body
            exchange.respond(status, _back_headers(response), out)
            session.relay.forwarded(routed)
        else:
            exchange.respond(status, _back_headers(response), body)

    async def _stream(
        self, session: ProxiedSession, response: Response, exchange: Exchange, status: int
    ) -> None:
        """Relay an SSE answer event by event; a client that goes away closes it upstream."""
        if exchange.on_close is None:  # (a POST's is already set: it cancels the request)
            exchange.on_close = response.close
        exchange.start(status, _back_headers(response))
        splitter = SseSplitter()
        try:
            while chunk := await response.receive():
                for event in splitter.feed(chunk):
                    if event.data is None or event.event != "message" or not event.data.strip():
                        exchange.send(event.raw)  # keep-alives and other events, as they came
                        continue
                    routed = session.route(False, event.data + b"\n")
                    env = routed.envelopes[0]
                    if env.msg.method == PROGRESS and session.by_token:
                        session.progressed(env.msg, self._timeout)
                    if env.wire is env.raw:
                        exchange.send(event.raw)
                    elif routed.forward:
                        exchange.send(sse_message(routed.forward[0].rstrip(b"\n"), event.id))
                    session.relay.forwarded(routed)
                if exchange.buffered:
                    await exchange.drain()
        except HttpError:
            pass
        finally:
            response.close()
            exchange.finish()

    def _failed(
        self, session: ProxiedSession, request_id: JsonId, status: int | None, reason: str
    ) -> None:
        """Telemetry's end of a request the upstream failed over HTTP (the client gets the
        upstream's own answer)."""
        data = {HTTP_STATUS_KEY: status} if status is not None else None
        routed = session.relay.answer(request_id, UPSTREAM_GONE_CODE, reason, data)
        session.relay.forwarded(routed)

    def _timed_out(self, session: ProxiedSession, clock: Clock) -> None:
        """No answer in time: the client gets -32001 at once; the upstream gets
        ``notifications/cancelled`` before the wait for its answer ends (so it learns why
        before it sees the connection close)."""
        assert clock.request_id is not None
        timed_out = session.relay.time_out(clock.request_id, self.settings.request_timeout)
        if timed_out is None:
            clock.scope.cancel()
            return
        answer, cancel = timed_out
        data = answer.forward[0].rstrip(b"\n")
        exchange = clock.exchange
        if exchange.streaming:
            exchange.send(sse_message(data))
            exchange.finish()
        else:
            exchange.respond(200, list(JSON_HEADERS), data)
        session.relay.forwarded(answer)
        session.relay.forwarded(cancel)
        self._tg.start_soon(self._notify, clock, cancel.forward[0].rstrip(b"\n"))

    async def _notify(self, clock: Clock, body: bytes) -> None:
        """POST a proxy-written notification (a cancel) upstream, then end the request's wait."""
        request = clock.request
        try:
            with anyio.move_on_after(5.0):
                response = await self.client.request(
                    "POST", self._target(request), _forward_headers(request), body
                )
                await response.read()
        except HttpError:
            pass
        finally:
            clock.scope.cancel()

    # -- GET, DELETE -----------------------------------------------------------------------
    async def _get(self, request: Request, exchange: Exchange) -> None:
        sid = request.header("mcp-session-id")
        session = self.sessions.get(sid) if sid is not None else None
        response = await self.client.request(
            "GET", self._target(request), _forward_headers(request)
        )
        if session is None or response.status != 200:
            await self._copy(response, exchange)
            return
        session.inflight += 1
        try:
            await self._stream(session, response, exchange, response.status)
        finally:
            session.inflight -= 1
            session.last_active = time.monotonic()

    async def _other(self, request: Request, exchange: Exchange) -> None:
        sid = request.header("mcp-session-id")
        response = await self.client.request(
            request.method, self._target(request), _forward_headers(request), request.body
        )
        status = response.status
        await self._copy(response, exchange)
        session = self.sessions.get(sid) if sid is not None else None
        if request.method == "DELETE" and session is not None and status < 300:
            self._end(session, "the client ended the session (DELETE)")

    # -- lifetime --------------------------------------------------------------------------
    async def sweep(self) -> None:
        """Periodically: end idle sessions, time out requests (see `http_front.sweep_period`)."""
        idle = self.settings.idle_timeout
        period = sweep_period(idle, self.settings.request_timeout)
        if period is None:
            return
        while True:
            await anyio.sleep(period)
            now = time.monotonic()
            for session in list(self.running):
                for clock in [c for c in session.clocks if c.deadline <= now]:
                    session.forget(clock)
                    self._timed_out(session, clock)
                if idle > 0 and not session.inflight and now - session.last_active >= idle:
                    self._end(session, "idle timeout")

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def close_all(self, reason: str) -> None:
        self.closing = True
        for session in list(self.running):
            self._end(session, reason)
        self.client.close()
