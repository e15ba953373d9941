"""What telemetry costs in CPU per call: the relay and the telemetry worker, read from /proc.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_telemetry_cpu.py                     # 2,000 calls/s
    .venv/bin/python benchmarks/bench_telemetry_cpu.py --rate 10000 --calls 100000 --modes otlp
    .venv/bin/python benchmarks/bench_telemetry_cpu.py --rounds 5 --json /tmp/cpu.json

For each mode (``off``: ``--no-store``; ``store``: the store only; ``otlp``: the store and OTLP
to a local receiver in sink mode, in its own process) and each round, a fresh proxy wraps
``benchmarks/echo_server.py``. A raw asyncio client sends ``--warmup`` calls, then ``--calls``
small ``tools/call`` at ``--rate`` calls/s with at most ``--depth`` in flight, checking every
response id. Before and after the measured calls it waits until the worker is idle (its CPU time
has not moved for ``--idle`` seconds) and reads the user + system CPU time of the relay (the
proxy process) and of the worker; their differences divided by the calls are the CPU per call.
At the end it closes stdin (the exit time is measured) and reads from the store what telemetry
kept: the requests recorded, their weighted sum (``helmet.sample.weight``), and the drop counts
``helmet.proxy_close`` wrote. "Nothing shed" means every request is in the store with weight 1 and
every drop count is 0; without ``helmet.proxy_close`` in the store it is "unknown" (the worker
did not finish: its counts are not there), never "nothing shed".

Not part of the test suite. Read medians over ``--rounds`` (the machine has two cores, shared by
the client, the proxy, the worker, the echo server and the receiver).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relay import ECHO_SERVER, Helper, Session, base_env
from bench_soak import store_figures, worker_of

MODES = ("off", "store", "otlp")
UNKNOWN = "unknown"  # "nothing shed" without helmet.proxy_close in the store


def cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def thread_cpu(process: psutil.Process | None) -> dict[str, float]:
    """CPU seconds per thread name (the worker names its threads for the kernel), from each
    thread's ``schedstat`` (nanoseconds; ``stat``'s clock ticks resolve only 0.5 us per call
    over 20,000 calls), or its ``stat`` where the kernel keeps no scheduler statistics."""
    per: dict[str, float] = {}
    if process is None:
        return per
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            try:
                seconds = int((task / "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                ticks = int(fields[11]) + int(fields[12])  # utime, stime
                seconds = ticks / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
        per[name] = per.get(name, 0.0) + seconds
    return per


def context_switches(process: psutil.Process | None) -> int:
    """The process's context switches, voluntary and not, summed over its threads."""
    if process is None:
        return 0
    try:
        return sum(
            int(line.split()[1])
            for task in Path(f"/proc/{process.pid}/task").iterdir()
            for line in (task / "status").read_text().splitlines()
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
        )
    except OSError:
        return 0


async def wait_idle(process: psutil.Process | None, idle: float, limit: float = 120.0) -> None:
    """Until ``process``'s CPU time has not moved for ``idle`` seconds (the worker caught up)."""
    if process is None:
        return
    deadline = time.monotonic() + limit
    last = cpu_seconds(process)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        now = cpu_seconds(process)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= idle:
            return
    raise RuntimeError(f"the worker did not go idle within {limit:.0f} s")


async def one_round(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = base_env()
    receiver = Helper("--_receiver", "http/protobuf") if mode == "otlp" else None
    store = workdir / "store.db"
    try:
        if receiver is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.ask()["endpoint"]
        sink = ["--no-store"] if mode == "off" else ["--store", str(store)]
        argv = [sys.executable, "-m", "helmet_otel", *sink, sys.executable, str(ECHO_SERVER)]
        async with Session(argv, env, workdir / "proxy.stderr") as session:
            await session.initialize()
            relay = psutil.Process(session.proc.pid)
            await session.paced(args.warmup, args.depth, args.rate)
            worker = worker_of(relay.pid)
            if mode != "off" and worker is None:
                raise RuntimeError("no telemetry worker found")
            await wait_idle(worker, args.idle)
            relay_before, worker_before = cpu_seconds(relay), cpu_seconds(worker)
            switches_before = context_switches(worker)
            threads_before = thread_cpu(worker)
            achieved = await session.paced(args.calls, args.depth, args.rate)
            relay_after = cpu_seconds(relay)
            await wait_idle(worker, args.idle)
            worker_after = cpu_seconds(worker)
            switches = context_switches(worker) - switches_before
            threads = {
                name: round((cpu - threads_before.get(name, 0.0)) / args.calls * 1e6, 2)
                for name, cpu in thread_cpu(worker).items()
            }
            exit_s = await session.close(grace=120)
        received = receiver.ask("stats") if receiver is not None else None
    finally:
        if receiver is not None:
            receiver.kill()
    result: dict[str, Any] = {
        "mode": mode,
        "calls_per_s": round(achieved),
        "relay_us": (relay_after - relay_before) / args.calls * 1e6,
        "worker_us": (worker_after - worker_before) / args.calls * 1e6,
        "exit_s": round(exit_s, 3),
        "worker_switches": round(switches / args.calls, 2),
        "worker_threads": threads,
    }
    if mode != "off":
        figures = store_figures(store)
        calls = args.warmup + args.calls
        result["store"] = figures
        if figures["dropped"] is None:  # no helmet.proxy_close: what was shed is not known
            result["nothing_shed"] = UNKNOWN
        else:
            dropped = {k: v for k, v in figures["dropped"].items() if v}
            result["nothing_shed"] = (
                figures["requests"] == calls
                and figures["weighted_requests"] == calls
                and not dropped
            )
    if received is not None:
        result["receiver"] = received
    return result


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        for mode in args.modes:
            with tempfile.TemporaryDirectory(prefix="helmet-cpu-") as tmp:
                row = await one_round(mode, args, Path(tmp))
            row["round"] = round_no
            rows.append(row)
            shed = row.get("nothing_shed")
            print(
                f"round {round_no} {mode:>5}: {row['calls_per_s']:>6,} calls/s  relay "
                f"{row['relay_us']:6.1f} us  worker {row['worker_us']:6.1f} us "
                f"({row['worker_switches']:.1f} switches)  exit "
                f"{row['exit_s']:.2f} s" + ("" if shed is None else f"  nothing shed: {shed}"),
                flush=True,
            )
            if args.threads and row["worker_threads"]:
                print("    " + ", ".join(f"{n} {u}" for n, u in row["worker_threads"].items()))
    return rows


def _all_of(verdicts: Iterable[bool | str]) -> bool | str:
    """False when any round shed, else `UNKNOWN` when any round's counts are unknown."""
    seen = list(verdicts)
    if False in seen:
        return False
    return UNKNOWN if UNKNOWN in seen else True


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(row["mode"] for row in rows):
        mine = [row for row in rows if row["mode"] == mode]
        out[mode] = {
            "relay_us": round(statistics.median(r["relay_us"] for r in mine), 1),
            "worker_us": round(statistics.median(r["worker_us"] for r in mine), 1),
            "exit_s": round(statistics.median(r["exit_s"] for r in mine), 3),
            "calls_per_s": round(statistics.median(r["calls_per_s"] for r in mine)),
            "nothing_shed": _all_of(r.get("nothing_shed", True) for r in mine),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Telemetry CPU per call, relay and worker.")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", action="store_true", help="the worker's CPU per thread too")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    result = {"rows": rows, "median": summary(rows)}
    print(json.dumps(result["median"], indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
