"""What the wrapped server consumes: its process tree read from /proc, the process metrics, the
``helmet.performance`` figures, and the store's per-session CPU time and peak memory.

Real processes throughout: a child that holds memory, threads, files and a grandchild; the
proxy driven by the official SDK client with a real OTLP receiver and a real store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from mcp import Client

from helmet_otel import semconv as sc
from helmet_otel.cli.main import main
from helmet_otel.store.query import LogFilter, Reader
from helmet_otel.telemetry.instruments import Instruments
from helmet_otel.telemetry.metrics import MetricSet
from helmet_otel.telemetry.process_tree import TreeSample, sample_trees
from helmet_otel.telemetry.server_usage import ServerUsage
from helmet_otel.transports.child import ChildProcess, ServerCommand
from tests.otlp_receiver import OTLPReceiver
from tests.telemetry.helpers import by_event, drive, proxy_env

MIB = 1 << 20

# Holds 48 MiB (every byte written, so resident), 3 extra threads, 5 extra open files and a
# sleeping grandchild; burns CPU until it has used 0.3 s; says "ready" and waits for stdin EOF.
_HOLDER = """
import os, subprocess, sys, threading, time
block = bytearray(b"x") * (48 << 20)
events = [threading.Event() for _ in range(3)]
for e in events:
    threading.Thread(target=e.wait, daemon=True).start()
files = [open(os.devnull) for _ in range(5)]
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
while time.process_time() < 0.3:
    pass
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.read()
kid.kill(); kid.wait()
"""


def test_a_process_tree_is_read_from_proc() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        process_group=0,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == b"ready\n"
        baseline = sample_trees([os.getpid()])  # this process: also found, separately
        found = sample_trees([proc.pid, 999_999_999])
        assert set(found) == {proc.pid}  # a pid that is not running has no sample
        tree = found[proc.pid]
        assert tree.processes == 2  # the holder and its grandchild
        assert tree.threads == 1 + 3 + 1
        assert tree.memory_bytes >= 48 * MIB
        assert tree.cpu_user_s + tree.cpu_system_s >= 0.3 - 0.03  # whole clock ticks
        # stdin, stdout, stderr, 5 files (+ the grandchild's three, + pipes it holds)
        assert tree.open_fds >= 3 + 5 + 3
        assert os.getpid() in baseline and baseline[os.getpid()].processes >= 1
    finally:
        proc.kill()
        proc.wait()
    assert sample_trees([proc.pid]) == {}


def sample(user: float, system: float, memory: int, threads: int = 1, fds: int = 3) -> TreeSample:
    return TreeSample(user, system, memory, threads, fds, 1)


def _points(metrics: MetricSet) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    data = metrics.collect()
    assert data is not None
    return {
        (m.name, tuple(sorted((p.attributes or {}).items()))): p.value  # pyright: ignore[reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownArgumentType]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }


def test_samples_move_the_metrics_and_the_end_completes_them() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    metrics = MetricSet(Resource.create({}), InstrumentationScope("t"))
    instruments = Instruments(metrics)
    a, b = ServerUsage(1, instruments), ServerUsage(2, instruments)
    a.observe(sample(1.0, 0.5, 100 * MIB, threads=4, fds=10))
    b.observe(sample(2.0, 0.0, 50 * MIB, threads=2, fds=6))
    a.observe(sample(1.5, 0.25, 80 * MIB, threads=3, fds=9))  # system time went down: kept
    user, system = ("cpu.mode", "user"), ("cpu.mode", "system")
    assert _points(metrics) == {
        (sc.METRIC_PROCESS_CPU_TIME, (user,)): 3.5,
        (sc.METRIC_PROCESS_CPU_TIME, (system,)): 0.5,
        (sc.METRIC_PROCESS_MEMORY_USAGE, ()): 130 * MIB,
        (sc.METRIC_PROCESS_THREAD_COUNT, ()): 5,
        (sc.METRIC_PROCESS_FD_COUNT, ()): 15,
    }
    a.finish((1.75, 0.75, 120 * MIB))  # the relay reaped it: final CPU, largest resident set
    assert _points(metrics) == {
        (sc.METRIC_PROCESS_CPU_TIME, (user,)): 3.75,
        (sc.METRIC_PROCESS_CPU_TIME, (system,)): 0.75,
        (sc.METRIC_PROCESS_MEMORY_USAGE, ()): 50 * MIB,
        (sc.METRIC_PROCESS_THREAD_COUNT, ()): 2,
        (sc.METRIC_PROCESS_FD_COUNT, ()): 6,
    }
    assert a.figures() == {
        "pid": 1, "cpu_s": 2.5, "cpu_user_s": 1.75, "cpu_system_s": 0.75, "memory_bytes": 0,
        "memory_peak_bytes": 120 * MIB, "threads": 0, "open_fds": 0, "processes": 0,
    }  # fmt: skip
    assert a.attributes() == {
        sc.HELMET_SERVER_CPU_TIME: 2.5,
        sc.HELMET_SERVER_MEMORY_PEAK: 120 * MIB,
    }
    a.observe(sample(9.0, 9.0, 9 * MIB))  # a late sample of an ended server changes nothing
    assert a.cpu_s == 2.5
    assert ServerUsage(3, instruments).attributes() == {}  # never sampled: nothing to store


def test_a_restarted_server_counts_on_from_the_crashed_ones() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    metrics = MetricSet(Resource.create({}), InstrumentationScope("t"))
    usage = ServerUsage(1, Instruments(metrics))
    usage.observe(sample(1.0, 0.5, 100 * MIB, threads=4, fds=10))
    usage.next_child(2, (1.25, 0.5, 110 * MIB))  # the first, as reaped: final; pid 2 goes on
    usage.observe(sample(0.5, 0.25, 30 * MIB, threads=1, fds=5))  # the new process's own
    assert usage.figures() == {
        "pid": 2, "cpu_s": 2.5, "cpu_user_s": 1.75, "cpu_system_s": 0.75,
        "memory_bytes": 30 * MIB, "memory_peak_bytes": 110 * MIB, "threads": 1, "open_fds": 5,
        "processes": 1,
    }  # fmt: skip
    usage.finish((2.0, 1.0, 40 * MIB))  # both servers, as the relay reaped them (summed)
    user, system = ("cpu.mode", "user"), ("cpu.mode", "system")
    assert _points(metrics) == {
        (sc.METRIC_PROCESS_CPU_TIME, (user,)): 2.0,
        (sc.METRIC_PROCESS_CPU_TIME, (system,)): 1.0,
        (sc.METRIC_PROCESS_MEMORY_USAGE, ()): 0,
        (sc.METRIC_PROCESS_THREAD_COUNT, ()): 0,
        (sc.METRIC_PROCESS_FD_COUNT, ()): 0,
    }
    assert usage.attributes() == {
        sc.HELMET_SERVER_CPU_TIME: 3.0,
        sc.HELMET_SERVER_MEMORY_PEAK: 110 * MIB,
    }


@pytest.mark.anyio
async def test_the_relay_reaps_its_server_with_what_it_used() -> None:
    burn = "import time\nwhile time.process_time() < 0.25: pass\nx = bytearray(b'x') * (32 << 20)"
    child = ChildProcess(ServerCommand([sys.executable, "-c", burn], dict(os.environ)))
    with anyio.fail_after(30):
        await child.watch_exit()
    assert child.proc.returncode == 0
    assert child.describe_exit() == (0, "MCP server exited with status 0")
    assert child.usage is not None
    assert child.usage.cpu_user_s + child.usage.cpu_system_s >= 0.25
    assert child.usage.max_rss_bytes >= 32 * MIB


# --- end to end ---------------------------------------------------------------------------

_HOLDING_DEMO = (
    sys.executable,
    "-c",
    "import runpy; block = bytearray(b'x') * (40 << 20); "
    "runpy.run_module('helmet_otel.examples.demo_server', run_name='__main__')",
)


def _live_performance(rx: OTLPReceiver) -> list[dict[str, Any]]:
    """``helmet.performance`` records sampled while the server held its memory."""
    return [
        r
        for r in by_event(rx.logs(), sc.EVENT_PERFORMANCE)
        if r["body"].get("server", {}).get("memory_bytes", 0) >= 40 * MIB
    ]


def _memory_points(rx: OTLPReceiver) -> list[float]:
    return [
        p["value"]
        for m in rx.metrics()
        if m["name"] == sc.METRIC_PROCESS_MEMORY_USAGE
        for p in m["data_points"]
    ]


@pytest.mark.e2e
@pytest.mark.anyio
async def test_server_usage_reaches_metrics_records_and_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store.db"
    with OTLPReceiver() as rx:

        async def scenario(client: Client) -> None:
            await client.list_tools()
            await client.call_tool("echo", {"text": "hello"})
            # while the session runs, a periodic sample shows the server's memory
            await anyio.to_thread.run_sync(
                lambda: rx.wait_for(
                    lambda r: (
                        bool(_live_performance(r)) and any(v >= 40 * MIB for v in _memory_points(r))
                    ),
                    timeout=30,
                )
            )

        env = proxy_env(rx.endpoint, {"HELMET_METRICS_INTERVAL": "0.2"})
        await drive(
            _HOLDING_DEMO, env, scenario, options=("--store", str(store), "--name", "holder"),
            stderr_path=tmp_path / "err",
        )  # fmt: skip
        rx.wait_for(lambda r: bool(by_event(r.logs(), sc.EVENT_PROXY_CLOSE)), timeout=20)
        metrics = rx.metrics()
        logs = rx.logs()

    units = {m["name"]: (m["unit"], m["type"], m["is_monotonic"]) for m in metrics}
    assert units[sc.METRIC_PROCESS_CPU_TIME] == ("s", "sum", True)
    assert units[sc.METRIC_PROCESS_MEMORY_USAGE] == ("By", "sum", False)
    assert units[sc.METRIC_PROCESS_THREAD_COUNT] == ("{thread}", "sum", False)
    assert units[sc.METRIC_PROCESS_FD_COUNT] == ("{file_descriptor}", "sum", False)
    modes = {
        p["attributes"].get(sc.CPU_MODE)
        for m in metrics
        if m["name"] == sc.METRIC_PROCESS_CPU_TIME
        for p in m["data_points"]
    }
    assert modes == {"user", "system"}
    assert {m["resource"]["service.name"] for m in metrics} == {"holder"}
    # the last export, after the session ended: the server left the live sums
    assert _memory_points(rx)[-1] == 0

    live = _live_performance(rx)
    figures = live[0]["body"]["server"]
    assert figures["processes"] == 1 and figures["threads"] >= 1 and figures["open_fds"] >= 3
    assert live[0]["attributes"][sc.HELMET_SERVER_MEMORY_PEAK] >= 40 * MIB
    assert live[0]["attributes"][sc.HELMET_SESSION_ID]
    (end,) = by_event(logs, sc.EVENT_SESSION_END)
    peak = end["attributes"][sc.HELMET_SERVER_MEMORY_PEAK]
    cpu = end["attributes"][sc.HELMET_SERVER_CPU_TIME]
    assert peak >= 40 * MIB and cpu > 0
    assert end["body"]["server"]["memory_peak_bytes"] == peak

    with Reader.open(store) as reader:
        (session,) = reader.sessions()
        stored = reader.logs(LogFilter(events=(sc.EVENT_PERFORMANCE,)))
    assert (session.cpu_s, session.peak_memory) == (cpu, peak)
    assert any("server" in (e.body or {}) for e in stored)  # pyright: ignore[reportOperatorIssue]

    capsys.readouterr()
    assert main(["sessions", "--store", str(store), "--format", "json"]) == 0
    (row,) = orjson.loads(capsys.readouterr().out)
    assert (row["cpu_s"], row["peak_memory_bytes"]) == (cpu, peak)
    assert main(["sessions", "--store", str(store), "--wide", "--no-pager"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert "CPU" in header and "PEAK MEM" in header
    assert f"{cpu:.2f}s" in line and " MiB" in line
    assert main(["stats", "--store", str(store), "-s", "last", "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["server_process"] == [
        {"session_id": session.session_id, "cpu_s": cpu, "peak_memory_bytes": peak}
    ]
    assert main(["stats", "--store", str(store), "-s", "last", "--no-pager"]) == 0
    table = capsys.readouterr().out
    assert "SERVER PROCESS" in table and session.session_id in table


@pytest.mark.e2e
def test_a_serve_worker_samples_each_sessions_server(tmp_path: Path) -> None:
    """Two sessions of one process (`serve`): each gets its own small helmet.performance
    record while it runs; the one that ends carries the reaped figures the relay sent."""
    import socket

    from helmet_otel.config import ProxyOptions
    from helmet_otel.telemetry import frames
    from helmet_otel.telemetry.frames import Close, Config, End, Start
    from tests.e2e.helpers import RawProcess, clean_env

    store = tmp_path / "store.db"
    sleepers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)
    ]
    try:
        options = ProxyOptions(store=str(store), store_max_bytes=0, metrics_interval=0.1)
        config = Config(options, "multi", os.getpid(), socket.gethostname(), "http")
        t0 = 1_795_000_000_000_000_000
        starts = [
            Start(k, t0, f"sess-{k}", "http", k, k, {"command": ["x"], "pid": p.pid})
            for k, p in ((1, sleepers[0]), (2, sleepers[1]))
        ]
        end = End(1, t0 + 1, 0, "client closed the connection", 0, 0, {}, "legacy", None,
                  None, None, (7.0, 2.0, 900 * MIB))  # fmt: skip
        worker = RawProcess([sys.executable, "-m", "helmet_otel.telemetry.worker"], env=clean_env())
        with worker:
            worker.write(frames.batch(b"".join(frames.pickled(f) for f in (config, *starts))))

            def per_session() -> set[str]:
                if not store.exists():
                    return set()
                with Reader.open(store) as reader:
                    found = reader.logs(LogFilter(events=(sc.EVENT_PERFORMANCE,)))
                return {e.session_id for e in found if e.session_id is not None}

            with anyio.from_thread.start_blocking_portal() as portal:  # bounded polling
                portal.call(_until, lambda: per_session() == {"sess-1", "sess-2"})
            worker.write(frames.batch(frames.pickled(end) + frames.pickled(Close(t0 + 2, "x"))))
            worker.close_stdin()
            assert worker.wait(timeout=30) == 0
        with Reader.open(store) as reader:
            rows = {s.session_id: s for s in reader.sessions()}
            records = reader.logs(LogFilter(events=(sc.EVENT_PERFORMANCE,)))
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
    # the reaped figures complete what the samples saw; the other session keeps its samples
    assert (rows["sess-1"].cpu_s, rows["sess-1"].peak_memory) == (9.0, 900 * MIB)
    assert rows["sess-2"].peak_memory is not None and rows["sess-2"].peak_memory > MIB
    one = next(e for e in records if e.session_id == "sess-2")
    body = one.body
    assert isinstance(body, dict) and set(body) == {"server"}  # pyright: ignore[reportUnknownArgumentType]
    process = [e for e in records if e.session_id is None]
    assert process and all("methods" in (e.body or {}) for e in process)  # pyright: ignore[reportOperatorIssue]


async def _until(condition: Any) -> None:
    with anyio.fail_after(30):
        while not condition():
            await anyio.sleep(0.05)
