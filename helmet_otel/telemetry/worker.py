"""The telemetry worker process: ``python -m helmet_otel.telemetry.worker``.

Reads frame batches from stdin (see `frames`), owns the OpenTelemetry SDK, and flushes within
a bounded time when stdin closes. It never writes to stdout. If the proxy dies without saying
goodbye, stdin reaches EOF and the session is closed as "proxy terminated".
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from helmet_otel import semconv as sc
from helmet_otel.telemetry import frames as fr
from helmet_otel.telemetry.frames import Frame, read_batch

FLUSH_TIMEOUT = float(os.environ.get("HELMET_FLUSH_TIMEOUT", "5"))
WORKER_NICENESS = int(os.environ.get("HELMET_WORKER_NICENESS", "19"))
WORKER_SCHED = os.environ.get("HELMET_WORKER_SCHED", "idle")  # or "normal": nice only
_EOF = None


def _reader(stream: Any, batches: queue.Queue[list[Frame] | None]) -> None:
    try:
        while True:
            batch = read_batch(stream)
            batches.put(batch)
            if batch is None:
                return
    except Exception:
        batches.put(_EOF)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the proxy decides when we stop
    # Under CPU contention the MCP traffic wins: a worker that falls behind sheds records
    # (counted) instead of taking CPU from the client, the relay and the server. SCHED_IDLE
    # (Linux; the threads started below inherit it) also lets any of them preempt the worker
    # the moment it wakes, which nice alone does not.
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    if WORKER_SCHED == "idle" and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
    stdin = os.fdopen(0, "rb", buffering=1 << 20)
    # Bounded: when the worker falls behind, the pipe fills and the relay drops (and counts).
    batches: queue.Queue[list[Frame] | None] = queue.Queue(maxsize=4)
    first = read_batch(stdin)
    if not first or not isinstance(first[0], fr.Config):
        return 2
    from dataclasses import asdict

    head = first[0]
    config: dict[str, Any] = {**asdict(head.options), "service_name": head.service_name,
                              "proxy_pid": head.proxy_pid, "proxy_host": head.proxy_host,
                              "transport": head.transport}  # fmt: skip

    from helmet_otel.telemetry.pipeline import build_pipeline
    from helmet_otel.telemetry.recorder import Recorder

    try:
        pipeline = build_pipeline(config, os.environ)
        recorder = Recorder(pipeline, config)
    except Exception as exc:  # a bad OTEL_* setting must not take the proxy down
        sys.stderr.write(f"helmet-otel: telemetry is off: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        return 1
    thread = threading.Thread(target=_reader, args=(stdin, batches), daemon=True)
    thread.start()
    interval = float(config.get("metrics_interval") or 60.0)
    next_tick = time.monotonic() + interval
    pending: list[Frame] = list(first[1:])
    try:
        while True:
            for frame in pending:
                recorder.handle(_legacy(frame))
            pending = []
            now = time.monotonic()
            if now >= next_tick:
                recorder.performance()
                next_tick = now + interval
            try:
                batch = batches.get(timeout=max(next_tick - time.monotonic(), 0.0))
            except queue.Empty:
                continue
            if batch is None:
                break
            pending = batch
    finally:
        if not recorder.closed:
            recorder.close(time.time_ns(), {"reason": sc.LOST_EXIT_REASON})
        _flush(pipeline)
    return 0


def _legacy(frame: Frame) -> tuple[Any, ...]:  # (interim: the recorder's old tuples)
    match frame:
        case fr.Msg():
            return ("msg", frame.ts, frame.s2c, frame.size, frame.body, tuple(frame.summary)[:10],
                    frame.trace_id, frame.server_span_id, frame.client_span_id, frame.weight,
                    frame.parsed)  # fmt: skip
        case fr.Start():
            return ("start", frame.ts, {"session_id": frame.session_id,
                    "transport": frame.transport, "trace_id": frame.trace_id,
                    "root_span_id": frame.root_span_id, **frame.upstream})  # fmt: skip
        case fr.Info():
            return ("info", {"era": frame.era, "protocol_version": frame.protocol_version,
                    "client_info": frame.client_info, "server_info": frame.server_info})  # fmt: skip
        case fr.End():
            return ("end", frame.ts, {"exit_status": frame.exit_status,
                    "exit_reason": frame.exit_reason, "requests": frame.requests,
                    "errors": frame.errors, "method_counts": frame.method_counts,
                    "era": frame.era, "protocol_version": frame.protocol_version,
                    "client_info": frame.client_info, "server_info": frame.server_info})  # fmt: skip
        case fr.Segment():
            return ("segment", frame.ts, frame.trace_id, frame.root_span_id)
        case fr.Stderr():
            return ("stderr", frame.ts, frame.line)
        case fr.Failed():
            return ("failed", frame.ts, frame.reason)
        case fr.Dropped():
            return ("dropped", frame.reason, frame.records)
        case fr.Close():
            return ("close", frame.ts, {"reason": frame.reason})
        case fr.Config():
            return ("config",)


def _flush(pipeline: Any) -> None:
    """Flush every provider, but never for longer than FLUSH_TIMEOUT."""
    done = threading.Event()

    def run() -> None:
        try:
            pipeline.flush_and_shutdown(FLUSH_TIMEOUT)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(FLUSH_TIMEOUT + 0.5):
        sys.stderr.write("helmet-otel: telemetry flush timed out; some records were not exported\n")
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
