"""Which HTTP client for MCP upstreams (`connect`, `serve --upstream`): loopback round trip and
calls/s of candidate clients against the same server.

Usage (from the repository root; candidates not installed are skipped)::

    .venv/bin/python benchmarks/bench_http_clients.py [--calls 2000] [--concurrent 20000]

The server is `bench_http_stacks.py`'s raw httptools echo (its own process, uvloop). Each client
POSTs a small JSON-RPC body and reads the whole answer: p50/p90 of ``--calls`` sequential calls
after a warm-up, then ``--concurrent`` calls with 64 in flight, on the client's own pool.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_http_stacks import BODY, wait_port

Call = Callable[[], Awaitable[bytes]]
CANDIDATES = ("helmet-httptools", "aiohttp", "httpx2")
NEEDS = {"helmet-httptools": "httptools", "aiohttp": "aiohttp", "httpx2": "httpx2"}


async def client_helmet(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from helmet_otel.transports.http_client import HttpClient, split_url

    origin, target = split_url(url)
    client = HttpClient(origin)
    headers = [(b"content-type", b"application/json"), (b"accept", b"application/json")]

    async def call() -> bytes:
        response = await client.request("POST", target, headers, BODY)
        return await response.read()

    async def close() -> None:
        client.close()

    return call, close


async def client_aiohttp(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import aiohttp  # pyright: ignore[reportMissingImports]

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))  # pyright: ignore

    async def call() -> bytes:
        async with session.post(url, data=BODY, headers={"content-type": "application/json"}) as r:  # pyright: ignore
            return await r.read()  # pyright: ignore

    return call, session.close  # pyright: ignore


async def client_httpx2(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import httpx2  # pyright: ignore[reportMissingImports]

    client = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=64))  # pyright: ignore

    async def call() -> bytes:
        response = await client.post(
            url, content=BODY, headers={"content-type": "application/json"}
        )  # pyright: ignore
        return response.content  # pyright: ignore

    return call, client.aclose  # pyright: ignore


CLIENTS = {"helmet-httptools": client_helmet, "aiohttp": client_aiohttp, "httpx2": client_httpx2}


async def measure(name: str, url: str, calls: int, concurrent: int) -> dict[str, object]:
    call, close = await CLIENTS[name](url)
    try:
        for _ in range(200):
            await call()
        times: list[float] = []
        for _ in range(calls):
            start = time.perf_counter()
            await call()
            times.append(time.perf_counter() - start)
        times.sort()
        left = concurrent

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(64)))
        elapsed = time.perf_counter() - start
    finally:
        await close()
    return {
        "p50_us": round(statistics.median(times) * 1e6),
        "p90_us": round(times[int(len(times) * 0.9)] * 1e6),
        "calls_per_s_64": round(concurrent / elapsed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrent", type=int, default=20000)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    stacks = Path(__file__).with_name("bench_http_stacks.py")
    proc = subprocess.Popen(
        [sys.executable, str(stacks), "--serve", "raw-httptools", "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
    )
    sock.close()
    try:
        wait_port(port)
        for name in CANDIDATES:
            if importlib.util.find_spec(NEEDS[name]) is None:
                print(f"{name:18} not installed", flush=True)
                continue
            url = f"http://127.0.0.1:{port}/mcp"
            result = asyncio.run(measure(name, url, args.calls, args.concurrent))
            print(f"{name:18} {json.dumps(result)}", flush=True)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
