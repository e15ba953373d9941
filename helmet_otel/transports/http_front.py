"""`serve`: a Streamable HTTP endpoint in front of a stdio MCP server, one child per session.

Legacy era (``initialize``, 2025-11-25 and earlier): ``initialize`` without ``Mcp-Session-Id``
starts a session and its child and mints the id; later requests name it; ``DELETE`` ends it, so
do an idle timeout and the child's exit (after which the id gets 404). ``GET`` opens the
session's stream for server-initiated messages. 2026-07-28 era (``_meta`` carries the protocol
version; ``server/discover``): stateless POSTs, ``Mcp-Method`` / ``Mcp-Name`` checked against the
body; the requests of one client identity (its token, else its address and client name) share
one session and child, which ends after an idle gap. Every check of `http_guard` runs on the
request head before its body is read.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from helmet_otel.core.envelope import C2S
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.lifecycle import Lifecycle
from helmet_otel.core.session import Session
from helmet_otel.protocol.message import (
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    REQUEST,
    JsonId,
    Message,
    error_response,
    inspect,
)
from helmet_otel.transports.child import ServerCommand, describe_start_failure
from helmet_otel.transports.http_guard import Guard
from helmet_otel.transports.http_server import Early, Exchange, Request, start_server
from helmet_otel.transports.http_sessions import JSON_HEADERS, HttpSession, as_line
from helmet_otel.transports.mcp_headers import (
    NAME_HEADER_METHODS,
    decode_header,
    is_modern,
    meta_of,
)

HEADER_MISMATCH = -32020  # 2026-07-28: a request header disagrees with the body
SESSION_NOT_FOUND = -32001
BAD_REQUEST = -32600
SecuritySink = Callable[[dict[str, object]], None]


@dataclass
class ServeSettings:
    command: ServerCommand
    guard: Guard
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/mcp"
    max_message_size: int = 64 * 1024 * 1024
    idle_timeout: float = 1800.0
    upstream: dict[str, object] = field(default_factory=dict[str, object])
    request_timeout: float = 0.0  # 0: none


def sweep_period(idle_timeout: float, request_timeout: float) -> float | None:
    """How often a front looks for idle sessions and timed-out requests (None: never): a
    quarter of the idle timeout (0.05-5 s), an eighth of the request timeout (0.02-1 s)."""
    periods: list[float] = []
    if idle_timeout > 0:
        periods.append(min(max(idle_timeout / 4, 0.05), 5.0))
    if request_timeout > 0:
        periods.append(min(max(request_timeout / 8, 0.02), 1.0))
    return min(periods) if periods else None


def _error_body(msg_id: JsonId | None, code: int, message: str, data: object = None) -> bytes:
    return error_response(msg_id, code, message, data).rstrip(b"\n")


def header_mismatch(request: Request, msg: Message) -> str | None:
    """Why the 2026-07-28 request headers disagree with the body, or None."""
    method = request.header("mcp-method")
    if method is None:
        return "the Mcp-Method header is missing"
    if decode_header(method) != msg.method:
        return f"Mcp-Method {method!r} does not match the body's method"
    field_name = NAME_HEADER_METHODS.get(msg.method or "")
    if field_name is not None:
        params = msg.params or {}
        name = request.header("mcp-name")
        if name is None:
            return "the Mcp-Name header is missing"
        if decode_header(name) != params.get(field_name):
            return f"Mcp-Name does not match the body's params.{field_name}"
    version = request.header("mcp-protocol-version")
    meta = meta_of(msg) or {}
    if (
        version is not None
        and META_PROTOCOL_VERSION in meta
        and version != meta[META_PROTOCOL_VERSION]
    ):
        return "MCP-Protocol-Version does not match the body's _meta protocol version"
    return None


class McpFront:
    """The MCP endpoint (the `http_server.Handler`): gate, era, session, then the session routes."""

    def __init__(
        self,
        settings: ServeSettings,
        interceptors_for: Callable[[Session], Sequence[Interceptor]],
        on_security: SecuritySink,
        stderr: Callable[[bytes], None],
        tg: TaskGroup,
        *,
        scrub: Callable[[str], str] = str,
    ) -> None:
        self.settings = settings
        self.guard = settings.guard
        self._interceptors_for = interceptors_for
        self._on_security = on_security
        self._stderr = stderr
        self._scrub = scrub  # for our own stderr lines (the CLI passes the scrubber)
        self._tg = tg
        self.sessions: dict[str, HttpSession] = {}  # by Mcp-Session-Id (legacy)
        self.modern: dict[str, HttpSession] = {}  # by client identity (2026-07-28)
        self.running: set[HttpSession] = set()
        self.closing = False
        limit = settings.max_message_size
        self.too_large = Early(
            413, list(JSON_HEADERS),
            _error_body(None, BAD_REQUEST, f"message too large: the limit is {limit} bytes "
                        "(--max-message-size)", {"limit": limit}),
        )  # fmt: skip

    # -- the gate (request head) -----------------------------------------------------------
    def check(self, request: Request, length: int | None) -> Early | None:
        guard = self.guard
        address = request.client[0]
        if request.path != self.settings.path:
            return Early(404, list(JSON_HEADERS), _error_body(None, BAD_REQUEST, "not found"))
        if guard.blocked(address):
            self._auth_failed(request, "too many failed authentications", 429)
            return Early(
                429, [*JSON_HEADERS, (b"retry-after", b"%d" % int(guard.block_seconds))],
                _error_body(None, BAD_REQUEST, "too many failed authentications"),
            )  # fmt: skip
        if not guard.host_ok(request.header("host")):
            return Early(
                403, list(JSON_HEADERS), _error_body(None, BAD_REQUEST, "Host not allowed")
            )
        if not guard.origin_ok(request.header("origin")):
            return Early(
                403, list(JSON_HEADERS), _error_body(None, BAD_REQUEST, "Origin not allowed")
            )
        verdict = guard.authenticate(request.header("authorization"))
        if verdict is not None:
            self._auth_failed(request, verdict.reason, 401)
            return Early(
                401, [*JSON_HEADERS, (b"www-authenticate", b'Bearer realm="helmet-otel"')],
                _error_body(None, BAD_REQUEST, f"unauthorized: {verdict.reason}"),
            )  # fmt: skip
        if request.method not in ("POST", "GET", "DELETE"):
            return Early(405, [(b"allow", b"GET, POST, DELETE")])
        if length is not None and length > self.settings.max_message_size:
            return self.too_large
        return None

    def _auth_failed(self, request: Request, reason: str, status: int) -> None:
        """Report a refused authentication (401, or 429 while the address is blocked); the
        presented token is never part of it. ``blocked``: this failure earned the block."""
        address, port = request.client
        blocked = status == 401 and self.guard.failed(address)
        self._on_security(
            {"type": "auth_failure", "client.address": address, "client.port": port,
             "reason": reason, "status": status, "blocked": blocked,
             "block_seconds": self.guard.block_seconds, "time_ns": time.time_ns()}
        )  # fmt: skip

    # -- requests --------------------------------------------------------------------------
    def handle(self, request: Request, exchange: Exchange) -> None:
        if self.closing:
            exchange.respond(
                503, list(JSON_HEADERS), _error_body(None, BAD_REQUEST, "shutting down")
            )
        elif request.method == "POST":
            self._post(request, exchange)
        elif request.method == "GET":
            self._get(request, exchange)
        else:
            self._delete(request, exchange)

    def _legacy(
        self, request: Request, exchange: Exchange, msg_id: JsonId | None
    ) -> HttpSession | None:
        sid = request.header("mcp-session-id")
        if sid is None:
            exchange.respond(
                400, list(JSON_HEADERS),
                _error_body(msg_id, BAD_REQUEST, "Bad Request: Mcp-Session-Id header is required"),
            )  # fmt: skip
            return None
        session = self.sessions.get(sid)
        if session is None or session.gone:
            exchange.respond(
                404, list(JSON_HEADERS), _error_body(msg_id, SESSION_NOT_FOUND, "Session not found")
            )
            return None
        return session

    def _post(self, request: Request, exchange: Exchange) -> None:
        accept = request.header("accept") or "*/*"
        sse = "text/event-stream" in accept or "*/*" in accept
        line = as_line(request.body)
        msg = inspect(line)
        msg_id = msg.id if msg.kind is REQUEST else None
        if is_modern(msg):
            why = header_mismatch(request, msg)
            if why is not None:
                exchange.respond(
                    400,
                    list(JSON_HEADERS),
                    _error_body(msg_id, HEADER_MISMATCH, f"Header mismatch: {why}"),
                )
                return
            session = self._modern_session(request, msg, exchange)
        elif (
            msg.kind is REQUEST
            and msg.method == "initialize"
            and "mcp-session-id" not in request.headers
        ):
            session = self._new_session(request, exchange, legacy=True)
        else:
            session = self._legacy(request, exchange, msg_id)
        if session is not None:
            session.post(line, exchange, sse, msg_id)

    def _get(self, request: Request, exchange: Exchange) -> None:
        if "mcp-session-id" not in request.headers:
            exchange.respond(405, [(b"allow", b"POST")])
            return
        if "text/event-stream" not in (request.header("accept") or ""):
            exchange.respond(
                406,
                list(JSON_HEADERS),
                _error_body(None, BAD_REQUEST, "GET needs Accept: text/event-stream"),
            )
            return
        session = self._legacy(request, exchange, None)
        if session is not None:
            session.open_stream(exchange)

    def _delete(self, request: Request, exchange: Exchange) -> None:
        if "mcp-session-id" not in request.headers:
            exchange.respond(405, [(b"allow", b"GET, POST")])
            return
        session = self._legacy(request, exchange, None)
        if session is not None:
            session.close("the client ended the session (DELETE)")
            exchange.respond(200, [])

    # -- sessions --------------------------------------------------------------------------
    def _identity(self, request: Request, msg: Message) -> str:
        principal = self.guard.principal(request.header("authorization"))
        if principal is not None:
            return principal
        info = (meta_of(msg) or {}).get(META_CLIENT_INFO)
        name = info.get("name") if isinstance(info, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return f"{request.client[0]}|{name if isinstance(name, str) else ''}"

    def _modern_session(
        self, request: Request, msg: Message, exchange: Exchange
    ) -> HttpSession | None:
        identity = self._identity(request, msg)
        session = self.modern.get(identity)
        if session is not None and not session.gone:
            return session
        session = self._new_session(request, exchange, legacy=False)
        if session is not None:
            self.modern[identity] = session
        return session

    def _new_session(
        self, request: Request, exchange: Exchange, *, legacy: bool
    ) -> HttpSession | None:
        core = Session(transport="http")
        if legacy:
            core.mcp_session_id = secrets.token_urlsafe(24)
            core.revision += 1  # the telemetry feed hands the id over with the session's info
        interceptors = self._interceptors_for(core)
        address, port = request.client
        upstream: dict[str, object] = {
            **self.settings.upstream, "client.address": address, "client.port": port,
            "network.transport": "tcp", "network.protocol.name": "http",
        }  # fmt: skip
        try:
            session = HttpSession(
                self.settings.command, core, interceptors, legacy=legacy, stderr=self._stderr,
                on_gone=self._gone, upstream=upstream,
                request_timeout=self.settings.request_timeout,
            )  # fmt: skip
        except OSError as exc:
            self._start_failed(core, interceptors, exc, request, exchange)
            return None
        if core.mcp_session_id is not None:
            self.sessions[core.mcp_session_id] = session
        self.running.add(session)
        self._tg.start_soon(session.run)
        return session

    def _start_failed(
        self, core: Session, interceptors: Sequence[Interceptor], exc: OSError, request: Request,
        exchange: Exchange,
    ) -> None:  # fmt: skip
        status, reason = describe_start_failure(self.settings.command, exc)
        self._stderr(f"helmet-otel: {self._scrub(reason)}\n".encode())
        lifecycle = Lifecycle(core, interceptors)
        lifecycle.upstream_failed(status, reason)
        routed = lifecycle.relay.route(C2S, [as_line(request.body)])
        body = (
            routed.replies[0].rstrip(b"\n") if routed.replies else _error_body(None, -32000, reason)
        )
        exchange.respond(200 if routed.replies else 502, list(JSON_HEADERS), body)
        lifecycle.relay.forwarded(routed)
        lifecycle.ended()

    def _gone(self, session: HttpSession) -> None:
        self.running.discard(session)
        sid = session.session.mcp_session_id
        if sid is not None and self.sessions.get(sid) is session:
            del self.sessions[sid]
        for identity, other in list(self.modern.items()):
            if other is session:
                del self.modern[identity]

    async def sweep(self) -> None:
        """Periodically: end sessions with nothing in flight and no stream open for
        ``idle_timeout``; answer requests older than ``request_timeout`` (an eighth of it late
        at most, one second at most)."""
        idle = self.settings.idle_timeout
        timeout = self.settings.request_timeout
        period = sweep_period(idle, timeout)
        if period is None:
            return
        while True:
            await anyio.sleep(period)
            now = time.monotonic()
            for session in list(self.running):
                if timeout > 0:
                    session.expire(now)
                if idle > 0 and session.idle and now - session.last_active >= idle:
                    session.close("idle timeout")

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def close_all(self, reason: str) -> None:
        self.closing = True
        for session in list(self.running):
            session.close(reason)


class Front(Protocol):
    """What `run_front` serves: an `http_server.Handler` that owns sessions."""

    too_large: Early

    @property
    def busy(self) -> bool:
        """Sessions are still ending."""
        ...

    def check(self, request: Request, length: int | None) -> Early | None: ...

    def handle(self, request: Request, exchange: Exchange) -> None: ...

    async def sweep(self) -> None:
        """Periodic housekeeping (idle sessions, timed-out requests), until cancelled."""
        ...

    def close_all(self, reason: str) -> None: ...


async def run_front(
    make_front: Callable[[TaskGroup], Front], host: str, port: int, max_message_size: int,
    shutdown_wait: float, on_listening: Callable[[str, int], None],
    stop: anyio.Event | None = None,
) -> int:  # fmt: skip
    """Serve until SIGINT/SIGTERM/SIGHUP (or ``stop``); then end every session, bounded."""
    async with anyio.create_task_group() as tg:
        front = make_front(tg)
        server = await start_server(
            front, host, port, max_body=max_message_size, too_large=front.too_large
        )
        bound_host, bound_port = server.sockets[0].getsockname()[:2]
        on_listening(str(bound_host), int(bound_port))
        tg.start_soon(front.sweep)
        stopped = stop or anyio.Event()
        reason = "proxy stopped"
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:

            async def watch() -> None:
                nonlocal reason
                async for signum in signals:
                    reason = f"proxy received {signal.Signals(signum).name}"
                    stopped.set()
                    return

            tg.start_soon(watch)
            await stopped.wait()
        with anyio.CancelScope(shield=True):
            server.close()
            front.close_all(reason)
            with anyio.move_on_after(shutdown_wait):
                while front.busy:
                    await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    return 0


async def serve(
    settings: ServeSettings,
    interceptors_for: Callable[[Session], Sequence[Interceptor]],
    *,
    on_security: SecuritySink,
    stderr: Callable[[bytes], None],
    on_listening: Callable[[str, int], None],
    stop: anyio.Event | None = None,
) -> int:
    """Serve a stdio server (one child per session) until signalled or ``stop``."""

    def make_front(tg: TaskGroup) -> Front:
        return McpFront(settings, interceptors_for, on_security, stderr, tg)

    return await run_front(
        make_front, settings.host, settings.port, settings.max_message_size,
        settings.command.grace * 2 + 3.0, on_listening, stop,
    )  # fmt: skip
