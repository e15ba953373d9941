"""Where the telemetry worker spends its CPU under load: py-spy samples of the real worker.

Usage (from the repository root; py-spy must be installed: ``.venv/bin/pip install py-spy``)::

    .venv/bin/python benchmarks/profile_worker.py                      # 2,000 calls/s, 20,000 calls
    .venv/bin/python benchmarks/profile_worker.py --rate 10000 --calls 50000 --out profile.md

A proxy with the store and OTLP (to a local receiver in sink mode, its own process) wraps
``benchmarks/echo_server.py``; a raw asyncio client sends ``--warmup`` calls, then ``--calls``
small ``tools/call`` at ``--rate`` calls/s with at most 64 in flight. While it sends them,
``py-spy record --nonblocking --threads`` samples the worker process (and its children, where a
revision has them: ``--subprocesses``) until it is idle again. The samples are summed up as
markdown: per thread, the share of its samples that each module and each function ran itself
(the leaf frame) and was on the stack (inclusive). py-spy counts a thread that waits for the GIL
as running (and sometimes one that waits for a lock: samples whose leaf is a wait such as
``Condition.wait`` are left out and counted apart), so the shares are of the samples, not of the
CPU the process used.

To compare revisions, run the script from a checkout of each (``python -m helmet_otel`` puts the
working directory first on ``sys.path``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relay import ECHO_SERVER, Helper, Session, base_env
from bench_soak import worker_of
from bench_telemetry_cpu import cpu_seconds, wait_idle

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# leaf frames that only wait (in a C lock acquire): py-spy does not always see those threads idle
WAITING = frozenset({"Condition.wait", "Event.wait", "Thread.join", "Semaphore.acquire"})
THREAD = re.compile(r"^(?:thread|process) \(|^\S+ \(0x[0-9a-f]+\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def short_file(path: str) -> str:
    """``helmet_otel/telemetry/feed.py`` for our modules, the file name for others."""
    marker = "helmet_otel/"
    if marker in path:
        return path[path.index(marker) :]
    return Path(path).name or path


def summarize(raw: str, top: int) -> str:
    """Markdown tables from py-spy's raw (collapsed-stack) output."""
    per_thread: dict[str, int] = Counter()
    waiting: dict[str, int] = Counter()
    leaf_module: dict[tuple[str, str], int] = Counter()
    leaf_function: dict[tuple[str, str], int] = Counter()
    inclusive: dict[tuple[str, str], int] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = "the process"
        while frames and THREAD.match(frames[0]):
            thread = frames.pop(0)  # "thread (<tid>): <name>", the last such frame
        last = FRAME.match(frames[-1]) if frames else None
        if last is not None and last["function"] in WAITING:
            waiting[thread] += count
            continue
        per_thread[thread] += count
        seen: set[str] = set()
        names: list[tuple[str, str]] = []
        for frame in frames:
            match = FRAME.match(frame)
            if match is None:
                names.append((frame, ""))
                continue
            names.append((match["function"], short_file(match["file"])))
        for function, file in names:
            key = f"{function} ({file})"
            if key not in seen:
                seen.add(key)
                inclusive[thread, key] += count
        if names:
            function, file = names[-1]
            leaf_module[thread, file] += count
            leaf_function[thread, f"{function} ({file})"] += count
    total = sum(per_thread.values()) or 1
    out = [
        f"{total:,} samples ({sum(waiting.values()):,} more in {', '.join(sorted(WAITING))} left out)"
    ]
    out += ["", "| thread | share of the samples |", "|---|---|"]
    out += [f"| {t} | {n / total:.1%} |" for t, n in per_thread.most_common()]
    for thread, samples in per_thread.most_common():
        for title, table in (
            ("modules, self", leaf_module),
            ("functions, self", leaf_function),
            ("functions, inclusive", inclusive),
        ):
            rows = sorted(((n, k) for (t, k), n in table.items() if t == thread), reverse=True)
            out += [
                "",
                f"### {thread}: {title}",
                "",
                "| share of the thread | where |",
                "|---|---|",
            ]
            out += [f"| {n / samples:.1%} | `{k}` |" for n, k in rows[:top]]
    return "\n".join(out) + "\n"


async def profile(args: argparse.Namespace, workdir: Path) -> str:
    env = base_env()
    receiver = Helper("--_receiver", "http/protobuf")
    samples = workdir / "samples.txt"
    try:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.ask()["endpoint"]
        argv = [sys.executable, "-m", "helmet_otel", "--store", str(workdir / "store.db")]
        argv += [sys.executable, str(ECHO_SERVER)]
        async with Session(argv, env, workdir / "proxy.stderr") as session:
            await session.initialize()
            await session.paced(args.warmup, 64, args.rate)
            worker = worker_of(session.proc.pid)
            if worker is None:
                raise RuntimeError("no telemetry worker found")
            await wait_idle(worker, 0.5)
            spy = [py_spy(), "record", "--pid", str(worker.pid), "--nonblocking", "--threads"]
            spy += ["--rate", str(args.sample_rate), "--format", "raw", "--output", str(samples)]
            spy += ["--subprocesses"] if args.subprocesses else []
            rec = await asyncio.create_subprocess_exec(
                *spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            before = cpu_seconds(worker)
            achieved = await session.paced(args.calls, 64, args.rate)
            await wait_idle(worker, 0.5)
            worker_us = (cpu_seconds(worker) - before) / args.calls * 1e6
            rec.send_signal(2)  # py-spy writes what it has on SIGINT
            _, err = await asyncio.wait_for(rec.communicate(), 60)
            await session.close(grace=120)
    finally:
        receiver.kill()
    if not samples.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')}")
    head = (
        f"# Worker profile{': ' + args.label if args.label else ''}\n\n"
        f"{args.calls:,} calls at {achieved:,.0f} calls/s (store + OTLP), "
        f"worker CPU {worker_us:.1f} us per call; py-spy at {args.sample_rate} samples/s.\n\n"
    )
    return head + summarize(samples.read_text(), args.top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--sample-rate", type=int, default=250)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--subprocesses", action="store_true", help="the worker's children too")
    parser.add_argument("--out", type=Path, help="write the markdown here too")
    parser.add_argument("--label", default="", help="what was measured (a revision), for the title")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="helmet-profile-") as tmp:
        text = asyncio.run(profile(args, Path(tmp)))
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
