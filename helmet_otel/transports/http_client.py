"""A small HTTP/1.1 client on asyncio protocols and httptools, for MCP upstreams.

The counterpart of `http_server` (same parser, same style: protocol callbacks, no task per
request). Why not an HTTP library: see "HTTP client" in ``docs/design.md`` (measured). What it
does: keep-alive connections to one origin (pooled; a request that finds a pooled connection
closed by the server is sent again on a new one), ``http`` and ``https`` (TLS with the system's
trust store, SNI), request bodies sent whole with ``Content-Length``, responses streamed chunk by
chunk as they arrive (``Content-Length``, chunked, or until close), with back-pressure. No HTTP/2,
no proxies, no redirects (a 3xx is an answer like any other).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools  # pyright: ignore[reportMissingTypeStubs]

Headers = list[tuple[bytes, bytes]]
READ_LIMIT = 4 * 1024 * 1024  # stop reading a response while this much waits to be consumed
MAX_IDLE = 64  # pooled connections kept per client


class HttpError(Exception):
    """The request could not be made or its response could not be read (no status)."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> bytes:
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")


def split_url(url: str) -> tuple[Origin, str]:
    """The origin and the request target (path and query) of an ``http(s)`` URL; raises
    ValueError for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Origin(scheme, parts.hostname, port), target


class Response:
    """A response whose head has arrived; its body is read with `receive` (chunk by chunk, as
    the server sends it) or `read`. `close` abandons the rest (the connection is dropped)."""

    def __init__(self, conn: _Connection, status: int, headers: Headers) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers  # as received (names as the server spelled them)
        self._lookup = {name.lower(): value for name, value in headers}
        self._done = False  # the body was read to its end (the connection may serve others)

    def header(self, name: bytes) -> bytes | None:
        """A header by lower-case name (the last one when repeated)."""
        return self._lookup.get(name)

    @property
    def content_type(self) -> str:
        value = self._lookup.get(b"content-type", b"")
        return value.split(b";", 1)[0].strip().lower().decode("latin-1")

    async def receive(self) -> bytes:
        """The next chunk of the body, ``b""`` at its end; raises HttpError when the
        connection breaks before the end."""
        if self._done:
            return b""
        data = await self._conn.receive()
        self._done = not data
        return data

    async def read(self, limit: int = 64 * 1024 * 1024) -> bytes:
        parts: list[bytes] = []
        size = 0
        while chunk := await self.receive():
            size += len(chunk)
            if size > limit:
                self.close()
                raise HttpError(f"response body over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._conn.abandon()


class _Connection(asyncio.Protocol):
    """One connection; one request at a time."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client
        self._parser: Any = httptools.HttpResponseParser(self)  # pyright: ignore[reportUnknownMemberType]
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.used = False  # has carried a request before (a failure may be a stale keep-alive)
        self._head: asyncio.Future[Response] | None = None
        self._headers: Headers = []
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: HttpError | None = None
        self._keep_alive = False
        self._got_bytes = False
        self._until_close = False  # the body has no length: it ends when the connection does

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:  # pyright: ignore[reportUnknownMemberType]
            self._fail(HttpError(f"malformed HTTP response: {exc}"))
            self.drop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._head is not None and not self._head.done():
            self._fail(HttpError("the server closed the connection before answering"))
        elif not self._complete and self._head is not None:
            # A body without length ends at close; any other one was cut short.
            if self._until_close:
                self._complete = True
            else:
                self._error = HttpError("the server closed the connection mid-response")
        self._wake()
        self._client.forget(self)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = int(self._parser.get_status_code())
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers = []
            return
        self._keep_alive = bool(self._parser.should_keep_alive())
        lookup = {name.lower() for name, _ in self._headers}
        self._until_close = b"content-length" not in lookup and b"transfer-encoding" not in lookup
        head = self._head
        if head is not None and not head.done():
            head.set_result(Response(self, status, self._headers))

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_LIMIT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self._complete = True
        self._wake()

    # -- the request -----------------------------------------------------------------------
    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._head = asyncio.get_running_loop().create_future()
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._error = None
        self._got_bytes = False
        self.transport.write(data)
        return self._head

    @property
    def answered_nothing(self) -> bool:
        return not self._got_bytes

    async def receive(self) -> bytes:
        while not self._chunks:
            if self._complete:
                self._release()
                return b""
            if self._error is not None:
                raise self._error
            if self.lost:
                raise HttpError("the connection was closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def _release(self) -> None:
        head, self._head = self._head, None
        if head is None:
            return
        if self._keep_alive and not self.lost and not self._until_close:
            self.used = True
            self._client.release(self)
        else:
            self.drop()

    def _fail(self, error: HttpError) -> None:
        self._error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def abandon(self) -> None:
        if self._head is not None and self._complete and not self._chunks:
            self._release()
        else:
            self._head = None
            self.drop()

    def drop(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class HttpClient:
    """Requests to one origin over pooled keep-alive connections."""

    def __init__(self, origin: Origin, *, connect_timeout: float = 30.0) -> None:
        self.origin = origin
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._tls = _tls_context() if origin.tls else None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = self.origin
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), origin.host, origin.port, ssl=self._tls,
                    server_hostname=origin.host if self._tls is not None else None,
                )  # fmt: skip
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            text = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            raise HttpError(f"cannot connect to {origin.host}:{origin.port}: {text}") from None
        self._all.add(conn)
        return conn

    async def request(
        self, method: str, target: str, headers: Headers, body: bytes = b""
    ) -> Response:
        """Send a request; returns once the response's head has arrived. ``headers`` must not
        carry Host, Content-Length or Transfer-Encoding (they are written here)."""
        head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (
            method.encode(), target.encode(), self.origin.host_header)]  # fmt: skip
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        data = b"".join(head) + body
        for _attempt in range(2):
            conn = self._idle.pop() if self._idle else None
            fresh = conn is None
            if conn is None:
                conn = await self._connect()
            try:
                return await conn.send(data)
            except HttpError:
                if fresh or not conn.answered_nothing:
                    raise
                # a pooled connection the server had closed: once more on a new one
            except asyncio.CancelledError:
                conn.drop()
                raise
        raise HttpError("the server closed the connection before answering")

    def release(self, conn: _Connection) -> None:
        if len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.drop()

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def close(self) -> None:
        for conn in list(self._all):
            conn.drop()
        self._idle.clear()
