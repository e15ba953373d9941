"""The relay's own CPU per call, in process: `Relay.route` + `Relay.forwarded` with the session's
interceptors as the proxy builds them, for a request and its response, with no I/O and no worker.

``--setup on`` (the default): the policy interceptor with the default detectors (no policy file,
as whenever telemetry records what they find), then the telemetry feed; ``feed``: the feed only;
``off``: no interceptor (``--no-store`` and no OTLP). ``--setup all`` runs each in turn, the
rounds interleaved, so the differences are read in one time window. Every call has the same
small arguments unless ``--unique`` (then each call's argument text is new: the detectors
remember the texts they found clean, and this measures the cost of a text seen first).

The relay's loop sleeps between messages while the client, the server and the telemetry worker
run, so in the real proxy each message finds the code and data it touches out of the caches:
there every call and C function on the path costs several times what this tight loop shows.
``--cold MIB`` writes over that much memory before each message and counts only the
messages' own CPU time (1 MiB reproduced the real relay's telemetry-on minus off within a few
microseconds; read medians of several rounds, it is noisy):

    .venv/bin/python benchmarks/bench_hotpath.py --calls 3000 --rounds 7 --setup all --cold 1

Run from the repository root (any revision: it adapts to the feed's API before and after the
per-session split), several times, and compare medians of one machine:

    .venv/bin/python benchmarks/bench_hotpath.py --calls 30000 --rounds 5 --setup all

The batch is handed over (and thrown away) every 64 calls, as the relay's timer would; the
governor is held off (its clock is pinned to 0), so this measures the path every call
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
        # (`backlog`; `_out` before it was public)
        backlog: Any = self.backlog if hasattr(self, "backlog") else getattr(self, "_out")  # noqa: B009
        backlog.clear()


def _line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


SETUPS = ("off", "feed", "on")


def _policy(session: Session) -> Any:
    """The policy interceptor as `build_policy` makes it without a policy file (None on a
    revision without one)."""
    try:
        from helmet_otel.policy.interceptor import PolicyFactory, PolicySource
        from helmet_otel.policy.pins import MemoryPins
        from helmet_otel.policy.rules import Policy
    except ImportError:
        return None
    source = PolicySource(Policy(), "bench", lambda text: None)
    return PolicyFactory(source, MemoryPins(), monitor=True).for_session(session)


async def _round(calls: int, setup: str, unique: bool = False, cold_mib: int = 0) -> float:
    feed: Any = _Feed(ProxyOptions(no_store=True), {}, service_name="bench")
    session = Session(transport="stdio")
    interceptors: list[Any] = []
    if setup == "on":
        policy = _policy(session)
        if policy is not None:
            interceptors.append(policy)
    if setup != "off":
        interceptors.append(feed.for_session(session) if hasattr(feed, "for_session") else feed)
    relay = Relay(session, interceptors)
    for interceptor in interceptors:
        interceptor.session_started(session, {})
    result = {"content": [{"type": "text", "text": "hello world"}]}
    requests = [
        _line({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": f"hello world {i}" if unique else "hello world"},
        }})
        for i in range(calls)
    ]  # fmt: skip
    responses = [_line({"jsonrpc": "2.0", "id": i, "result": result}) for i in range(calls)]
    c2s, s2c = Direction.C2S, Direction.S2C
    if cold_mib:
        return _cold(relay, feed, requests, responses, cold_mib)
    started = time.thread_time()
    for i in range(calls):
        routed = relay.route(c2s, [requests[i]])
        relay.forwarded(routed)
        routed = relay.route(s2c, [responses[i]])
        relay.forwarded(routed)
        if i % 64 == 0:
            feed._flush()
    return (time.thread_time() - started) / calls * 1e6


def _cold(
    relay: Relay, feed: Any, requests: list[bytes], responses: list[bytes], mib: int
) -> float:
    """The same calls with ``mib`` MiB written over before each message, so that it finds
    what it touches out of the caches, as the real relay's loop does after it slept while the
    client, the server and the worker ran; only the messages' own CPU time is counted."""
    scratch, source = bytearray(mib << 20), bytes(mib << 20)
    clock = time.thread_time_ns
    spent = 0
    for i in range(len(requests)):
        for direction, line in ((Direction.C2S, requests[i]), (Direction.S2C, responses[i])):
            scratch[:] = source
            started = clock()
            relay.forwarded(relay.route(direction, [line]))
            spent += clock() - started
        if i % 64 == 0:
            feed._flush()
    return spent / len(requests) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--setup", choices=(*SETUPS, "all"), default="on")
    parser.add_argument(
        "--cold", type=int, default=0, metavar="MIB",
        help="write over MIB MiB before each message (caches cold, as in the real relay); "
        "use fewer --calls (each message then costs the copy too)",
    )  # fmt: skip
    parser.add_argument(
        "--unique", action="store_true",
        help="a different argument text in every call (the detectors remember clean texts)",
    )  # fmt: skip
    args = parser.parse_args()
    # hold the governor off (its clock is `governor.loop_times`; in `feed` on older revisions,
    # `cpu_demand` before that)
    try:
        from helmet_otel.telemetry import governor

        governor.loop_times = lambda: (0.0, 0.0)
    except ImportError:
        pass
    if hasattr(feed_module, "loop_times"):
        feed_module.loop_times = lambda: (0.0, 0.0)  # pyright: ignore[reportAttributeAccessIssue]
    elif not hasattr(feed_module, "Governor"):
        feed_module.cpu_demand = lambda: 0.0  # pyright: ignore[reportAttributeAccessIssue]
    setups = SETUPS if args.setup == "all" else (args.setup,)
    per_call: dict[str, list[float]] = {setup: [] for setup in setups}
    for _ in range(args.rounds):
        for setup in setups:
            per_call[setup].append(asyncio.run(_round(args.calls, setup, args.unique, args.cold)))
    for setup, values in per_call.items():
        rounds = " ".join(f"{value:.2f}" for value in values)
        print(
            f"relay CPU per call ({setup:>4}): median {statistics.median(values):.2f} us "
            f"(rounds: {rounds})"
        )


if __name__ == "__main__":
    main()
