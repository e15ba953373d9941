"""The telemetry worker process: ``python -m helmet_otel.telemetry.worker``.

Reads frame batches from stdin (see `frames`), owns the OpenTelemetry SDK, and flushes within
a bounded time when stdin closes. It never writes to stdout. The first frame is the `Config`;
the rest go to the `Recorder`, one at a time. If the proxy dies without saying goodbye, stdin
reaches EOF and every session still open is ended as lost (`semconv.LOST_EXIT_REASON`).
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from helmet_otel import memtrace
from helmet_otel import semconv as sc
from helmet_otel.config import ProxyOptions
from helmet_otel.redaction import scrub_line
from helmet_otel.telemetry.cutoff import Cutoff
from helmet_otel.telemetry.frames import BatchReader, Config, Frame

if TYPE_CHECKING:
    from helmet_otel.telemetry.pipeline import Pipeline
    from helmet_otel.telemetry.recorder import Recorder

WORKER_ERROR = "worker_error"  # helmet.telemetry.dropped reason: a frame the recorder failed on


def read_frames(reader: BatchReader) -> list[Frame] | None:
    """The frames of the whole batches the pipe holds now; None at its end (or when what came
    cannot be read: the relay and the worker no longer agree, so it is the end)."""
    try:
        return reader.read()
    except Exception:
        return None


def first_frames(reader: BatchReader) -> list[Frame] | None:
    """Blocks until the first whole batch (the `Config` is in it) or the end."""
    while True:
        frames = read_frames(reader)
        if frames is None or frames:
            return frames


def _yield_the_cpu(options: ProxyOptions) -> None:
    """Under CPU contention the MCP traffic wins: a worker that falls behind sheds records
    (counted) instead of taking CPU from the client, the relay and the server. SCHED_IDLE
    (Linux) also lets any of them preempt the worker the moment it wakes, which nice alone
    does not. Threads started afterwards inherit both."""
    try:
        os.nice(options.worker_niceness)
    except OSError:
        pass
    if options.worker_sched == "idle" and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass


# Collections of the youngest generation come after this many allocations (CPython's default
# is 700): the worker allocates a few hundred objects per call, nearly all freed by reference
# counting, and each collection also walks what sits in the sink queues. The older generations
# follow the same way, less often.
GC_THRESHOLDS = (20_000, 20, 20)


def _tune_gc() -> None:
    """What the worker has built by now (the modules, the SDK, the pipeline) lives as long as
    it does: `gc.freeze` keeps the collector from walking it again; and the collector runs
    less often (`GC_THRESHOLDS`). Together about 15 us less CPU per call at 2,000 calls/s."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main() -> int:
    # The proxy decides when we stop: a Ctrl-C, or the hangup an orphaned process group gets
    # when the proxy is gone, must not cut the last flush short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    memtrace.start_from_env("worker", os.environ)  # a diagnostic; off unless asked
    reader = BatchReader(0)
    first = first_frames(reader)
    config = next((f for f in first or () if isinstance(f, Config)), None)
    if first is None or config is None:
        return 2
    options = config.options
    _yield_the_cpu(options)  # before any thread starts: the pipeline's exporters start theirs

    from helmet_otel.telemetry.pipeline import build_pipeline
    from helmet_otel.telemetry.recorder import Recorder

    try:
        pipeline = build_pipeline(config, os.environ)
        recorder = Recorder(pipeline, config)
    except Exception as exc:  # a bad OTEL_* setting must not take the proxy down
        sys.stderr.write(
            f"helmet-otel: telemetry is off: {type(exc).__name__}: {scrub_line(str(exc))}\n"
        )
        sys.stderr.flush()
        return 1
    _tune_gc()
    # The main thread reads the pipe itself when it is readable (a reader thread cost a
    # hand-off and a wake-up per batch). When the worker falls behind, the pipe fills and the
    # relay drops (and counts).
    poller = select.poll()
    poller.register(0, select.POLLIN)
    interval = options.metrics_interval
    next_tick = time.monotonic() + interval
    pending = [f for f in first if f is not config]
    errors = _Errors(pipeline)
    # (the relay says when it closes: from then on the flush timeout bounds the recording)
    cutoff = Cutoff(options.flush_timeout, lambda why, n: pipeline.drops.add(why, n, quiet=True))
    cutoff.install()
    try:
        while True:
            recorder.gather()  # (what one read makes goes to each queue at once)
            try:
                for frame in cutoff.sift(pending):
                    try:
                        recorder.handle(frame)
                    except Exception as exc:  # one bad frame must not end telemetry
                        errors.add(exc)
            finally:
                recorder.release()
            pending = []
            stderr_due = recorder.stderr_due()
            now = time.monotonic()
            if now >= next_tick:
                for periodic in (recorder.performance, pipeline.tick_metrics):
                    try:
                        periodic()
                    except Exception as exc:
                        errors.add(exc)
                next_tick = now + interval
            wait = next_tick - time.monotonic()
            if stderr_due is not None:
                wait = min(wait, (stderr_due - time.time_ns()) / 1e9 + 0.001)
            if not poller.poll(max(wait, 0.0) * 1000):
                # Idle: what the relay had has been read, so stderr lines nothing joined within
                # the gap become their record now.
                try:
                    recorder.flush_stderr(time.time_ns())
                except Exception as exc:
                    errors.add(exc)
                continue
            batch = read_frames(reader)
            if batch is None:
                break
            pending = batch
    finally:
        if not recorder.closed:
            try:
                recorder.close(time.time_ns(), sc.LOST_EXIT_REASON)
            except Exception as exc:
                errors.add(exc)
        _shut_down(pipeline, recorder, options.flush_timeout)
    return 0


class _Errors:
    """What the recorder failed on: counted in helmet.telemetry.dropped, told once."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._drops = pipeline.drops
        self._reported = False

    def add(self, exc: Exception) -> None:
        self._drops.add(WORKER_ERROR, quiet=True)
        if self._reported:
            return
        self._reported = True
        message = scrub_line(" ".join(str(exc).split()))  # one line, scrubbed
        sys.stderr.write(
            f"helmet-otel: telemetry worker error ({WORKER_ERROR}; counted in "
            f"helmet.telemetry.dropped, the rest is recorded): {type(exc).__name__}: {message}\n"
        )
        sys.stderr.flush()


def _shut_down(pipeline: Pipeline, recorder: Recorder, timeout: float) -> None:
    """Drain every sink and write the proxy's last records, never for longer than
    ``timeout`` seconds; a collector that fails or hangs is given up sooner
    (`pipeline.REMOTE_STALL_S`).

    ``helmet.proxy_close`` goes to the collectors before their drain (with the counts known
    then; the last ``helmet.telemetry.dropped`` export has the rest) and straight to the store
    after every drain, with every count; what was dropped in all is said once on stderr."""
    done = threading.Event()
    said = threading.Event()  # the counts are final (and in the store, when it took them)

    def run() -> None:
        try:
            start = time.monotonic()
            deadline = start + timeout * 0.8
            with pipeline.only(local=False):
                recorder.proxy_close()
            healthy = pipeline.drain_remote(deadline)
            pipeline.drain_local(deadline, timeout * 0.1)
            with pipeline.straight_to_store():
                recorder.proxy_close()
            said.set()
            _summary(recorder.final_drops())
            pipeline.shutdown_metrics(start + timeout - time.monotonic(), healthy)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(timeout + 0.5):
        # (the drains count what they leave by their deadline: what hangs now is the store's
        # last write or its close, so the counts reach only stderr)
        sys.stderr.write("helmet-otel: telemetry flush timed out; the store may lack the last "
                         "records and helmet.proxy_close\n")  # fmt: skip
        if not said.is_set():
            _summary(recorder.final_drops())
        sys.stderr.flush()
        os._exit(0)


def _summary(dropped: dict[str, int]) -> None:
    """One stderr line at the end when telemetry lost anything (nothing when it did not)."""
    total = sum(dropped.values())
    if not total:
        return
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()) if n)
    sys.stderr.write(
        f"helmet-otel: telemetry dropped {total} records in all ({reasons}); "
        "see helmet.telemetry.dropped and helmet.proxy_close\n"
    )
    sys.stderr.flush()


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # Every sink is drained or given up by now: an export thread that an unanswering collector
    # holds must not hold up the exit (the interpreter's finalisation waits on such threads).
    os._exit(status)
