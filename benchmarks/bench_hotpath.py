"""The relay's own CPU per call, in process: `Relay.route` + `Relay.forwarded` with the session's
telemetry feed, for a request and its response, with no I/O and no worker.

Run from the repository root (any revision: it adapts to the feed's API before and after the
per-session split), several times, and compare medians of one machine:

    .venv/bin/python benchmarks/bench_hotpath.py --calls 30000 --rounds 5

The batch is handed over (and thrown away) every 64 calls, as the relay's timer would; the
governor is held off (its CPU reading is pinned to 0), so this measures the path every call
takes while telemetry keeps up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import orjson

from helmet_otel.config import ProxyOptions
from helmet_otel.core.envelope import Direction
from helmet_otel.core.relay import Relay
from helmet_otel.core.session import Session
from helmet_otel.telemetry import feed as feed_module


class _NoWorker:
    """Stands in for the worker process: a pipe nobody reads (nothing is written to it)."""

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        self.stdin = os.fdopen(write_fd, "wb")

    def poll(self) -> int:
        return 0


class _Feed(feed_module.TelemetryFeed):
    def _spawn_worker(self, env: Any) -> Any:
        return _NoWorker()

    def _write(self) -> None:
        self._out.clear()


def _line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


async def _round(calls: int) -> float:
    feed: Any = _Feed(ProxyOptions(no_store=True), {}, service_name="bench")
    session = Session(transport="stdio")
    interceptor = feed.for_session(session) if hasattr(feed, "for_session") else feed
    relay = Relay(session, [interceptor])
    interceptor.session_started(session, {})
    params = {"name": "echo", "arguments": {"text": "hello world"}}
    result = {"content": [{"type": "text", "text": "hello world"}]}
    requests = [
        _line({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params})
        for i in range(calls)
    ]
    responses = [_line({"jsonrpc": "2.0", "id": i, "result": result}) for i in range(calls)]
    c2s, s2c = Direction.C2S, Direction.S2C
    started = time.thread_time()
    for i in range(calls):
        routed = relay.route(c2s, [requests[i]])
        relay.forwarded(routed)
        routed = relay.route(s2c, [responses[i]])
        relay.forwarded(routed)
        if i % 64 == 0:
            feed._flush()
    return (time.thread_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    feed_module.cpu_demand = lambda: 0.0  # hold the governor off
    per_call = [asyncio.run(_round(args.calls)) for _ in range(args.rounds)]
    rounds = " ".join(f"{value:.2f}" for value in per_call)
    print(f"relay CPU per call: median {statistics.median(per_call):.2f} us (rounds: {rounds})")


if __name__ == "__main__":
    main()
