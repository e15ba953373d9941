"""The client side of MCP over HTTP: one upstream session with a remote server.

`StreamableUpstream` speaks Streamable HTTP: each message is a POST; the answer is JSON or an
SSE stream whose events are delivered one by one as they arrive; ``Mcp-Session-Id`` and
``MCP-Protocol-Version`` are carried once the handshake gave them (2026-07-28 requests carry
``Mcp-Method``/``Mcp-Name`` instead); the GET stream for server-initiated messages is opened when
the server offers it. A server that answers 404 for the session (it expired or restarted) gets
the client's own ``initialize`` and ``notifications/initialized`` again (the duplicate answer is
swallowed) and the message is sent once more, so the client never sees it. Many servers built
on the TypeScript SDK's examples answer an unknown session with 400 "No valid session ID"
instead; that counts as the same. A request's SSE stream that ends before its answer is resumed
from its last event id (a GET with ``Last-Event-ID``, after the server's ``retry`` hint), and so
is the GET stream; a stream that cannot be resumed (no event ids, or the server refuses) makes
the request fail at once instead of waiting for the timeout. `end` DELETEs the session.

`SseUpstream` is the deprecated HTTP+SSE transport (2024-11-05): a GET stream whose first event
names the endpoint to POST messages to; every answer arrives on the stream. `connect` falls
back to it when the URL refuses the first POST with a 4xx.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urljoin, urlsplit

import anyio
import orjson
from anyio.abc import TaskGroup

from helmet_otel.protocol.message import NOTIFICATION, REQUEST, Message
from helmet_otel.protocol.sse import SseSplitter
from helmet_otel.transports.http_client import Headers, HttpClient, HttpError, Response, split_url
from helmet_otel.transports.mcp_headers import is_modern, modern_headers

Deliver = Callable[[bytes], Awaitable[None]]  # one server message (no trailing newline)
Diag = Callable[[str], None]
ACCEPT = (b"accept", b"application/json, text/event-stream")
JSON_TYPE = (b"content-type", b"application/json")
SSE_ACCEPT = (b"accept", b"text/event-stream")
GET_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)  # reopening a GET stream the server ended
MAX_RETRY_DELAY = 10.0  # a server's retry hint is followed up to this (seconds)
ERROR_BODY_LIMIT = 1024 * 1024
ENDED_EARLY = "the MCP server ended the response stream before answering"


def upstream_info(url: str, shown_url: str) -> dict[str, object]:
    """What a session's start says of the upstream (``shown_url``: without credentials)."""
    origin, _ = split_url(url)
    return {
        "url": shown_url, "server.address": origin.host, "server.port": origin.port,
        "network.transport": "tcp", "network.protocol.name": "http",
        "upstream.network.transport": "tcp", "upstream.network.protocol.name": "http",
    }  # fmt: skip


@dataclass(slots=True)
class Failure:
    """A message the upstream did not take: ``status`` (None: no HTTP answer) and why."""

    status: int | None
    reason: str
    www_authenticate: str | None = None


def _expired(status: int, body: bytes) -> bool:
    """The server no longer knows the session: 404 (the spec), or 400 naming the session id
    (the TypeScript SDK examples, server-everything among them)."""
    if status == 404:
        return True
    return status == 400 and b"session" in body.lower()


def _describe(response: Response, body: bytes) -> Failure:
    text = ""
    try:
        parsed: object = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", "replace").strip()
    else:
        error = cast(dict[str, object], parsed).get("error") if isinstance(parsed, dict) else None
        message = cast(dict[str, object], error).get("message") if isinstance(error, dict) else None
        text = message if isinstance(message, str) else ""
    reason = f"HTTP {response.status} from the MCP server" + (f": {text}" if text else "")
    auth = response.header(b"www-authenticate")
    return Failure(response.status, reason, auth.decode("latin-1") if auth else None)


@dataclass(slots=True)
class Cursor:
    """How far an SSE stream got: the last event id the server gave (to resume it with
    ``Last-Event-ID``) and its ``retry`` hint (milliseconds)."""

    last_id: str | None = None
    retry_ms: int | None = None


async def relay_events(response: Response, deliver: Deliver, cursor: Cursor | None = None) -> None:
    """Deliver each ``message`` event of an SSE response as it arrives (keep-alive comments
    and other events are read and dropped: stdio has nothing to keep alive)."""
    splitter = SseSplitter()
    while chunk := await response.receive():
        for event in splitter.feed(chunk):
            if cursor is not None:
                if event.id is not None:
                    cursor.last_id = event.id
                if event.retry is not None:
                    cursor.retry_ms = event.retry
            if event.data is not None and event.event == "message" and event.data.strip():
                await deliver(event.data)


async def relay_answer(response: Response, deliver: Deliver, cursor: Cursor | None = None) -> None:
    """A 2xx answer to a POST: JSON (one message or a batch) or an SSE stream."""
    if response.content_type == "text/event-stream":
        await relay_events(response, deliver, cursor)
        return
    body = await response.read()
    if body.strip():
        await deliver(body.strip())


class StreamableUpstream:
    def __init__(
        self, url: str, headers: Headers, deliver: Deliver, diag: Diag, tg: TaskGroup
    ) -> None:  # fmt: skip
        origin, self.target = split_url(url)
        self.url = url
        self.client = HttpClient(origin)
        self.headers = headers
        self.deliver = deliver
        self.diag = diag
        self._tg = tg
        self.session_id: bytes | None = None
        self.protocol_version: bytes | None = None
        self._initialize: bytes | None = None  # the client's, as forwarded, for a renewal
        self._initialized: bytes | None = None
        self._generation = 0
        self._renewing = anyio.Lock()
        self._get_scope: anyio.CancelScope | None = None
        self.renewals = 0

    def _headers(self, msg: Message) -> Headers:
        if is_modern(msg):
            return [*self.headers, ACCEPT, JSON_TYPE, *modern_headers(msg)]
        return [*self._session_headers(), ACCEPT, JSON_TYPE]

    async def post(self, body: bytes, msg: Message) -> Response:
        return await self.client.request("POST", self.target, self._headers(msg), body)

    async def send(
        self, body: bytes, msg: Message, answered: Callable[[], bool] | None = None
    ) -> Failure | None:
        """POST one client message and deliver what answers it; a `Failure` when the server
        did not take it or (``answered`` given: a request) ended its SSE stream before the
        answer and the stream could not be resumed (the caller answers the request with it)."""
        initialize = msg.kind is REQUEST and msg.method == "initialize"
        if initialize:
            self._initialize = body
            self.session_id = None
        elif msg.kind is NOTIFICATION and msg.method == "notifications/initialized":
            self._initialized = body
        generation = self._generation
        try:
            response = await self.post(body, msg)
            if response.status >= 300 and self.session_id is not None and not initialize:
                error = await response.read(ERROR_BODY_LIMIT)
                if not _expired(response.status, error):
                    return _describe(response, error)
                if not await self._renew(generation):
                    return _describe(response, error)
                response = await self.post(body, msg)  # once more, in the new session
            if response.status >= 300:
                return _describe(response, await response.read(ERROR_BODY_LIMIT))
            if initialize:
                await self._take_session(response, msg)
                return None
            cursor = Cursor()
            try:
                await relay_answer(response, self.deliver, cursor)
            except HttpError:
                if answered is None or cursor.last_id is None:
                    raise
            if (
                answered is not None
                and response.content_type == "text/event-stream"
                and not answered()
            ):
                return await self._resume(cursor, answered)
        except HttpError as exc:
            return Failure(None, f"MCP server unreachable: {exc}")
        if msg.kind is NOTIFICATION and msg.method == "notifications/initialized":
            self._open_get_stream()
        return None

    async def _take_session(self, response: Response, msg: Message, deliver: bool = True) -> None:
        """The answer to ``initialize``: the session id, the negotiated protocol version."""
        sid = response.header(b"mcp-session-id")
        self.session_id = sid if sid else None

        async def take(data: bytes) -> None:
            try:
                parsed = json.loads(data)
                version = parsed["result"]["protocolVersion"]
            except (ValueError, KeyError, TypeError):
                version = None
            if isinstance(version, str):
                self.protocol_version = version.encode()
            if deliver:
                await self.deliver(data)

        await relay_answer(response, take)

    async def _renew(self, generation: int) -> bool:
        """The session expired: initialize again with the client's own handshake. True when
        a new session is open (now or by another message that saw the expiry first)."""
        async with self._renewing:
            if self._generation != generation:
                return self.session_id is not None
            if self._initialize is None:
                return False
            self.session_id = None
            self._stop_get_stream()
            init = self._initialize
            try:
                response = await self.post(init, _INITIALIZE)
                if response.status >= 300:
                    await response.read(ERROR_BODY_LIMIT)
                    return False
                await self._take_session(response, _INITIALIZE, deliver=False)
                if self._initialized is not None:
                    note = await self.post(self._initialized, _INITIALIZED)
                    await note.read(ERROR_BODY_LIMIT)
            except HttpError as exc:
                self.diag(
                    f"the MCP server forgot the session and could not be re-initialized: {exc}"
                )
                return False
            self._generation += 1
            self.renewals += 1
            self.diag(
                "the MCP server forgot the session: re-initialized it with the client's handshake"
            )
            self._open_get_stream()
            return True

    async def _resume(self, cursor: Cursor, answered: Callable[[], bool]) -> Failure | None:
        """A request's SSE stream ended before its answer: while the server gave event ids,
        GET the stream again from the last one (``Last-Event-ID``), after the server's
        ``retry`` hint or a backoff; up to five tries in a row that bring no new event."""
        tries = 0
        while cursor.last_id is not None and tries < len(GET_RETRY_DELAYS):
            delay = GET_RETRY_DELAYS[tries] if cursor.retry_ms is None else cursor.retry_ms / 1000
            await anyio.sleep(min(delay, MAX_RETRY_DELAY))
            tries += 1
            seen = cursor.last_id
            headers = [*self._session_headers(), SSE_ACCEPT, (b"last-event-id", seen.encode())]
            try:
                response = await self.client.request("GET", self.target, headers)
            except HttpError:
                continue
            if response.status != 200 or response.content_type != "text/event-stream":
                await response.read(ERROR_BODY_LIMIT)
                break
            try:
                await relay_events(response, self.deliver, cursor)
            except HttpError:
                pass
            finally:
                response.close()
            if answered():
                return None
            if cursor.last_id != seen:
                tries = 0
        return Failure(None, ENDED_EARLY)

    # -- the GET stream --------------------------------------------------------------------
    def _open_get_stream(self) -> None:
        if self._get_scope is None:
            self._get_scope = anyio.CancelScope()
            self._tg.start_soon(self._get_stream, self._get_scope)

    def _stop_get_stream(self) -> None:
        if self._get_scope is not None:
            self._get_scope.cancel()
            self._get_scope = None

    async def _get_stream(self, scope: anyio.CancelScope) -> None:
        """Server-initiated messages, for as long as the server offers the stream."""
        with scope:
            failures = 0
            cursor = Cursor()  # resumed from its last event id when the server gave ids
            while True:
                generation = self._generation
                headers = [*self._session_headers(), SSE_ACCEPT]
                if cursor.last_id is not None:
                    headers.append((b"last-event-id", cursor.last_id.encode()))
                try:
                    response = await self.client.request("GET", self.target, headers)
                except HttpError:
                    response = None
                if response is not None and response.status == 200:
                    failures = 0
                    try:
                        await relay_events(response, self.deliver, cursor)
                    except HttpError:
                        pass
                    finally:
                        response.close()
                elif response is not None:
                    body = await response.read(ERROR_BODY_LIMIT)
                    if self.session_id is not None and _expired(response.status, body):
                        await self._renew(generation)
                        return
                    return  # 405 and the like: the server has no such stream
                if failures >= len(GET_RETRY_DELAYS):
                    return
                delay = GET_RETRY_DELAYS[failures]
                if cursor.retry_ms is not None:
                    delay = min(cursor.retry_ms / 1000, MAX_RETRY_DELAY)
                await anyio.sleep(delay)
                failures += 1

    def _session_headers(self) -> Headers:
        headers = list(self.headers)
        if self.session_id is not None:
            headers.append((b"mcp-session-id", self.session_id))
        if self.protocol_version is not None:
            headers.append((b"mcp-protocol-version", self.protocol_version))
        return headers

    async def end(self) -> None:
        """DELETE the session (bounded; a server that refuses it is fine)."""
        self._stop_get_stream()
        if self.session_id is not None:
            with anyio.move_on_after(2.0):
                try:
                    response = await self.client.request(
                        "DELETE", self.target, self._session_headers()
                    )
                    await response.read(ERROR_BODY_LIMIT)
                except HttpError:
                    pass
        self.client.close()


_INITIALIZE = Message(REQUEST, 0, "initialize")
_INITIALIZED = Message(NOTIFICATION, None, "notifications/initialized")


class SseUpstream:
    """The deprecated HTTP+SSE transport: a GET stream, and an endpoint to POST to."""

    def __init__(self, url: str, headers: Headers, deliver: Deliver, diag: Diag) -> None:
        origin, self.target = split_url(url)
        self.url = url
        self.origin = origin
        self.client = HttpClient(origin)
        self.headers = headers
        self.deliver = deliver
        self.diag = diag
        self.endpoint: str | None = None
        self._stream: Response | None = None
        self._splitter = SseSplitter()

    async def open(self) -> bool:
        """GET the stream and read up to its ``endpoint`` event; False when this is not an
        HTTP+SSE server."""
        try:
            response = await self.client.request("GET", self.target, [*self.headers, SSE_ACCEPT])
        except HttpError:
            return False
        if response.status != 200 or response.content_type != "text/event-stream":
            response.close()
            return False
        with anyio.move_on_after(10.0):
            while self.endpoint is None:
                chunk = await response.receive()
                if not chunk:
                    break
                for event in self._splitter.feed(chunk):
                    if event.event == "endpoint" and event.data is not None:
                        self._take_endpoint(event.data.decode("utf-8", "replace").strip())
                        break
        if self.endpoint is None:
            response.close()
            return False
        self._stream = response
        return True

    def _take_endpoint(self, value: str) -> None:
        url = urljoin(self.url, value)
        parts = urlsplit(url)
        if (parts.scheme, parts.hostname, parts.port or self.origin.port) != (
            self.origin.scheme, self.origin.host, self.origin.port,
        ):  # fmt: skip
            self.diag(f"ignored an HTTP+SSE endpoint on another origin: {value!r}")
            return
        self.endpoint = parts.path + (f"?{parts.query}" if parts.query else "")

    async def run(self) -> None:
        """Deliver the stream's messages until it ends."""
        response = self._stream
        assert response is not None
        try:
            for event in self._splitter.feed(b""):
                if event.data is not None and event.event == "message":
                    await self.deliver(event.data)
            while chunk := await response.receive():
                for event in self._splitter.feed(chunk):
                    if event.data is not None and event.event == "message" and event.data.strip():
                        await self.deliver(event.data)
        except HttpError:
            pass

    async def send(
        self, body: bytes, msg: Message, answered: Callable[[], bool] | None = None
    ) -> Failure | None:
        """POST one message to the endpoint (answers come on the stream: ``answered`` is
        not used)."""
        assert self.endpoint is not None
        try:
            response = await self.client.request(
                "POST", self.endpoint, [*self.headers, JSON_TYPE], body
            )
            answer = await response.read(ERROR_BODY_LIMIT)
        except HttpError as exc:
            return Failure(None, f"MCP server unreachable: {exc}")
        if response.status >= 300:
            return _describe(response, answer)
        return None

    async def end(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self.client.close()
