"""What a policy costs the relay per call: `Relay.route` + `Relay.forwarded` of one tools/call
and its response with the policy interceptor (100 rules, telemetry off, so no detectors), with
it and every detector (as when telemetry is on; the calls come as fast as the loop runs, so
`unusual_rate` fires once per window), without it, and `Engine.decide` alone.

Run from the repository root:

    .venv/bin/python benchmarks/bench_policy.py --calls 20000 --rounds 5

Each call is timed on its own (perf_counter_ns around route + forwarded); the report is the
median (p50) and p99 per call, the best of the rounds' medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import orjson

from helmet_otel.core.envelope import Direction
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.relay import Relay
from helmet_otel.core.session import Session
from helmet_otel.policy.engine import Engine
from helmet_otel.policy.interceptor import PolicyFactory, PolicySource
from helmet_otel.policy.loader import parse_policy
from helmet_otel.policy.pins import MemoryPins


def rules_text(count: int) -> str:
    """``count`` rules of every kind: exact names, globs, argument conditions, annotations,
    client globs, priorities; none of them matches the benchmark's call until the last."""
    parts = ['mode = "enforce"\ndefault = "allow"\n']
    for i in range(count - 1):
        kind = i % 5
        body = f'[[rule]]\nid = "r{i}"\naction = "{("deny", "log", "allow")[i % 3]}"\n'
        body += f"priority = {i % 7}\n"
        if kind == 0:
            body += f'tools = ["tool-{i}", "other-{i}"]\n'
        elif kind == 1:
            body += f'tools = ["*-{i}-*", "pre{i}*"]\n'
        elif kind == 2:  # the benchmark's tool, with a condition that does not hold
            body += 'tools = ["echo"]\n'
            body += f'when = [{{ arg = "message", regex = "(?i)secret-{i}" }}]\n'
        elif kind == 3:
            body += 'tools = ["ech*"]\nannotations = { readOnlyHint = false }\n'
        else:
            body += f'tools = ["*"]\nclients = ["client-{i}*"]\n'
        parts.append(body)
    parts.append('[[rule]]\nid = "last"\ntools = ["echo"]\naction = "log"\npriority = -1\n')
    return "\n".join(parts)


CALL = orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
    "name": "echo", "arguments": {"message": "hello world"}}}) + b"\n"  # fmt: skip
ANSWER = orjson.dumps({"jsonrpc": "2.0", "id": 7, "result": {
    "content": [{"type": "text", "text": "Echo: hello world"}]}}) + b"\n"  # fmt: skip
LIST = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}) + b"\n"
TOOLS = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
    {"name": "echo", "inputSchema": {"type": "object"},
     "annotations": {"readOnlyHint": True}}]}}) + b"\n"  # fmt: skip


def per_call(interceptors: list[Interceptor], calls: int) -> list[int]:
    session = Session(transport="stdio")
    relay = Relay(session, [i for i in interceptors])
    relay.forwarded(relay.route(Direction.C2S, [LIST]))
    relay.forwarded(relay.route(Direction.S2C, [TOOLS]))
    times: list[int] = []
    clock = time.perf_counter_ns
    c2s, s2c = Direction.C2S, Direction.S2C
    for _ in range(calls):
        start = clock()
        relay.forwarded(relay.route(c2s, [CALL]))
        relay.forwarded(relay.route(s2c, [ANSWER]))
        times.append(clock() - start)
    return times


def decide_times(engine: Engine, calls: int) -> list[int]:
    clock = time.perf_counter_ns
    arguments = {"message": "hello world"}
    annotations = {"readOnlyHint": True}
    times: list[int] = []
    for _ in range(calls):
        start = clock()
        engine.decide("tools/call", "echo", arguments, "bench-client", annotations)
        times.append(clock() - start)
    return times


def report(name: str, measure: Callable[[], list[int]], rounds: int) -> float:
    medians: list[float] = []
    p99s: list[float] = []
    for _ in range(rounds):
        times = sorted(measure())
        medians.append(statistics.median(times) / 1000)
        p99s.append(times[int(len(times) * 0.99)] / 1000)
    best = min(medians)
    print(f"{name:<44} p50 {best:6.2f} us   p99 {min(p99s):6.2f} us")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rules", type=int, default=100)
    args = parser.parse_args()
    policy = parse_policy(rules_text(args.rules))
    assert len(policy.rules) == args.rules
    engine = Engine(policy, "bench")
    decision = engine.decide("tools/call", "echo", {"message": "hello world"}, "bench-client",
                             {"readOnlyHint": True})  # fmt: skip
    assert decision is not None and decision.rule_id == "last", decision

    def with_policy() -> list[int]:
        factory = PolicyFactory(PolicySource(policy, "bench", lambda _: None), MemoryPins(),
                                monitor=False)  # fmt: skip
        session = Session(transport="stdio")
        return per_call([factory.for_session(session)], args.calls)

    def with_detectors() -> list[int]:  # as with telemetry on: every detector runs too
        factory = PolicyFactory(PolicySource(policy, "bench", lambda _: None), MemoryPins(),
                                monitor=True)  # fmt: skip
        session = Session(transport="stdio")
        return per_call([factory.for_session(session)], args.calls)

    base = report("relay, no interceptor (call + answer)", lambda: per_call([], args.calls),
                  args.rounds)  # fmt: skip
    policed = report(f"relay + policy, {args.rules} rules (call + answer)", with_policy,
                     args.rounds)  # fmt: skip
    watched = report(f"relay + policy + detectors, {args.rules} rules", with_detectors,
                     args.rounds)  # fmt: skip
    report(f"Engine.decide alone, {args.rules} rules", lambda: decide_times(engine, args.calls),
           args.rounds)  # fmt: skip
    print(f"{'policy cost per call (p50 difference)':<44} {policed - base:6.2f} us")
    print(f"{'... with every detector (p50 difference)':<44} {watched - base:6.2f} us")


if __name__ == "__main__":
    main()
