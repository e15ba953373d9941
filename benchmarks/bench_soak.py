"""Soak: a long run through the proxy with the store and OTLP on, checking that nothing is lost
that is not counted and that memory stays flat.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_soak.py --rate 4000       # 1,000,000 calls, paced
    .venv/bin/python benchmarks/bench_soak.py                   # ... saturated
    .venv/bin/python benchmarks/bench_soak.py --calls 200000 --json /tmp/soak.json

One proxy (``helmet-otel --store DIR`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a local
receiver in sink mode, in its own process) wraps ``benchmarks/echo_server.py``. A raw asyncio
client sends ``--calls`` ``tools/call`` requests with at most ``--depth`` in flight, paced at
``--rate`` calls/s (0: as fast as the proxy answers), and checks every response: its id and its
order (the echo server answers in order and the proxy keeps it). After every ``--block`` calls
it samples the RSS of the proxy and of its telemetry worker, and where it is (heap, anonymous
mappings, files). The store has no size cap unless ``--store-max-bytes`` sets one: retention
deletes the oldest records, which the count below cannot tell from losses. At the end
it closes stdin and reads what telemetry kept: the requests in the store (weighted by
``helmet.sample.weight``), the drops ``helmet.proxy_close`` counted there, and what the
receiver accepted.

It passes when every response came back in order, the proxy's and the worker's RSS at the end
are within ``--rss-tolerance`` (10%) of their RSS after the first block, and the store's
weighted requests plus the calls counted as lost (half the lost messages of the relay and
the lost log records of the store, both weighted: a lost call is its request and its
response) add up to the calls sent (within the sampling's resolution, 2 x 64 calls per
block). Without ``helmet.proxy_close`` in the store the drop counts are unknown
(``counts_known`` false), which fails the run. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relay import ECHO_SERVER, Helper, Session, base_env, call_request

LOST_REASONS = ("relay_queue_full", "worker_lost")  # counted by the relay, per message
# counted by the store's queues, per record, weighted: a lost call is its request's and its
# response's records (and the spans of the call, counted apart)
STORE_LOST = ("store_logs_queue_full", "store_logs_export_failed", "shutdown_timeout")


def rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def rss_split(process: psutil.Process | None) -> dict[str, int]:
    """Where the RSS is (``/proc/PID/smaps``): the brk heap (glibc's main arena), anonymous
    mappings (pymalloc arenas, thread arenas, large malloc blocks) and files (code, SQLite's
    memory-mapped store), in bytes."""
    split = {"heap": 0, "anon": 0, "file": 0}
    if process is None:
        return split
    kind = "anon"
    try:
        with open(f"/proc/{process.pid}/smaps") as smaps:
            for line in smaps:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    fields = line.split()
                    name = fields[5] if len(fields) > 5 else ""
                    kind = (
                        "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
                    )
                elif line.startswith("Rss:"):
                    split[kind] += int(line.split()[1]) * 1024
    except OSError:
        pass
    return split


def trim_probe(process: psutil.Process | None) -> dict[str, int]:
    """RSS before and after ``malloc_trim(0)``, called in ``process`` by gdb: the difference is
    memory the process freed but glibc had kept (fragments, an untrimmed heap top)."""
    if process is None:
        return {}
    before = rss(process)
    subprocess.run(
        ["gdb", "-p", str(process.pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return {"before": before, "after": rss(process)}


def mib(split: dict[str, int]) -> str:
    return "/".join(f"{v / 2**20:.1f}" for v in split.values())


def worker_of(proxy_pid: int) -> psutil.Process | None:
    for child in psutil.Process(proxy_pid).children():
        try:
            if "helmet_otel.telemetry.worker" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


async def in_order(session: Session, n: int, depth: int, rate: float = 0.0) -> float:
    """``n`` calls with at most ``depth`` in flight; every response must be the next id.

    With ``rate`` (calls/s) > 0 the calls are paced: call ``k`` of the block is not sent before
    ``k / rate`` seconds after the block started (a late call goes out at once, so the block
    keeps the average rate); 0 sends as fast as the proxy answers. Seconds."""
    first = session.take_ids(n)
    write, readline = session.writer.write, session.reader.readline
    transport = session.writer.transport
    started = time.perf_counter()
    if rate <= 0:
        sent = min(depth, n)
        write(b"".join(call_request(first + i) for i in range(sent)))
    else:
        sent = 0
    for i in range(n):
        if rate > 0:
            # send what is due (up to ``depth`` in flight); sleep only when nothing is in flight
            while sent < n and sent - i < depth:
                wait = started + sent / rate - time.perf_counter()
                if wait > 0:
                    if sent > i:
                        break
                    await asyncio.sleep(wait)
                write(call_request(first + sent))
                sent += 1
        line = await readline()
        if not line:
            raise RuntimeError("the connection closed (EOF on stdout)")
        answer_id = json.loads(line)["id"]
        if answer_id != first + i:
            raise RuntimeError(f"response {answer_id} where {first + i} was next")
        if rate <= 0 and sent < n:
            write(call_request(first + sent))
            sent += 1
        if transport.get_write_buffer_size() > 1 << 20:
            await session.writer.drain()
    return time.perf_counter() - started


def store_figures(store: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        weighted = conn.execute(
            "SELECT count(*), sum(coalesce(json_extract(attrs, '$.\"helmet.sample.weight\"'), 1))"
            " FROM logs WHERE event = 'helmet.request' AND method = 'tools/call'"
        ).fetchone()
        (body,) = conn.execute(
            "SELECT body FROM logs WHERE event = 'helmet.proxy_close'"
        ).fetchone() or (None,)
    finally:
        conn.close()
    # no helmet.proxy_close: the counts are unknown (the worker did not finish), not zero
    dropped: dict[str, int] | None = json.loads(body)["dropped"] if body else None
    return {"requests": weighted[0], "weighted_requests": weighted[1] or 0, "dropped": dropped}


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    receiver = Helper("--_receiver", "http/protobuf")
    try:
        endpoint = receiver.ask()["endpoint"]
        env = base_env()
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        if args.tracemalloc:  # a diagnostic: both processes write their growth (memtrace.py)
            env["HELMET_DEBUG_TRACEMALLOC"] = args.tracemalloc
        store = workdir / "store.db"
        argv = [sys.executable, "-m", "helmet_otel", "--store", str(store),
                "--store-max-bytes", args.store_max_bytes,
                sys.executable, str(ECHO_SERVER)]  # fmt: skip
        samples: list[dict[str, Any]] = []
        async with Session(argv, env, workdir / "proxy.stderr") as session:
            await session.initialize()
            proxy = psutil.Process(session.proc.pid)
            done = 0
            seconds = 0.0
            while done < args.calls:
                block = min(args.block, args.calls - done)
                block_s = await in_order(session, block, args.depth, args.rate)
                seconds += block_s
                done += block
                worker = worker_of(proxy.pid)
                samples.append({
                    "calls": done, "proxy_rss": rss(proxy),
                    "worker_rss": rss(worker) if worker is not None else 0,
                    "calls_per_s": round(block / block_s),
                    "proxy_split": rss_split(proxy), "worker_split": rss_split(worker),
                })  # fmt: skip
                print(f"{done:>9,} calls  proxy {samples[-1]['proxy_rss'] / 2**20:6.1f} MiB  "
                      f"worker {samples[-1]['worker_rss'] / 2**20:6.1f} MiB  "
                      f"{samples[-1]['calls_per_s']:>7,} calls/s  "
                      f"(heap/anon/file MiB: proxy {mib(samples[-1]['proxy_split'])}, "
                      f"worker {mib(samples[-1]['worker_split'])})", flush=True)  # fmt: skip
            trimmed = {}
            if args.trim_probe:  # a diagnostic: how much of the RSS is memory glibc holds free
                trimmed = {"proxy": trim_probe(proxy)}
                print(f"malloc_trim(0) by gdb: {trimmed}", flush=True)
            exit_s = await session.close(grace=120)
        received = receiver.ask("stats")
    finally:
        receiver.kill()
    figures = store_figures(store)
    # the relay counts messages: a call lost there is its request and its response
    dropped: dict[str, int] = figures["dropped"] or {}
    lost = sum(dropped.get(reason, 0) for reason in (*LOST_REASONS, *STORE_LOST)) / 2
    first, last = samples[0], samples[-1]
    growth = {
        key: (last[key] - first[key]) / first[key] if first[key] else 0.0
        for key in ("proxy_rss", "worker_rss")
    }
    accounted = round(figures["weighted_requests"] + lost)
    result = {
        "calls": args.calls,
        "rate": args.rate,
        "depth": args.depth,
        "calls_per_s": round(args.calls / seconds),
        "exit_s": round(exit_s, 3),
        "samples": samples,
        "rss_growth": {k: round(v, 4) for k, v in growth.items()},
        "store": figures,
        "trim_probe": trimmed,
        "receiver": received,
        "accounted_calls": accounted,
    }
    result["counts_known"] = figures["dropped"] is not None
    result["ok"] = (
        all(abs(v) <= args.rss_tolerance for v in growth.values())
        and result["counts_known"]
        and abs(accounted - args.calls) <= 2 * 64 * max(1, len(samples))
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Soak: a long run through the proxy.")
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--block", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=64, help="calls in flight at most")
    parser.add_argument(
        "--rate", type=float, default=0.0,
        help="calls/s, paced (0: saturated, as fast as the proxy answers)",
    )  # fmt: skip
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--store-max-bytes", default="0",
        help="the store's size cap (default 0: none; retention deletes the oldest records, "
        "which the count of what was lost cannot tell from losses)",
    )  # fmt: skip
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (store, stderr)")
    parser.add_argument(
        "--trim-probe", action="store_true",
        help="diagnostic: before closing, call malloc_trim(0) in the proxy by gdb (not in the"
        " worker: stopping its threads inside malloc aborted it once)",
    )  # fmt: skip
    parser.add_argument(
        "--tracemalloc", metavar="PREFIX[,SECONDS]",
        help="diagnostic: HELMET_DEBUG_TRACEMALLOC for the proxy and its worker (slows them)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(soak(args, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="helmet-soak-") as tmp:
            result = asyncio.run(soak(args, Path(tmp)))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
