"""CPU per call of three parts of the telemetry worker, each alone in one thread.

Usage (from the repository root; run it from another checkout's ``benchmarks/`` to compare)::

    .venv/bin/python benchmarks/bench_worker_parts.py [--calls 20000] [--rounds 5]

- ``metrics``: what one call measures (two messages counted and sized, the SERVER and CLIENT
  durations), as the recorder's call sites make the measurements; ``metrics-keyed``: the
  durations by a key made once (`Histogram.record_key`, what a kind of call can hold).
- ``decode``: `frames.decode` of relay batches of a ``tools/call`` request and its response.
- ``handoff``: the batches from a file to the worker's main loop, per call (decode included):
  before, a reader thread (`read_batch`) and a bounded queue; since, the loop polls and reads
  itself (`frames.BatchReader`). The relay hands over about ten calls per batch at 2,000/s.
  ``paced``: the same from a pipe another process writes a batch at a time.
- ``queue``: `BatchQueue.put` of what one call emits (two spans, two log records) into the
  four queues of store + OTLP, with the export threads taking the batches.

Figures are process CPU microseconds per call (median of ``--rounds``). Not part of the suite.
"""

from __future__ import annotations

import argparse
import os
import queue
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from helmet_otel import semconv as sc
from helmet_otel.telemetry import frames, worker
from helmet_otel.telemetry.batching import BatchQueue, BatchSettings
from helmet_otel.telemetry.instruments import Instruments
from helmet_otel.telemetry.metrics import MetricSet

TRACE = 0x0AF7651916CD43DD8448EB211C80319C


def _call_records(n: int) -> list[bytes]:
    records: list[bytes] = []
    for i in range(n):
        request = (
            b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo",'
            b'"arguments":{"text":"hello world"},"_meta":{"progressToken":%d}}}' % (i, i)
        )
        response = (
            b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text",'
            b'"text":"hello world"}],"isError":false}}' % i
        )
        ts = time.time_ns()
        records.append(frames.whole(1, 0, 0, ts, request, 0x1111 + i, 0x2222 + i))
        records.append(frames.whole(1, 1, 0, ts + 1000, response, 0x1111 + i, 0x2222 + i))
    return records


def _batches(calls: int, per_batch: int) -> list[bytes]:
    records = _call_records(per_batch)
    one = frames.batch(b"".join(records))
    return [one] * (calls // per_batch)


def _cpu(run: Callable[[], None]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def bench_metrics(calls: int, keyed: bool) -> float:
    metrics = MetricSet(Resource({}), InstrumentationScope("t"))
    instruments = Instruments(metrics)
    server_attrs = {sc.MCP_METHOD_NAME: "tools/call", sc.GEN_AI_TOOL_NAME: "echo",
                    sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.NETWORK_TRANSPORT: "pipe",
                    sc.MCP_PROTOCOL_VERSION: "2025-06-18"}  # fmt: skip
    request = {sc.HELMET_DIRECTION: "client_to_server", sc.HELMET_MESSAGE_KIND: "request",
               sc.HELMET_MESSAGE_SIZE: 120}  # fmt: skip
    response = {sc.HELMET_DIRECTION: "server_to_client", sc.HELMET_MESSAGE_KIND: "response",
                sc.HELMET_MESSAGE_SIZE: 90}  # fmt: skip
    server, client = instruments.server_duration, instruments.client_duration

    def run() -> None:
        for i in range(calls):
            label = instruments.method_label("tools/call")
            instruments.count_message(label, request, 1)
            latency = (i % 100) / 1000
            if keyed:
                server.record_key(latency, server_key, 1, 2, 3, 1)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
                client.record_key(latency, client_key, 1, 2, 3, 1)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
            else:
                server.record(latency, dict(server_attrs), 1, 2, 3, 1)
                client.record(latency, dict(server_attrs), 1, 2, 3, 1)
            instruments.count_message(label, response, 1)

    if keyed:
        from helmet_otel.telemetry.metrics import attribute_key  # pyright: ignore[reportAttributeAccessIssue, reportUnknownVariableType]

        server_key = client_key = attribute_key(server_attrs)  # pyright: ignore[reportUnknownVariableType]
    return _cpu(run) / calls


def bench_decode(calls: int, per_batch: int) -> float:
    batches = [b[frames.BATCH.size :] for b in _batches(calls, per_batch)]

    def run() -> None:
        for data in batches:
            frames.decode(data)

    return _cpu(run) / calls


def bench_handoff(calls: int, per_batch: int) -> float:
    """The worker's reader thread feeding the main thread, from a file of batches."""
    with tempfile.TemporaryFile() as file:
        file.write(b"".join(_batches(calls, per_batch)))
        file.seek(0)
        stream = os.fdopen(os.dup(file.fileno()), "rb", buffering=1 << 20)
    handed: queue.Queue[list[frames.Frame] | None] = queue.Queue(maxsize=4)

    def run_polled() -> None:  # the worker's loop since it reads the pipe itself
        reader = frames.BatchReader(stream.fileno())  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLIN)
        got = 0
        while True:
            poller.poll(1000)
            batch = worker.read_frames(reader)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]
            if batch is None:
                break
            got += len(batch)  # pyright: ignore[reportUnknownArgumentType]
        assert got == 2 * calls - 2 * (calls % per_batch), got

    if hasattr(frames, "BatchReader"):
        cpu = _cpu(run_polled)
        stream.close()
        return cpu / calls

    def run() -> None:
        threading.Thread(target=worker._reader, args=(stream, handed), daemon=True).start()  # pyright: ignore[reportPrivateUsage]
        got = 0
        while True:
            batch = handed.get()
            if batch is None:
                break
            got += len(batch)
        assert got == 2 * calls - 2 * (calls % per_batch), got

    cpu = _cpu(run)
    stream.close()
    return cpu / calls


_PACED_WRITER = """
import sys, time
data = open(sys.argv[1], "rb").read()
size, pause = int(sys.argv[2]), float(sys.argv[3])
out = sys.stdout.buffer
for at in range(0, len(data), size):
    out.write(data[at : at + size])
    out.flush()
    time.sleep(pause)
"""


def bench_paced(calls: int, per_batch: int, pause_s: float = 0.0005) -> float:
    """`bench_handoff` from a pipe another process writes a batch at a time, as the relay
    does (the worker mostly waits for the next batch): this process's CPU per call."""
    batches = _batches(calls, per_batch)
    with tempfile.NamedTemporaryFile() as file:
        file.write(b"".join(batches))
        file.flush()
        writer = subprocess.Popen(
            [sys.executable, "-c", _PACED_WRITER, file.name, str(len(batches[0])), str(pause_s)],
            stdout=subprocess.PIPE,
        )
        assert writer.stdout is not None
        stream = writer.stdout
        handed: queue.Queue[list[frames.Frame] | None] = queue.Queue(maxsize=4)

        def run_polled() -> None:
            reader = frames.BatchReader(stream.fileno())  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]
            poller = select.poll()
            poller.register(stream.fileno(), select.POLLIN)
            while True:
                poller.poll(1000)
                if worker.read_frames(reader) is None:  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
                    return

        def run() -> None:
            threading.Thread(target=worker._reader, args=(stream, handed), daemon=True).start()  # pyright: ignore[reportPrivateUsage, reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownArgumentType]
            while handed.get() is not None:
                pass

        cpu = _cpu(run_polled if hasattr(frames, "BatchReader") else run)
        writer.wait()
    return cpu / calls


def bench_queue(calls: int) -> float:
    settings = BatchSettings(4096, 512, 0.2)
    taken = [0]

    def export(batch: Sequence[object]) -> bool:
        taken[0] += len(batch)
        return True

    def on_drop(reason: str, count: int) -> None:
        raise AssertionError(reason)

    queues = [
        BatchQueue(f"q{i}", export, on_drop, settings, wait_s=0.25)  # (none may drop)
        for i in range(4)
    ]
    item = object()

    def run() -> None:
        for _ in range(calls):
            for q in queues:  # SERVER and CLIENT span, request and response record
                q.put(item)
                q.put(item)
        for q in queues:
            q.drain(time.monotonic() + 10)

    cpu = _cpu(run)
    assert taken[0] == 8 * calls, taken
    return cpu / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parts", nargs="+",
                        default=["metrics", "metrics-keyed", "decode", "handoff", "paced", "queue"])  # fmt: skip
    args = parser.parse_args()
    runs: dict[str, Callable[[], float]] = {
        "metrics": lambda: bench_metrics(args.calls, False),
        "metrics-keyed": lambda: bench_metrics(args.calls, True),
        "decode": lambda: bench_decode(args.calls, 8),
        "handoff": lambda: bench_handoff(args.calls, 8),
        "paced": lambda: bench_paced(args.calls, 8),
        "queue": lambda: bench_queue(args.calls),
    }
    for part in args.parts:
        figures = [runs[part]() * 1e6 for _ in range(args.rounds)]
        print(f"{part:14} {statistics.median(figures):7.2f} us/call  "
              f"(rounds: {', '.join(f'{f:.2f}' for f in figures)})")  # fmt: skip


if __name__ == "__main__":
    main()
