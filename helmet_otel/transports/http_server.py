"""A small HTTP/1.1 server on asyncio protocols and httptools (the parser uvicorn uses).

Why not an ASGI server: see "HTTP stack" in ``docs/design.md`` (measured: the ASGI layer costs
3-4 times the whole server's time per request). What it does: keep-alive, requests answered in
order on a connection (one at a time; pipelined requests wait their turn), ``Content-Length`` or
chunked request bodies, a body limit enforced before the body is read, ``Expect: 100-continue``,
whole responses or chunked streams (SSE), and a callback when the client goes away before its
response is finished. Handlers are plain callbacks on the event loop: no task per request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import httptools  # pyright: ignore[reportMissingTypeStubs]

Headers = list[tuple[bytes, bytes]]

_REASONS = {
    200: b"OK", 202: b"Accepted", 204: b"No Content", 400: b"Bad Request",
    401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    406: b"Not Acceptable", 413: b"Content Too Large", 415: b"Unsupported Media Type",
    429: b"Too Many Requests", 500: b"Internal Server Error", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout",
}  # fmt: skip
WRITE_HIGH_WATER = 1024 * 1024
LINGER_LIMIT = 16 * 1024 * 1024  # body bytes read and dropped after a refusal before closing


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Status")


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its values joined by ", "
    client: tuple[str, int]
    server: tuple[str, int]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass(slots=True)
class Early:
    """An answer decided from the head alone (before the body is read): the connection closes."""

    status: int
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""


class Handler(Protocol):
    def check(self, request: Request, length: int | None) -> Early | None:
        """The head has arrived (``request.body`` is empty; ``length`` is the declared body
        size, None when chunked): refuse it here (auth, Origin, size) or return None."""
        ...

    def handle(self, request: Request, exchange: Exchange) -> None:
        """The whole request has arrived: answer it through ``exchange`` (now or later)."""
        ...


class Exchange:
    """One request's response: a whole one (`respond`) or a chunked stream (`start`, `send`,
    `finish`). ``on_close`` is called when the client goes away before the response is done."""

    __slots__ = ("_conn", "done", "keep_alive", "on_close", "streaming")

    def __init__(self, conn: HttpConnection, keep_alive: bool) -> None:
        self._conn = conn
        self.keep_alive = keep_alive
        self.streaming = False
        self.done = False
        self.on_close: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self.done or self._conn.lost

    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        if self.closed:
            return
        self.done = True
        conn = self._conn
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status))]
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        conn.write(b"".join(head) + body)
        conn.finished(self)

    def start(self, status: int, headers: Headers) -> None:
        """Start a chunked response (an SSE stream)."""
        if self.closed or self.streaming:
            return
        self.streaming = True
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status))]
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        self._conn.write(b"".join(head))

    def send(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self._conn.write(b"%x\r\n%s\r\n" % (len(data), data))

    def finish(self) -> None:
        if self.closed:
            return
        self.done = True
        self._conn.write(b"0\r\n\r\n")
        self._conn.finished(self)

    @property
    def buffered(self) -> int:
        return self._conn.buffered

    async def drain(self) -> None:
        await self._conn.drain()


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, hands them to the handler one at a time."""

    def __init__(self, handler: Handler, max_body: int, too_large: Early) -> None:
        self._handler = handler
        self._max_body = max_body
        self._too_large = too_large
        self._parser: Any = httptools.HttpRequestParser(self)  # pyright: ignore[reportUnknownMemberType]
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] = ("", 0)
        self._server: tuple[str, int] = ("", 0)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._request: Request | None = None
        self._refused = False
        self._linger = 0
        self._queue: deque[tuple[Request, bool]] = deque()
        self._current: Exchange | None = None
        self.lost = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        if isinstance(peer, tuple):
            self._client = (str(peer[0]), int(peer[1]))  # pyright: ignore[reportUnknownArgumentType]
        if isinstance(sock, tuple):
            self._server = (str(sock[0]), int(sock[1]))  # pyright: ignore[reportUnknownArgumentType]

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pyright: ignore[reportUnknownMemberType]
            self._fail(400, b"upgrades are not supported")
        except httptools.HttpParserError:  # pyright: ignore[reportUnknownMemberType]
            if not self._refused:
                self._fail(400, b"malformed HTTP request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        current, self._current = self._current, None
        self._queue.clear()
        self._wake()
        if current is not None and not current.done and current.on_close is not None:
            current.on_close()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        parsed: Any = httptools.parse_url(self._url)  # pyright: ignore[reportUnknownMemberType]
        path = cast(bytes, parsed.path or b"/").decode("latin-1")
        query = cast(bytes | None, parsed.query)
        method = cast(bytes, self._parser.get_method()).decode("latin-1")
        request = Request(
            method, path, query.decode("latin-1") if query else "", self._headers, self._client,
            self._server,
        )  # fmt: skip
        self._request = request
        length_text = self._headers.get("content-length")
        length = int(length_text) if length_text and length_text.isdigit() else None
        early = self._handler.check(request, length)
        if early is None and length is not None and length > self._max_body:
            early = self._too_large
        if early is not None:
            self._refuse(early)
            return
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:  # reading what the client still sends, so it sees our answer
            self._linger -= len(body)
            if self._linger < 0:
                self.close()
            return
        self._size += len(body)
        if self._size > self._max_body:
            self._refuse(self._too_large)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = self._request
        if self._refused:
            self.close()
            return
        if request is None:
            return
        request.body = b"".join(self._body)
        self._body = []
        self._request = None
        keep_alive = bool(self._parser.should_keep_alive())
        if self._current is None:
            self._dispatch(request, keep_alive)
        else:
            self._queue.append((request, keep_alive))

    # -- plumbing --------------------------------------------------------------------------
    def _dispatch(self, request: Request, keep_alive: bool) -> None:
        exchange = Exchange(self, keep_alive)
        self._current = exchange
        self._handler.handle(request, exchange)

    def finished(self, exchange: Exchange) -> None:
        if exchange is not self._current:
            return
        self._current = None
        if not exchange.keep_alive:
            self.close()
        elif self._queue:
            self._dispatch(*self._queue.popleft())

    def _refuse(self, early: Early) -> None:
        """Answer from the head, then close once the request has ended: what the client still
        sends of its body (up to LINGER_LIMIT bytes) is read and dropped, so that it reads our
        answer instead of a reset connection."""
        self._refused = True
        self._linger = LINGER_LIMIT
        request = self._request
        if request is None or self._current is not None:
            self.close()
            return
        exchange = Exchange(self, keep_alive=True)  # (closed by on_message_complete)
        self._current = exchange
        exchange.respond(early.status, [*early.headers, (b"connection", b"close")], early.body)

    def _fail(self, status: int, message: bytes) -> None:
        self._refused = True
        if self._current is None and self._transport is not None:
            self._transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, reason(status), len(message), message)
            )
        self.close()

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.lost:
            self._transport.write(data)

    @property
    def buffered(self) -> int:
        transport = self._transport
        return 0 if transport is None or self.lost else transport.get_write_buffer_size()

    async def drain(self) -> None:
        while self._paused and not self.lost:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _wake(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


async def start_server(
    handler: Handler, host: str, port: int, *, max_body: int, too_large: Early | None = None
) -> asyncio.Server:
    """Listen on ``host:port`` (port 0: any free port); the caller closes the server.
    ``too_large`` answers a body over ``max_body`` (default: a bare 413)."""
    loop = asyncio.get_running_loop()
    refusal = too_large or Early(413)
    return await loop.create_server(
        lambda: HttpConnection(handler, max_body, refusal),
        host,
        port,
        reuse_address=True,
        backlog=1024,
    )
