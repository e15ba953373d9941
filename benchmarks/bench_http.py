"""`helmet-otel serve` in front of the stdio echo server, against a direct HTTP baseline.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_http.py [--calls 2000] [--pipelined 20000] [--store]

Configurations, in one run on one machine:

* ``direct http``: the raw httptools echo server of `bench_http_stacks.py` (answers from memory:
  the floor any HTTP front can reach with this client);
* ``serve, telemetry off``: ``helmet-otel serve --no-store -- python benchmarks/echo_server.py``;
* with ``--store``, ``serve, store on``: the same with ``--store {tmp}/store.db``.

The client is `bench_http_stacks.py`'s raw asyncio client: one legacy session is initialized,
then p50/p90 of ``--calls`` sequential ``tools/call`` round trips after 200 warm-up calls, then
``--pipelined`` calls over 64 keep-alive connections with one request in flight on each (all in
the same session, so the proxy's relay and the one child carry all 64).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_http_stacks as stacks

REPO = Path(__file__).resolve().parent.parent
ECHO = REPO / "benchmarks" / "echo_server.py"
INIT = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}'
)


def start_serve(extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HELMET_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "helmet_otel", "serve", "--listen", "127.0.0.1:0", *extra, "--",
         sys.executable, str(ECHO)],
        stderr=subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    line = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return proc, int(found.group(1))
    proc.kill()
    raise RuntimeError(f"serve did not start: {line!r}")


def session_id(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(stacks.http_request("127.0.0.1", port, "/mcp", INIT))
        head = sock.recv(65536)
    found = re.search(rb"mcp-session-id: (\S+)\r\n", head)
    assert found, head
    return found.group(1)


def run_serve(label: str, extra: list[str], args: argparse.Namespace) -> dict[str, float]:
    proc, port = start_serve(extra)
    try:
        sid = session_id(port)
        request = stacks.http_request(
            "127.0.0.1", port, "/mcp", stacks.BODY,
            b"mcp-session-id: %s\r\nmcp-protocol-version: 2025-11-25\r\n" % sid,
        )  # fmt: skip
        result = asyncio.run(stacks.measure(request, port, args.calls, args.pipelined))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"{label:24} {json.dumps(result)}", flush=True)
    return result


def run_direct(args: argparse.Namespace) -> dict[str, float]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(Path(stacks.__file__)), "--serve", "raw-httptools", "--fd",
         str(sock.fileno())], pass_fds=[sock.fileno()],
    )  # fmt: skip
    sock.close()
    try:
        stacks.wait_port(port)
        request = stacks.http_request("127.0.0.1", port, "/mcp", stacks.BODY)
        result = asyncio.run(stacks.measure(request, port, args.calls, args.pipelined))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"{'direct http':24} {json.dumps(result)}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--pipelined", type=int, default=20000)
    parser.add_argument("--store", action="store_true", help="also measure serve with the store on")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    stacks._uvloop()  # pyright: ignore[reportPrivateUsage]
    results = {"direct http": run_direct(args)}
    results["serve, telemetry off"] = run_serve("serve, telemetry off", ["--no-store"], args)
    if args.store:
        with tempfile.TemporaryDirectory() as tmp:
            results["serve, store on"] = run_serve(
                "serve, store on", ["--store", f"{tmp}/store.db"], args
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
