"""Which HTTP server stack for `serve`: loopback round trip and calls/s of candidate stacks.

Usage (from the repository root; the candidates not installed are skipped)::

    .venv/bin/python benchmarks/bench_http_stacks.py [--calls 2000] [--pipelined 20000]

Every candidate serves ``POST /mcp`` and answers with the request body as ``application/json``
(what `serve` does for a call whose answer is one JSON message), in its own process on
127.0.0.1, on uvloop where the stack allows it. The client is the same raw asyncio client for
all of them (keep-alive connections, no HTTP library): p50/p90 of ``--calls`` sequential round
trips after a warm-up, then ``--pipelined`` calls over 64 connections with one request in flight
on each. This measures the stack alone; `bench_http.py` measures `serve` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello world"}}}'
CANDIDATES = ("raw-httptools", "raw-h11", "uvicorn-asgi", "uvicorn-starlette", "aiohttp")
NEEDS = {
    "raw-httptools": ("httptools",),
    "raw-h11": ("h11",),
    "uvicorn-asgi": ("uvicorn", "httptools"),
    "uvicorn-starlette": ("uvicorn", "httptools", "starlette"),
    "aiohttp": ("aiohttp",),
}


# --- the servers --------------------------------------------------------------------------------


def _uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve_raw_httptools(sock: socket.socket) -> None:
    import httptools

    class Proto(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.body = bytearray()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_begin(self) -> None:
            self.body = bytearray()

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            body = bytes(self.body)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % len(body)
                + body
            )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, sock=sock)
        await server.serve_forever()

    _uvloop()
    asyncio.run(main())


def serve_raw_h11(sock: socket.socket) -> None:
    import h11

    class Proto(asyncio.Protocol):
        def __init__(self) -> None:
            self.conn = h11.Connection(h11.SERVER)
            self.body = bytearray()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def data_received(self, data: bytes) -> None:
            conn = self.conn
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                        continue
                    return
                if isinstance(event, h11.Request):
                    self.body = bytearray()
                elif isinstance(event, h11.Data):
                    self.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    body = bytes(self.body)
                    headers = [
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                    ]
                    out = conn.send(h11.Response(status_code=200, headers=headers))
                    out += conn.send(h11.Data(data=body)) or b""
                    out += conn.send(h11.EndOfMessage()) or b""
                    self.transport.write(out)
                elif isinstance(event, h11.ConnectionClosed):
                    return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, sock=sock)
        await server.serve_forever()

    _uvloop()
    asyncio.run(main())


async def _asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _uvicorn(app: Any, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", log_level="error", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    _uvloop()
    asyncio.run(server.serve(sockets=[sock]))


def serve_uvicorn_asgi(sock: socket.socket) -> None:
    _uvicorn(_asgi_echo, sock)


def serve_uvicorn_starlette(sock: socket.socket) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def mcp(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    _uvicorn(Starlette(routes=[Route("/mcp", mcp, methods=["POST"])]), sock)


def serve_aiohttp(sock: socket.socket) -> None:
    from aiohttp import web

    async def mcp(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/mcp", mcp)
    _uvloop()
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


SERVERS: dict[str, Callable[[socket.socket], None]] = {
    "raw-httptools": serve_raw_httptools,
    "raw-h11": serve_raw_h11,
    "uvicorn-asgi": serve_uvicorn_asgi,
    "uvicorn-starlette": serve_uvicorn_starlette,
    "aiohttp": serve_aiohttp,
}


# --- the client ---------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One keep-alive connection with one request in flight; responses have Content-Length."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buf = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
        if len(self.buf) - end - 4 < length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(body)

    async def call(self) -> bytes:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(self.request)
        return await self.waiter


def http_request(host: str, port: int, path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
        b"accept: application/json, text/event-stream\r\ncontent-length: %d\r\n%s\r\n"
        % (path.encode(), host.encode(), port, len(body), extra)
        + body
    )


async def measure(
    request: bytes, port: int, calls: int, pipelined: int, depth: int = 64
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(request), "127.0.0.1", port)
    for _ in range(200):
        await conn.call()
    times: list[float] = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        await conn.call()
        times.append((time.perf_counter_ns() - start) / 1000)
    conn.transport.close()
    conns = [
        (await loop.create_connection(lambda: Conn(request), "127.0.0.1", port))[1]
        for _ in range(depth)
    ]
    per = pipelined // depth

    async def run(c: Conn) -> None:
        for _ in range(per):
            await c.call()

    start = time.perf_counter()
    await asyncio.gather(*(run(c) for c in conns))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.transport.close()
    times.sort()
    return {
        "p50_us": statistics.median(times),
        "p90_us": times[int(len(times) * 0.9)],
        "calls_per_s": per * depth / elapsed,
    }


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--pipelined", type=int, default=20000)
    parser.add_argument("--only", action="append", choices=CANDIDATES)
    parser.add_argument("--serve", choices=CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        sock = socket.socket(fileno=args.fd)
        SERVERS[args.serve](sock)
        return 0
    _uvloop()
    results: dict[str, Any] = {}
    for name in args.only or CANDIDATES:
        if not all(importlib.util.find_spec(mod) for mod in NEEDS[name]):
            results[name] = "not installed"
            continue
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", name, "--fd", str(sock.fileno())],
            pass_fds=[sock.fileno()],
        )
        sock.close()
        try:
            wait_port(port)
            request = http_request("127.0.0.1", port, "/mcp", BODY)
            results[name] = asyncio.run(measure(request, port, args.calls, args.pipelined))
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(f"{name:18} {json.dumps(results[name])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
