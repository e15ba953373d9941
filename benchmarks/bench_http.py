"""`helmet-otel serve` in front of the stdio echo server, beside a direct HTTP baseline and the
peer stdio-to-HTTP bridges, in one run on one machine.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_http.py [--peers] [--idle-sessions 1000] [--json FILE]

Configurations (each in front of ``benchmarks/echo_server.py``, each with its own MCP session):

* ``direct http``: the raw httptools echo server of `bench_http_stacks.py` (answers from
  memory: the floor any HTTP front can reach with this client);
* ``serve, telemetry off``: ``helmet-otel serve --no-store -- python echo_server.py``;
* ``serve, store on``: the same with ``--store {tmp}/store.db``;
* with ``--peers``: ``supergateway`` (npm, ``--outputTransport streamableHttp --stateful``),
  ``mcp-proxy`` (npm, TypeScript) and ``mcp-proxy`` (PyPI), installed by this script into
  ``--peers-dir`` (default ``/tmp/helmet-bench-peers``) with npm and a venv of its own, at the
  versions pinned below. The tests never install them.

Measured for each: p50/p90 of ``--calls`` sequential ``tools/call`` round trips after 200
warm-up calls; calls/s with 64 keep-alive connections, one request in flight on each, all in
the one session (each call its own JSON-RPC id; every answer is checked for its id); a 50 MB
``text`` echoed back (seconds, and whether the text came back intact, or the HTTP status that
refused it). For ``serve`` alone: ``--idle-sessions`` legacy sessions opened and left idle, each
with its own child (a tiny ``/bin/sh`` server, not counted), and the proxy's own RSS growth per
session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools  # pyright: ignore[reportMissingTypeStubs]
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_http_stacks as stacks

REPO = Path(__file__).resolve().parent.parent
ECHO = REPO / "benchmarks" / "echo_server.py"
PEERS_NPM = ("supergateway@4.0.0", "mcp-proxy@6.7.19")
PEERS_PYPI = "mcp-proxy==0.13.0"
VERSION = "2025-11-25"
LARGE_TIMEOUT = 120.0
INIT = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}'
)
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
CALL = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"%s"}}}'
TINY_SERVER = r"""#!/bin/sh
# A tiny stdio MCP server: answers every request with an initialize result.
while IFS= read -r line; do
  case "$line" in
    *'"id":'*)
      rest=${line#*\"id\":}; id=${rest%%,*}; id=${id%%\}*}
      printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"tiny","version":"1"}}}\n' "$id";;
  esac
done
"""


# --- the client ---------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Conn(asyncio.Protocol):
    """One keep-alive connection, one request at a time; JSON or SSE (chunked) answers."""

    def __init__(self) -> None:
        self.parser: Any = httptools.HttpResponseParser(self)  # pyright: ignore[reportUnknownMemberType]
        self.waiter: asyncio.Future[Answer] | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def on_message_begin(self) -> None:
        self.headers = {}
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(int(self.parser.get_status_code()), self.headers, b"".join(self.body))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(answer)

    async def post(self, request: bytes) -> Answer:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


@dataclass
class Session:
    port: int
    path: str
    extra: bytes = b""  # the session's headers
    next_id: int = 1
    conns: list[Conn] = field(default_factory=list[Conn])

    def request(self, body: bytes) -> bytes:
        return stacks.http_request("127.0.0.1", self.port, self.path, body, self.extra)

    async def connect(self) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(Conn, "127.0.0.1", self.port)
        return conn

    async def open(self) -> None:
        conn = await self.connect()
        answer = await conn.post(self.request(INIT))
        assert answer.status == 200, answer
        sid = answer.headers.get(b"mcp-session-id")
        self.extra = b"mcp-protocol-version: %s\r\n" % VERSION.encode()
        if sid is not None:
            self.extra += b"mcp-session-id: %s\r\n" % sid
        answer = await conn.post(self.request(INITIALIZED))
        assert answer.status in (200, 202), answer
        conn.transport.close()

    async def call(self, conn: Conn, text: bytes = b"hello world") -> Answer:
        msg_id = self.next_id
        self.next_id += 1
        answer = await conn.post(self.request(CALL % (msg_id, text)))
        mark = b'"id":%d' % msg_id
        if (
            answer.status == 200
            and mark not in answer.body[:200]
            and mark not in answer.body[-200:]
        ):
            raise AssertionError(f"no answer for id {msg_id}: {answer.body[:300]!r}")
        return answer


async def measure(session: Session, calls: int, pipelined: int, depth: int = 64) -> dict[str, Any]:
    conn = await session.connect()
    for _ in range(200):
        await session.call(conn)
    times: list[float] = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        await session.call(conn)
        times.append((time.perf_counter_ns() - start) / 1000)
    conn.transport.close()
    conns = [await session.connect() for _ in range(depth)]
    per = pipelined // depth

    async def run(c: Conn) -> None:
        for _ in range(per):
            await session.call(c)

    start = time.perf_counter()
    await asyncio.gather(*(run(c) for c in conns))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.transport.close()
    times.sort()
    return {
        "p50_us": round(statistics.median(times)),
        "p90_us": round(times[int(len(times) * 0.9)]),
        "calls_per_s": round(per * depth / elapsed),
    }


async def large(session: Session, size: int) -> dict[str, Any]:
    text = (b"abcdefghij" * (size // 10 + 1))[:size]
    conn = await session.connect()
    start = time.perf_counter()
    try:
        answer = await asyncio.wait_for(session.call(conn, text), LARGE_TIMEOUT)
    except TimeoutError:
        conn.transport.close()
        return {"large_s": None, "large": f"no answer in {LARGE_TIMEOUT:g} s"}
    except (ConnectionError, AssertionError) as exc:
        return {"large_s": None, "large": f"failed: {exc}"[:80]}
    elapsed = time.perf_counter() - start
    conn.transport.close()
    if answer.status != 200:
        return {"large_s": None, "large": f"HTTP {answer.status}"}
    body = answer.body
    if body.startswith(b"event:") or body.startswith(b"id:") or b"\ndata: " in body[:200]:
        body = b"".join(line[6:] for line in body.split(b"\n") if line.startswith(b"data: "))
    got = json.loads(body)["result"]["content"][0]["text"]
    return {"large_s": round(elapsed, 2), "large": "intact" if got == text.decode() else "CHANGED"}


# --- the configurations -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HELMET_"))}


def stop(proc: subprocess.Popen[bytes]) -> None:
    with _suppress():
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with _suppress():
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ProcessLookupError | PermissionError)


def echo() -> list[str]:
    return [sys.executable, str(ECHO)]


def serve_argv(port: int, extra: list[str], server: list[str]) -> list[str]:
    return [sys.executable, "-m", "helmet_otel", "serve", "--listen", f"127.0.0.1:{port}",
            "--max-message-size", "128MiB", *extra, "--", *server]  # fmt: skip


def peers_install(root: Path) -> dict[str, list[str]]:
    """Install the peer bridges into ``root`` (once); their commands by label, ``{port}`` and
    ``{server}`` to fill in."""
    node_bin = root / "node_modules"
    if not (node_bin / "supergateway").is_dir() or not (node_bin / "mcp-proxy").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        (root / "package.json").write_text('{"name":"bench-peers","private":true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                        "--prefix", str(root), *PEERS_NPM], check=True)  # fmt: skip
    venv = root / "venv"
    if not (venv / "bin" / "mcp-proxy").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", PEERS_PYPI], check=True)
    node = shutil.which("node") or "node"
    return {
        "supergateway": [node, str(node_bin / "supergateway" / "dist" / "index.js"), "--stdio",
                         "{server}", "--outputTransport", "streamableHttp", "--stateful",
                         "--port", "{port}", "--logLevel", "none"],
        "mcp-proxy (npm)": [node, str(node_bin / "mcp-proxy" / "dist" / "bin" / "mcp-proxy.mjs"),
                            "--port", "{port}", "--host", "127.0.0.1", "--server", "stream",
                            "--maxBodySize", "134217728", "--", "{argv}"],
        "mcp-proxy (PyPI)": [str(venv / "bin" / "mcp-proxy"), "--port", "{port}", "--host",
                             "127.0.0.1", "--log-level", "WARNING", "{argv}"],
    }  # fmt: skip


def fill(template: list[str], port: int, server: list[str]) -> list[str]:
    argv: list[str] = []
    for part in template:
        if part == "{argv}":
            argv.extend(server)
        else:
            argv.append(part.replace("{port}", str(port)).replace("{server}", " ".join(server)))
    return argv


def run_config(
    label: str, argv: list[str], port: int, args: argparse.Namespace, pass_fds: tuple[int, ...] = ()
) -> dict[str, Any]:
    proc = subprocess.Popen(argv, env=clean_env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=pass_fds)  # fmt: skip
    try:
        stacks.wait_port(port, 30.0)

        async def main() -> dict[str, Any]:
            session = Session(port, "/mcp")
            if label != "direct http":
                await session.open()
            result = await measure(session, args.calls, args.pipelined)
            if args.large and label != "direct http":
                result.update(await large(session, args.large * 1_000_000))
            return result

        result = asyncio.run(main())
    finally:
        stop(proc)
    print(f"{label:24} {json.dumps(result)}", flush=True)
    return result


def run_direct(args: argparse.Namespace) -> dict[str, Any]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    argv = [sys.executable, str(Path(stacks.__file__)), "--serve", "raw-httptools", "--fd",
            str(sock.fileno())]  # fmt: skip
    try:
        return run_config("direct http", argv, port, args, (sock.fileno(),))
    finally:
        sock.close()


def idle_sessions(count: int, tmp: Path) -> dict[str, Any]:
    """``count`` legacy sessions opened and left idle: the proxy's own RSS growth per session."""
    tiny = tmp / "tiny.sh"
    tiny.write_text(TINY_SERVER)
    port = free_port()
    argv = serve_argv(port, ["--no-store"], ["/bin/sh", str(tiny)])
    proc = subprocess.Popen(argv, env=clean_env(), cwd=REPO, start_new_session=True,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        stacks.wait_port(port, 30.0)
        me = psutil.Process(proc.pid)

        async def main() -> dict[str, Any]:
            warm = [Session(port, "/mcp") for _ in range(20)]
            for s in warm:
                await s.open()
            before = me.memory_info().rss
            start = time.perf_counter()
            sessions = [Session(port, "/mcp") for _ in range(count)]
            for i in range(0, count, 50):
                await asyncio.gather(*(s.open() for s in sessions[i : i + 50]))
            opened_s = time.perf_counter() - start
            await asyncio.sleep(1.0)
            after = me.memory_info().rss
            children = len(me.children())
            return {
                "sessions": count, "children": children, "open_s": round(opened_s, 1),
                "rss_before_mb": round(before / 1e6, 1), "rss_after_mb": round(after / 1e6, 1),
                "kb_per_session": round((after - before) / count / 1000, 1),
            }  # fmt: skip

        result = asyncio.run(main())
    finally:
        stop(proc)
    print(f"{'idle sessions':24} {json.dumps(result)}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--pipelined", type=int, default=20000)
    parser.add_argument("--large", type=int, default=50, help="MB of the large message (0: none)")
    parser.add_argument("--peers", action="store_true", help="also measure the peer bridges")
    parser.add_argument("--peers-dir", default="/tmp/helmet-bench-peers")
    parser.add_argument("--idle-sessions", type=int, default=1000, help="0: skip")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    stacks._uvloop()  # pyright: ignore[reportPrivateUsage]
    peers = peers_install(Path(args.peers_dir)) if args.peers else {}
    results: dict[str, Any] = {"direct http": run_direct(args)}
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (
            ("serve, telemetry off", ["--no-store"]),
            ("serve, store on", ["--store", f"{tmp}/store.db"]),
        ):
            port = free_port()
            results[label] = run_config(label, serve_argv(port, extra, echo()), port, args)
        for label, template in peers.items():
            port = free_port()
            results[label] = run_config(label, fill(template, port, echo()), port, args)
        if args.idle_sessions:
            results["idle sessions"] = idle_sessions(args.idle_sessions, Path(tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
