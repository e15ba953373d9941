"""The telemetry worker's CPU per call, replayed from captured frames in one thread.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_worker_replay.py                    # capture once, replay
    .venv/bin/python benchmarks/bench_worker_replay.py --profile          # + a cProfile top list
    .venv/bin/python benchmarks/bench_worker_replay.py --frames F --capture --calls 5000

The frames come from a real relay: ``--capture`` (or a missing ``--frames`` file) runs
``helmet-otel --store TMP benchmarks/echo_server.py`` (OTLP off) and sends ``--calls`` small ``tools/call``
(``--rate`` calls/s, 16 in flight), while a ``sitecustomize`` put on the worker's ``PYTHONPATH`` copies every byte of
the worker's stdin into the frames file (the worker itself runs unchanged). Keep the file to
compare versions of the worker on the same input.

The replay is what the worker does per call, minus its threads and SQLite: decode the batches
(`frames.decode`), hand every frame to a `Recorder`, then, per 512 records as the batch queues
would, encode them for OTLP (`OtlpEncoder`) and convert them into store rows (the store's
exporters). The same frames are replayed ``--rounds`` times (a fresh recorder each time); the
best round's figures are printed, per call, per part. Deterministic: no threads, no clock but
the one measuring (records carry the captured times).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from helmet_otel import __version__
from helmet_otel import semconv as sc
from helmet_otel.telemetry import frames as fr

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "benchmarks" / "echo_server.py"
# (named by the message record's size: a capture in another record layout is not read)
DEFAULT_FRAMES = Path(tempfile.gettempdir()) / f"helmet-worker-frames-{fr.WHOLE.size}.bin"
BATCH_RECORDS = 512  # what a batch queue hands its exporter at most (OTEL_B*_MAX_EXPORT_BATCH_SIZE)

# Put on the worker's PYTHONPATH: tees fd 0 into HELMET_BENCH_CAPTURE, only in the worker.
_SITECUSTOMIZE = """
import os, sys, threading
_path = os.environ.get("HELMET_BENCH_CAPTURE")
if _path and "helmet_otel.telemetry.worker" in getattr(sys, "orig_argv", ()):
    _real = os.dup(0)
    _r, _w = os.pipe()
    os.dup2(_r, 0)
    os.close(_r)
    def _pump():
        with open(_path, "wb") as out:
            while True:
                data = os.read(_real, 1 << 16)
                if not data:
                    break
                out.write(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(_w, view):]
        os.close(_w)
    threading.Thread(target=_pump, daemon=True).start()
"""


def capture(path: Path, calls: int, rate: float, depth: int = 16) -> None:
    """Run a real proxy over the echo server and keep what its relay sent the worker."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HELMET_"))}
        env["PYTHONPATH"] = os.pathsep.join([tmp, str(ROOT)])
        env["HELMET_BENCH_CAPTURE"] = str(path)
        env["OTEL_SDK_DISABLED"] = "true"  # no collector: the frames are the same
        store = str(Path(tmp) / "store.db")
        argv = [sys.executable, "-m", "helmet_otel", "--store", store, sys.executable, str(ECHO)]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT
        )
        assert proc.stdin is not None and proc.stdout is not None
        init = (
            b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":'
            b'"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}\n'
        )
        proc.stdin.write(init)
        proc.stdin.flush()
        proc.stdout.readline()
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        sent = 0
        began = time.monotonic()
        while sent < calls:
            ahead = began + sent / rate - time.monotonic()
            if ahead > 0:  # paced: a relay above its budget sheds (the replay wants every call)
                time.sleep(ahead)
            window = min(depth, calls - sent)
            proc.stdin.write(
                b"".join(
                    b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":'
                    b'{"name":"echo","arguments":{"text":"hello world"}}}\n' % (sent + i + 1)
                    for i in range(window)
                )
            )
            proc.stdin.flush()
            for _ in range(window):
                assert proc.stdout.readline(), "the proxy closed its stdout"
            sent += window
        proc.stdin.close()
        proc.wait(timeout=60)


def read_batches(path: Path) -> list[bytes]:
    """The payloads of the captured batches (the headers' drop counts are all 0 here)."""
    data = path.read_bytes()
    batches: list[bytes] = []
    at = 0
    while at + fr.BATCH.size <= len(data):
        size, _full, _busy = fr.BATCH.unpack_from(data, at)
        at += fr.BATCH.size
        batches.append(data[at : at + size])
        at += size
    return batches


class _Collect:
    """A batch queue that keeps what it is given (the replay exports it in place)."""

    local = True

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)

    put_urgent = put

    def put_all(self, items: Sequence[Any]) -> None:
        self.items.extend(items)


def _pipeline(config: fr.Config) -> tuple[Any, _Collect, _Collect]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from helmet_otel.telemetry.metrics import MetricSet
    from helmet_otel.telemetry.pipeline import DropCounter, Pipeline

    resource = Resource.create(
        {
            sc.SERVICE_NAME: config.service_name,
            sc.HELMET_TRANSPORT: config.transport,
            "telemetry.distro.name": "helmet-otel",
            "telemetry.distro.version": __version__,
        }
    )
    scope = InstrumentationScope(sc.SCOPE_NAME, __version__)
    sampler = TracerProvider(resource=resource, shutdown_on_exit=False).sampler
    metrics = MetricSet(resource, scope, delta=True)
    drops = DropCounter(metrics.counter(sc.METRIC_TELEMETRY_DROPPED, "{record}", "dropped"))
    pipeline = Pipeline(resource, scope, sampler, metrics, drops)
    spans, logs = _Collect(), _Collect()
    pipeline.span_queues.append(spans)  # pyright: ignore[reportArgumentType]
    pipeline.log_queues.append(logs)  # pyright: ignore[reportArgumentType]
    return pipeline, spans, logs


class Parts:
    """Seconds of thread CPU spent per part of the work."""

    def __init__(self) -> None:
        self.seconds = {"decode": 0.0, "record": 0.0, "otlp": 0.0, "rows": 0.0}

    def timed(self, part: str, call: Callable[[], Any]) -> Any:
        start = time.thread_time()
        result = call()
        self.seconds[part] += time.thread_time() - start
        return result


def replay(batches: Sequence[bytes]) -> tuple[Parts, int, int, int]:
    """One replay: (time per part, calls, log records, spans)."""
    from helmet_otel.store import exporters
    from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
    from helmet_otel.telemetry.recorder import Recorder

    log_row = getattr(exporters, "log_row_from_record", exporters.log_row_from_sdk)
    span_row = getattr(exporters, "span_row_from_record", exporters.span_row_from_sdk)
    # the exporters' whole-batch conversion where there is one (the store's write boundary)
    log_rows = getattr(exporters, "logs_to_batch", None)
    span_rows = getattr(exporters, "spans_to_batch", None)
    parts = Parts()
    decoded = fr.decode(batches[0])
    config = next(f for f in decoded if isinstance(f, fr.Config))
    pipeline, spans, logs = _pipeline(config)
    recorder = Recorder(pipeline, config)
    encoder = OtlpEncoder()
    calls = n_logs = n_spans = 0

    def export(final: bool) -> None:
        nonlocal n_logs, n_spans
        for queue, encode, row, rows in (
            (logs, encoder.logs, log_row, log_rows), (spans, encoder.spans, span_row, span_rows)
        ):  # fmt: skip
            while len(queue.items) >= BATCH_RECORDS or (final and queue.items):
                batch, queue.items = queue.items[:BATCH_RECORDS], queue.items[BATCH_RECORDS:]
                parts.timed("otlp", lambda: encode(batch))  # noqa: B023
                if rows is not None:
                    convert = rows
                    parts.timed("rows", lambda: convert(batch))  # noqa: B023
                else:
                    parts.timed("rows", lambda: [row(item) for item in batch])  # noqa: B023
                if queue is logs:
                    n_logs += len(batch)
                else:
                    n_spans += len(batch)

    def handle(frames: list[fr.Frame]) -> None:
        recorder.gather()  # (as the worker does per read of its pipe)
        for frame in frames:
            recorder.handle(frame)
        recorder.release()

    for data in batches:
        frames = decoded if data is batches[0] else parts.timed("decode", lambda: fr.decode(data))  # noqa: B023
        frames = [f for f in frames if not isinstance(f, fr.Config)]
        calls += sum(
            1 for f in frames if type(f) is fr.Msg and f.summary.kind == "request"
            and f.summary.method == "tools/call"
        )  # fmt: skip
        parts.timed("record", lambda: handle(frames))  # noqa: B023
        export(False)
    if not recorder.closed:
        recorder.close(time.time_ns(), "replay end")
    export(True)
    return parts, calls, n_logs, n_spans


def worker_cpu(batches: Sequence[bytes], rate: float, otlp: bool, idle: float = 0.5) -> float:
    """Seconds of CPU the real worker process (this checkout's) spends on ``batches`` fed at
    ``rate`` calls/s, into a fresh store (and a local OTLP receiver with ``otlp``): its user +
    system time from /proc, from after its start until it is idle again after the last batch."""
    import dataclasses

    import psutil
    from bench_relay import Helper  # pyright: ignore[reportMissingImports]

    first = fr.decode(batches[0])
    config = next(f for f in first if isinstance(f, fr.Config))
    with tempfile.TemporaryDirectory(prefix="helmet-replay-") as tmp:
        options = dataclasses.replace(config.options, store=str(Path(tmp) / "store.db"))
        frames = b"".join(
            fr.pickled(config._replace(options=options) if f is config else f) for f in first
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HELMET_"))}
        env["PYTHONPATH"] = str(ROOT)
        receiver = Helper("--_receiver", "http/protobuf") if otlp else None
        if receiver is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.ask()["endpoint"]
        else:
            env["OTEL_SDK_DISABLED"] = "true"
        argv = [sys.executable, "-m", "helmet_otel.telemetry.worker"]
        # (cwd: ``-m`` puts it first on sys.path, so it decides which checkout runs)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env, cwd=ROOT)
        assert proc.stdin is not None
        worker = psutil.Process(proc.pid)

        def cpu() -> float:
            times = worker.cpu_times()
            return times.user + times.system

        def settle() -> float:
            last, since = cpu(), time.monotonic()
            while time.monotonic() - since < idle:
                time.sleep(0.05)
                now = cpu()
                if now != last:
                    last, since = now, time.monotonic()
            return last

        try:
            proc.stdin.write(fr.batch(frames))
            proc.stdin.flush()
            before = settle()
            began, calls = time.monotonic(), 0
            for data in batches[1:]:
                ahead = began + calls / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                proc.stdin.write(fr.batch(data))
                proc.stdin.flush()
                calls += data.count(b'"method":"tools/call"')
            after = settle()
            proc.stdin.close()
            proc.wait(timeout=60)
        finally:
            if receiver is not None:
                receiver.kill()
    return after - before


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    parser.add_argument("--capture", action="store_true", help="capture even if the file exists")
    parser.add_argument("--calls", type=int, default=3000, help="calls to capture")
    parser.add_argument("--rate", type=float, default=1000.0, help="calls/s while capturing")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one more round")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument(
        "--worker", choices=("store", "otlp"),
        help="instead: the real worker process fed the frames at --rate (store, or store + OTLP "
        "to a local receiver), its CPU per call from /proc, best of --rounds",
    )  # fmt: skip
    args = parser.parse_args()
    if args.capture or not args.frames.exists():
        capture(args.frames, args.calls, args.rate)
    batches = read_batches(args.frames)
    if args.worker:
        calls = sum(data.count(b'"method":"tools/call"') for data in batches[1:])
        runs = [worker_cpu(batches, args.rate, args.worker == "otlp") for _ in range(args.rounds)]
        print(f"{args.frames}: worker ({args.worker}) at {args.rate:,.0f} calls/s, {calls} calls; "
              f"CPU per call, us: " + "  ".join(f"{r / calls * 1e6:.1f}" for r in runs))  # fmt: skip
        return 0
    best: dict[str, float] = {}
    calls = n_logs = n_spans = 0
    for _ in range(args.rounds):
        parts, calls, n_logs, n_spans = replay(batches)
        for part, seconds in parts.seconds.items():
            best[part] = min(best.get(part, seconds), seconds)
    total = sum(best.values())
    print(f"{args.frames}: {len(batches)} batches, {calls} tools/call, {n_logs} log records, "
          f"{n_spans} spans; best of {args.rounds} rounds, us per call:")  # fmt: skip
    for part, seconds in best.items():
        print(f"  {part:7s} {seconds / calls * 1e6:8.1f}")
    print(f"  {'total':7s} {total / calls * 1e6:8.1f}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        replay(batches)
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
