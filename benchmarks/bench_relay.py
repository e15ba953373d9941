"""Relay overhead, throughput and memory: a direct stdio connection against proxy prefixes.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_relay.py                      # the default configurations
    .venv/bin/python benchmarks/bench_relay.py --higher-load --json /tmp/bench.json
    .venv/bin/python benchmarks/bench_relay.py --proxy "helmet-otel --no-store" --label off \\
        --proxy "env OTEL_EXPORTER_OTLP_ENDPOINT={otlp} helmet-otel --store {tmp}/store" --label on

Every configuration wraps the same stdlib echo server (``benchmarks/echo_server.py``) and is
driven by the same raw asyncio client (no MCP SDK), in one run on one machine:

* sequential ``tools/call`` round trips: p50/p90/p99 over ``--calls`` calls after ``--warmup``;
* pipelined throughput: ``--pipelined`` calls with ``--depth`` requests in flight (and with
  ``--higher-depth`` in flight when ``--higher-load`` is given);
* proxies only: a paced run at ``--rate`` calls/s (default 4,000, ``--depth`` in flight) that
  checks the telemetry keeps up at that load (nothing dropped);
* a 10 MB and a 50 MB argument echoed back intact (seconds for the round trip);
* peak RSS of the proxy process tree (the spawned process and its descendants, minus the echo
  server), sampled every 20 ms by a separate sampler process, once during the small-message
  runs and once during the large-message runs (each phase runs in a fresh proxy process).

Proxy prefixes are split with ``shlex``; ``{otlp}`` is replaced by the endpoint of a local
OTLP receiver (started for that configuration only) and ``{tmp}`` by a fresh temporary
directory. Without ``--proxy`` the defaults are: ``direct``; ``helmet-otel --no-store``
(telemetry off); ``helmet-otel --store DIR`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a
local receiver (telemetry on). The receiver runs in its own process so that decoding exports
does not share the client's interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ECHO_SERVER = REPO / "benchmarks" / "echo_server.py"
RECEIVER_MODULE = REPO / "tests" / "otlp_receiver.py"

try:  # the client parses every response; orjson keeps that cost out of the numbers
    import orjson

    loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a project dependency
    loads = json.loads

MB = 1_000_000
PHASE_TIMEOUT = 600.0  # seconds; every phase is bounded


# --- configurations -------------------------------------------------------------------------


@dataclass
class Config:
    label: str
    prefix: list[str]  # empty for direct
    env: dict[str, str] = field(default_factory=dict)

    @property
    def direct(self) -> bool:
        return not self.prefix

    @property
    def needs_otlp(self) -> bool:
        return any("{otlp}" in part for part in [*self.prefix, *self.env.values()])


def default_configs() -> list[Config]:
    return [
        Config("direct", []),
        Config("telemetry off", ["helmet-otel", "--no-store"]),
        Config(
            "telemetry on",
            ["helmet-otel", "--store", "{tmp}/store"],
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "{otlp}"},
        ),
    ]


def resolve_program(name: str) -> str:
    """A program on PATH, else next to this interpreter (the venv's bin), else as given."""
    if os.sep in name:
        return name
    if name in ("python", "python3"):
        return sys.executable
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def base_env() -> dict[str, str]:
    """Our environment without OTel/helmet settings, so every configuration starts equal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HELMET_"))}
    # `python` and `helmet-otel` inside a prefix (e.g. after `env`) resolve to this venv
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # the proxy under test is this checkout, whatever the venv's install state
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# --- helper processes: RSS sampler and OTLP receiver ---------------------------------------


def is_echo_server(cmdline: Sequence[str]) -> bool:
    """The echo server itself: an interpreter whose script argument is echo_server.py."""
    return (
        len(cmdline) >= 2
        and Path(cmdline[1]).name == ECHO_SERVER.name
        and Path(cmdline[0]).name.startswith("python")
    )


def rss_sampler_main(interval: float) -> int:
    """Read a root pid from stdin, then sample its tree's RSS (minus the echo server) until
    stdin closes. Started before the root, so that sampling begins at once."""
    import psutil

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    root_pid = int(line)
    try:
        root = psutil.Process(root_pid)
    except psutil.NoSuchProcess:
        print(json.dumps({"peak_total": 0, "samples": 0, "processes": {}}), flush=True)
        return 0
    labels: dict[int, str] = {}
    peaks: dict[int, int] = {}
    tracked: list[psutil.Process] = []
    peak_total = 0
    samples = 0
    while True:
        if samples % 5 == 0:  # refresh the tree every ~100 ms; reading /proc is not free
            try:
                candidates = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                candidates = []
            tracked = []
            for proc in candidates:
                try:  # re-read: a shim may exec the real program under the same pid
                    cmdline = proc.cmdline()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                if not cmdline:  # a zombie, or not yet exec'd
                    continue
                if is_echo_server(cmdline):
                    labels.pop(proc.pid, None)
                    peaks.pop(proc.pid, None)
                    continue
                labels[proc.pid] = f"[{proc.pid}] " + " ".join(cmdline)[:160]
                tracked.append(proc)
        total = 0
        for proc in tracked:
            try:
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            peaks[proc.pid] = max(peaks.get(proc.pid, 0), rss)
        peak_total = max(peak_total, total)
        samples += 1
        ready, _, _ = select.select([sys.stdin], [], [], interval)
        if ready:
            break
    processes = {labels[pid]: peak for pid, peak in peaks.items()}
    print(
        json.dumps({"peak_total": peak_total, "samples": samples, "processes": processes}),
        flush=True,
    )
    return 0


def receiver_main(protocol: str) -> int:
    """Run an OTLPReceiver in sink mode; answer ``stats`` lines on stdin until EOF."""
    spec = importlib.util.spec_from_file_location("otlp_receiver", RECEIVER_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["otlp_receiver"] = module
    spec.loader.exec_module(module)
    sys.path.insert(0, str(REPO))
    from helmet_otel import semconv

    with module.OTLPReceiver(protocol=protocol, sink=True) as receiver:
        print(json.dumps({"endpoint": receiver.endpoint}), flush=True)
        for line in sys.stdin:
            if line.strip() != "stats":
                continue
            dropped = None  # unknown until the metric arrives
            last = [m for m in receiver.metrics() if m["name"] == semconv.METRIC_TELEMETRY_DROPPED]
            if last:
                dropped = sum(p["value"] or 0 for p in last[-1]["data_points"])
            with receiver._cond:
                stats = {
                    "counts": dict(receiver.counts),
                    "requests": len(receiver.requests),
                    "rejected": sum(1 for _, status in receiver.requests if status >= 300),
                    "dropped": dropped,
                }
            print(json.dumps(stats), flush=True)
    return 0


class Helper:
    """A helper subprocess speaking JSON lines: this script with a hidden mode."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def ask(self, line: str | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"helper {self.args} ended without answering")
        return json.loads(answer)

    def finish(self) -> dict[str, Any] | None:
        """Close stdin; return the final JSON line, if the helper writes one."""
        out, _ = self.proc.communicate(timeout=30)
        lines = [line for line in out.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- the client -----------------------------------------------------------------------------


def call_request(request_id: int, arguments: bytes = b'{"text":"hello world"}') -> bytes:
    return (
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":%s}}\n'
        % (request_id, arguments)
    )


class Session:
    """One spawned command (direct server or proxy + server) and a raw line client for it."""

    def __init__(self, argv: list[str], env: dict[str, str], stderr_path: Path) -> None:
        self.argv = argv
        self.env = env
        self.stderr_path = stderr_path
        self.next_id = 1

    async def __aenter__(self) -> Session:
        self._stderr = self.stderr_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            env=self.env,
            limit=1 << 30,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.writer = self.proc.stdin
        self.reader = self.proc.stdout
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._stderr.close()

    def take_ids(self, n: int) -> int:
        first = self.next_id
        self.next_id += n
        return first

    async def read_response(self) -> Any:
        line = await self.reader.readline()
        if not line:
            raise RuntimeError("the connection closed (EOF on stdout)")
        return loads(line)

    async def initialize(self) -> None:
        self.writer.write(
            b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":'
            b'"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}\n'
        )
        response = await self.read_response()
        if response.get("id") != 0 or "result" not in response:
            raise RuntimeError(f"bad initialize response: {response!r}")
        self.writer.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        await self.writer.drain()

    async def sequential(self, n: int) -> list[int]:
        """``n`` round trips one after the other; each one's latency in nanoseconds."""
        first = self.take_ids(n)
        requests = [call_request(first + i) for i in range(n)]
        latencies = [0] * n
        write, readline, clock = self.writer.write, self.reader.readline, time.perf_counter_ns
        for i, request in enumerate(requests):
            started = clock()
            write(request)
            line = await readline()
            latencies[i] = clock() - started
            if not line:
                raise RuntimeError("the connection closed (EOF on stdout)")
            if loads(line).get("id") != first + i:
                raise RuntimeError(f"out of order or foreign response: {line[:200]!r}")
        return latencies

    async def pipelined(self, n: int, depth: int) -> float:
        """``n`` calls keeping ``depth`` in flight; seconds taken. Checks every id came back."""
        first = self.take_ids(n)
        requests = [call_request(first + i) for i in range(n)]
        seen = bytearray(n)
        write, readline = self.writer.write, self.reader.readline
        transport = self.writer.transport
        started = time.perf_counter()
        sent = min(depth, n)
        write(b"".join(requests[:sent]))
        for _ in range(n):
            line = await readline()
            if not line:
                raise RuntimeError("the connection closed (EOF on stdout)")
            index = loads(line)["id"] - first
            if not 0 <= index < n or seen[index]:
                raise RuntimeError(f"unexpected response: {line[:200]!r}")
            seen[index] = 1
            if sent < n:
                write(requests[sent])
                sent += 1
                if transport.get_write_buffer_size() > 1 << 20:
                    await self.writer.drain()
        elapsed = time.perf_counter() - started
        if sum(seen) != n:
            raise RuntimeError(f"{n - sum(seen)} responses missing")
        return elapsed

    async def paced(self, n: int, depth: int, rate: float) -> float:
        """``n`` calls at ``rate`` calls/s with at most ``depth`` in flight; achieved calls/s."""
        first = self.take_ids(n)
        requests = [call_request(first + i) for i in range(n)]
        slots = asyncio.Semaphore(depth)
        seen = bytearray(n)

        async def receive() -> None:
            for _ in range(n):
                line = await self.reader.readline()
                if not line:
                    raise RuntimeError("the connection closed (EOF on stdout)")
                index = loads(line)["id"] - first
                if not 0 <= index < n or seen[index]:
                    raise RuntimeError(f"unexpected response: {line[:200]!r}")
                seen[index] = 1
                slots.release()

        receiver = asyncio.ensure_future(receive())
        started = time.perf_counter()
        try:
            for i, request in enumerate(requests):
                await slots.acquire()
                # keep to the schedule: late sends go out at once, early ones wait their turn
                wait = started + i / rate - time.perf_counter()
                if wait > 0.001:
                    await asyncio.sleep(wait)
                self.writer.write(request)
            await receiver
        finally:
            receiver.cancel()
        return n / (time.perf_counter() - started)

    async def large(self, size: int) -> float:
        """Echo a ``size``-byte text argument; seconds for the round trip. Checks equality."""
        text = base64.b64encode(os.urandom(size * 3 // 4 + 3))[:size]
        request_id = self.take_ids(1)
        request = call_request(request_id, b'{"text":"' + text + b'"}')
        started = time.perf_counter()

        async def send() -> None:
            self.writer.write(request)
            await self.writer.drain()

        _, response = await asyncio.gather(send(), self.read_response())
        elapsed = time.perf_counter() - started
        if response.get("id") != request_id:
            raise RuntimeError("the large response has the wrong id")
        echoed = response["result"]["content"][0]["text"]
        if echoed.encode() != text:
            raise RuntimeError(f"the {size}-byte argument did not come back intact")
        return elapsed

    async def close(self, grace: float = 60.0) -> float:
        """Close stdin and wait for the process to exit; seconds it took."""
        started = time.perf_counter()
        self.writer.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self.writer.wait_closed()
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise RuntimeError(f"did not exit within {grace:.0f} s after stdin closed") from None
        return time.perf_counter() - started


# --- running one configuration --------------------------------------------------------------


@dataclass
class Options:
    warmup: int
    calls: int
    pipelined: int
    depth: int
    higher_depth: int | None
    large_sizes: list[int]
    otlp_protocol: str
    interval: float
    keep_stderr: Path | None
    rate: float
    paced_calls: int


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    index = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


class Run:
    """One configuration's phases: a fresh process for small messages, another for large."""

    def __init__(self, config: Config, options: Options, workdir: Path) -> None:
        self.config = config
        self.options = options
        self.workdir = workdir

    def _argv_env(self, values: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        server = [sys.executable, str(ECHO_SERVER)]
        env = base_env()
        env.update({k: substitute(v, values) for k, v in self.config.env.items()})
        if self.config.direct:
            return server, env
        prefix = [substitute(part, values) for part in self.config.prefix]
        prefix[0] = resolve_program(prefix[0])
        return [*prefix, *server], env

    def _phase(self, name: str, body: Callable[[Session], Any]) -> dict[str, Any]:
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        receiver = (
            Helper("--_receiver", self.options.otlp_protocol) if self.config.needs_otlp else None
        )
        values = {"tmp": str(tmp)}
        try:
            if receiver is not None:
                values["otlp"] = receiver.ask()["endpoint"]
                if self.options.otlp_protocol == "grpc":
                    self.config.env.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            argv, env = self._argv_env(values)
            stderr_path = tmp / "stderr.log"
            try:
                result = asyncio.run(
                    asyncio.wait_for(self._drive(argv, env, stderr_path, body), PHASE_TIMEOUT)
                )
            except Exception as exc:
                tail = (
                    stderr_path.read_text(errors="replace")[-2000:] if stderr_path.exists() else ""
                )
                raise RuntimeError(
                    f"[{self.config.label}] {name} phase failed: {exc}\n"
                    f"command: {shlex.join(argv)}\nstderr tail:\n{tail}"
                ) from exc
            if receiver is not None:
                result["telemetry"] = self._settled_stats(receiver)
            if self.options.keep_stderr is not None:
                target = (
                    self.options.keep_stderr
                    / f"{self.config.label}-{name}.stderr.log".replace(" ", "_")
                )
                shutil.copy(stderr_path, target)
            return result
        finally:
            if receiver is not None:
                with contextlib.suppress(Exception):
                    receiver.finish()
                receiver.kill()

    @staticmethod
    def _settled_stats(receiver: Helper) -> dict[str, Any]:
        """Receiver counts once they stop moving (the proxy has exited and flushed)."""
        stats = receiver.ask("stats")
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            again = receiver.ask("stats")
            if again == stats:
                break
            stats = again
        return stats

    async def _drive(
        self,
        argv: list[str],
        env: dict[str, str],
        stderr_path: Path,
        body: Callable[[Session], Any],
    ) -> dict[str, Any]:
        sampler = Helper("--_rss", str(self.options.interval))
        try:
            async with Session(argv, env, stderr_path) as session:
                sampler.send(str(session.proc.pid))
                result = await body(session)
                result["shutdown_s"] = await session.close()
            result["rss"] = sampler.finish()
        finally:
            sampler.kill()
        result["exit_code"] = session.proc.returncode
        return result

    async def _small(self, session: Session) -> dict[str, Any]:
        o = self.options
        await session.initialize()
        await session.sequential(o.warmup)
        latencies = sorted(await session.sequential(o.calls))
        result: dict[str, Any] = {
            "p50_us": percentile(latencies, 50) / 1000,
            "p90_us": percentile(latencies, 90) / 1000,
            "p99_us": percentile(latencies, 99) / 1000,
            "mean_us": statistics.fmean(latencies) / 1000,
        }
        seconds = await session.pipelined(o.pipelined, o.depth)
        result["throughput"] = o.pipelined / seconds
        if o.higher_depth:
            seconds = await session.pipelined(o.pipelined, o.higher_depth)
            result["throughput_higher"] = o.pipelined / seconds
        result["calls"] = session.next_id - 1
        return result

    async def _paced(self, session: Session) -> dict[str, Any]:
        o = self.options
        await session.initialize()
        achieved = await session.paced(o.paced_calls, o.depth, o.rate)
        return {"paced_throughput": achieved, "calls": session.next_id - 1}

    async def _large(self, session: Session) -> dict[str, Any]:
        await session.initialize()
        return {
            f"large_{size // MB}mb_s": await session.large(size)
            for size in self.options.large_sizes
        }

    def execute(self) -> dict[str, Any]:
        small = self._phase("small", self._small)
        large = self._phase("large", self._large)
        row: dict[str, Any] = {
            "label": self.config.label,
            "direct": self.config.direct,
            "command": self.describe(),
        }
        row.update({k: v for k, v in small.items() if k not in ("rss", "telemetry")})
        row["shutdown_small_s"] = row.pop("shutdown_s")
        row["rss_small"] = small["rss"]
        row["rss_large"] = large["rss"]
        row.update({k: v for k, v in large.items() if k.startswith("large_")})
        if "telemetry" in small:
            row["telemetry"] = small["telemetry"]
            row["telemetry_large"] = large["telemetry"]
        if self.options.rate > 0 and not self.config.direct:
            paced = self._phase("paced", self._paced)
            row["paced_throughput"] = paced["paced_throughput"]
            row["paced_calls"] = paced["calls"]
            row["shutdown_paced_s"] = paced["shutdown_s"]
            row["rss_paced"] = paced["rss"]
            if "telemetry" in paced:
                row["telemetry_paced"] = paced["telemetry"]
        return row

    def describe(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.config.env.items())
        prefix = shlex.join(self.config.prefix)
        server = f"python {ECHO_SERVER.relative_to(REPO)}"
        return " ".join(filter(None, [env, prefix, server]))


# --- aggregation and report -----------------------------------------------------------------

NUMERIC = (
    "p50_us",
    "p90_us",
    "p99_us",
    "mean_us",
    "throughput",
    "throughput_higher",
    "shutdown_small_s",
    "paced_throughput",
)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field over the rounds of one configuration."""
    merged = dict(rows[-1])
    for key in rows[0]:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if values and (key in NUMERIC or key.startswith("large_")):
            merged[key] = statistics.median(values)
    for key in ("rss_small", "rss_large"):
        peaks = [r[key]["peak_total"] for r in rows if r.get(key)]
        merged[key + "_mb"] = max(peaks) / 2**20 if peaks else None
    merged["rounds"] = len(rows)
    return merged


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(results: list[dict[str, Any]], options: Options) -> str:
    direct = next((r for r in results if r["label"] == "direct"), results[0])
    sizes = [f"large_{size // MB}mb_s" for size in options.large_sizes]
    header = [
        "configuration",
        "p50 us",
        "p90 us",
        "p99 us",
        "added p50 us",
        f"calls/s @{options.depth}",
        "vs direct",
    ]
    if options.higher_depth:
        header += [f"calls/s @{options.higher_depth}"]
    header += [f"{size // MB} MB echo s" for size in options.large_sizes]
    header += ["peak RSS small MB", "peak RSS large MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [
            r["label"],
            fmt(r["p50_us"], ".0f"),
            fmt(r["p90_us"], ".0f"),
            fmt(r["p99_us"], ".0f"),
            "-" if r is direct else fmt(r["p50_us"] - direct["p50_us"], "+.0f"),
            fmt(r["throughput"], ",.0f"),
            f"{r['throughput'] / direct['throughput']:.0%}",
        ]
        if options.higher_depth:
            cells.append(fmt(r.get("throughput_higher"), ",.0f"))
        cells += [fmt(r.get(key), ".2f") for key in sizes]
        direct_row = r["direct"]
        cells += [
            "-" if direct_row else fmt(r["rss_small_mb"], ".1f"),
            "-" if direct_row else fmt(r["rss_large_mb"], ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["\n".join(lines)]
    telemetry = [r for r in results if "telemetry" in r]
    if telemetry:
        out.append(
            "\nTelemetry delivered to the local OTLP receiver (last round):\n\n"
            "| configuration | phase | calls | spans | log records "
            "| metric points | OTLP requests | rejected | helmet.telemetry.dropped "
            "| exit after stdin EOF s |\n"
            "|---|---|---|---|---|---|---|---|---|---|"
        )
        for r in telemetry:
            phases = [("small, full speed", r["telemetry"], r["calls"], r["shutdown_small_s"])]
            if "telemetry_paced" in r:
                phase = f"paced {options.rate:,.0f}/s (got {r['paced_throughput']:,.0f}/s)"
                phases.append(
                    (phase, r["telemetry_paced"], r["paced_calls"], r["shutdown_paced_s"])
                )
            for phase, t, calls, shutdown in phases:
                out.append(
                    f"| {r['label']} | {phase} | {calls:,} | {t['counts']['spans']:,} | "
                    f"{t['counts']['logs']:,} | {t['counts']['data_points']:,} | "
                    f"{t['requests']:,} | {t['rejected']} | {_dropped(t)} | {shutdown:.2f} |"
                )
    processes = [r for r in results if r.get("rss_small") and r["rss_small"]["processes"]]
    if processes:
        out.append("\nPeak RSS per process (small-message phase, last round):\n")
        for r in processes:
            for name, peak in r["rss_small"]["processes"].items():
                out.append(f"- {r['label']}: `{name}` {peak / 2**20:.1f} MB")
    targets = check_targets(results, options)
    if targets:
        out.append("\n| target | measured | met |\n|---|---|---|")
        out.extend(f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets)
    return "\n".join(out)


def _dropped(t: dict[str, Any]) -> str:
    """The receiver's last helmet.telemetry.dropped, or "unknown" without a point (the worker
    may not have made its last export: that is not "nothing dropped")."""
    return "unknown" if t["dropped"] is None else f"{t['dropped']:,}"


def complete_telemetry(t: dict[str, Any], calls: int) -> bool:
    """Nothing dropped: per call a SERVER and a CLIENT span, a request and a response record."""
    return (
        not t["dropped"]  # 0, or no point yet (the counter is exported from the start)
        and t["rejected"] == 0
        and t["counts"]["spans"] >= 2 * calls
        and t["counts"]["logs"] >= 2 * calls
    )


def describe_telemetry(t: dict[str, Any], calls: int) -> str:
    return (
        f"helmet.telemetry.dropped {_dropped(t)}; {t['counts']['spans']:,} spans, "
        f"{t['counts']['logs']:,} log records for {calls:,} calls"
    )


def check_targets(results: list[dict[str, Any]], options: Options) -> list[tuple[str, str, bool]]:
    """The issue's targets, checked when the default labels are present."""
    by_label = {r["label"]: r for r in results}
    direct, off, on = (by_label.get(k) for k in ("direct", "telemetry off", "telemetry on"))
    out: list[tuple[str, str, bool]] = []
    if direct and off:
        added = off["p50_us"] - direct["p50_us"]
        out.append(("telemetry off: added p50 <= 100 us", f"{added:+.0f} us", added <= 100))
        ratio = off["throughput"] / direct["throughput"]
        out.append(
            (
                f"telemetry off: calls/s @{options.depth} >= 50% of direct",
                f"{ratio:.0%}",
                ratio >= 0.5,
            )
        )
        if off["rss_small_mb"] is not None:
            mb = off["rss_small_mb"]
            out.append(("telemetry off: peak RSS (small) <= 60 MB", f"{mb:.1f} MB", mb <= 60))
    if direct and on:
        added = on["p50_us"] - direct["p50_us"]
        out.append(("telemetry on: added p50 <= 200 us", f"{added:+.0f} us", added <= 200))
        tput = on["throughput"]
        out.append(
            (f"telemetry on: >= 4,000 calls/s @{options.depth}", f"{tput:,.0f}", tput >= 4000)
        )
        if "telemetry_paced" in on:
            t, calls = on["telemetry_paced"], on["paced_calls"]
            achieved = on["paced_throughput"]
            ok = complete_telemetry(t, calls) and options.rate >= 4000 and achieved >= 0.98 * 4000
            out.append(
                (
                    f"telemetry on: nothing dropped at 4,000 calls/s @{options.depth}",
                    f"{achieved:,.0f} calls/s; {describe_telemetry(t, calls)}",
                    ok,
                )
            )
        elif "telemetry" in on:
            t, calls = on["telemetry"], on["calls"]
            out.append(
                (
                    f"telemetry on: nothing dropped at full speed @{options.depth}",
                    describe_telemetry(t, calls),
                    complete_telemetry(t, calls),
                )
            )
        if on["rss_small_mb"] is not None:
            mb = on["rss_small_mb"]
            out.append(
                (
                    "telemetry on: peak RSS of all proxy processes (small) <= 120 MB",
                    f"{mb:.1f} MB",
                    mb <= 120,
                )
            )
    if off and on and options.higher_depth and off.get("throughput_higher"):
        ratio = on["throughput_higher"] / off["throughput_higher"]
        out.append(
            (
                f"telemetry on: calls/s @{options.higher_depth} >= 80% of telemetry off",
                f"{ratio:.0%}",
                ratio >= 0.8,
            )
        )
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with contextlib.suppress(OSError):
        info["loadavg"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults: direct, 'helmet-otel --no-store', 'helmet-otel --store {tmp}/store' "
        "with OTEL_EXPORTER_OTLP_ENDPOINT={otlp}.",
    )
    parser.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a proxy command prefix (repeatable); replaces the default proxies. "
        "{otlp} = a local OTLP receiver's endpoint, {tmp} = a fresh temp dir",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME",
        help="a label for the --proxy of the same position",
    )
    parser.add_argument("--no-direct", action="store_true", help="do not run the direct baseline")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls measured")
    parser.add_argument("--pipelined", type=int, default=20_000, help="calls in a pipelined run")
    parser.add_argument("--depth", type=int, default=64, help="requests in flight")
    parser.add_argument(
        "--higher-load",
        action="store_true",
        help="also run the pipelined calls with --higher-depth in flight",
    )
    parser.add_argument("--higher-depth", type=int, default=256)
    parser.add_argument(
        "--large",
        type=float,
        action="append",
        metavar="MB",
        help="large-argument sizes in MB (repeatable; default 10 and 50)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=4000,
        help="calls/s of the paced run (--depth in flight) that checks nothing is dropped; 0 = skip",
    )
    parser.add_argument("--paced-calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1, help="repeat all; report medians")
    parser.add_argument(
        "--otlp-protocol", choices=["http/protobuf", "grpc"], default="http/protobuf"
    )
    parser.add_argument("--interval", type=float, default=0.02, help="RSS sampling period, s")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument(
        "--keep-stderr", type=Path, metavar="DIR", help="copy each run's stderr here"
    )
    args = parser.parse_args(argv)
    if len(args.label) > len(args.proxy):
        parser.error("more --label than --proxy")
    return args


def build_configs(args: argparse.Namespace) -> list[Config]:
    if not args.proxy:
        configs = default_configs()
    else:
        configs = [Config("direct", [])]
        for i, prefix in enumerate(args.proxy):
            label = args.label[i] if i < len(args.label) else prefix
            configs.append(Config(label, shlex.split(prefix)))
    if args.no_direct:
        configs = [c for c in configs if not c.direct]
    return configs


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["--_rss"]:
        return rss_sampler_main(float(argv[1]))
    if argv[:1] == ["--_receiver"]:
        return receiver_main(argv[1])

    args = parse_args(argv)
    options = Options(
        warmup=args.warmup,
        calls=args.calls,
        pipelined=args.pipelined,
        depth=args.depth,
        higher_depth=args.higher_depth if args.higher_load else None,
        large_sizes=[int(mb * MB) for mb in (args.large or [10, 50])],
        otlp_protocol=args.otlp_protocol,
        interval=args.interval,
        keep_stderr=args.keep_stderr,
        rate=args.rate,
        paced_calls=args.paced_calls,
    )
    if options.keep_stderr is not None:
        options.keep_stderr.mkdir(parents=True, exist_ok=True)
    configs = build_configs(args)
    rows: dict[str, list[dict[str, Any]]] = {c.label: [] for c in configs}
    load_before = machine_info().get("loadavg", "?")
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as workdir:
        for round_no in range(args.rounds):
            for config in configs:
                print(
                    f"# round {round_no + 1}/{args.rounds}: {config.label} ...",
                    file=sys.stderr,
                    flush=True,
                )
                rows[config.label].append(Run(config, options, Path(workdir)).execute())
    results = [aggregate(rows[c.label]) for c in configs]
    machine = machine_info()
    command = shlex.join(["python", "benchmarks/bench_relay.py", *argv])
    print(f"Command: `{command}`  ")
    print(
        f"Machine: {machine['nproc']} CPUs ({machine.get('cpu', 'unknown CPU')}), "
        f"Python {machine['python']}, {machine['platform']}, {machine['date']}; "
        f"load average {load_before} before, {machine.get('loadavg', '?')} after; "
        f"{args.rounds} round(s), medians\n"
    )
    print(markdown(results, options))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": machine,
                    "options": vars(options) | {"keep_stderr": None},
                    "results": results,
                    "rounds": rows,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
