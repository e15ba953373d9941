"""The relay side of telemetry: cheap, non-blocking, no OpenTelemetry SDK.

`TelemetryFeed` is an interceptor. On the relay's loop it only assigns trace and span ids,
writes trace context into forwarded requests, and appends each message's bytes behind a small
binary header to a batch (see `frames`); the worker parses them again. A timer hands the batch
to the worker process through a non-blocking pipe.

Telemetry sheds whole calls, never parts of one: a request is traced or not, and its response
follows it. It sheds (and counts) new calls while the worker's pipe and our buffer are full,
and, while the relay's own loop is busy, all but one call in `_every` (see `_govern`), so at
saturation the traffic keeps the relay's CPU.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any, cast

from helmet_otel.config import ProxyOptions
from helmet_otel.core.envelope import Direction, Envelope
from helmet_otel.core.interceptor import BaseInterceptor
from helmet_otel.core.session import Session
from helmet_otel.protocol.message import Kind
from helmet_otel.protocol.splice import with_meta_entry
from helmet_otel.telemetry.frames import (
    BATCH,
    FLAG_REPLIED,
    WHOLE,
    Close,
    Config,
    End,
    Failed,
    Frame,
    Info,
    Msg,
    Segment,
    Start,
    Stderr,
    pickled,
    summarize,
)

FLUSH_DELAY = 0.005  # seconds a record may wait in the relay before it is handed over
BUSY_FLUSH_DELAY = 0.05  # the same while the governor sheds
BUFFER_LIMIT = int(os.environ.get("HELMET_TELEMETRY_BUFFER", str(4 * 1024 * 1024)))
FLUSH_TIMEOUT = float(os.environ.get("HELMET_FLUSH_TIMEOUT", "5"))
PROPAGATE_MAX_BYTES = 1024 * 1024  # larger requests are forwarded without trace context
PIPE_SIZE = 1024 * 1024
# The governor: every GOVERN_WINDOW seconds, a relay whose loop wanted a CPU (ran, or waited
# for one) more than BUSY_LIMIT of the time traces one call in MAX_EVERY at once, and keeps
# at most BUSY_BUFFER for the worker; one under BUSY_LIMIT - 0.1 traces twice as many as before.
# Backing off at once keeps a backlog for the worker from building up at saturation, when the
# worker's CPU would be taken from the traffic.
GOVERN_WINDOW = 0.05
# ...and only while calls pass faster than this: below it telemetry's share of the relay's CPU
# is small, and a busy start-up or a loaded machine must not cost the first calls their records.
GOVERN_MIN_RATE = 2000.0
BUSY_LIMIT = float(os.environ.get("HELMET_RELAY_BUSY_LIMIT", "0.85"))
MAX_EVERY = 64
BUSY_BUFFER = BUFFER_LIMIT // 8
_SPAN_MASK = (1 << 64) - 1
SESSION = 1  # the key of this feed's one session in the frames
_getrandbits = random.getrandbits
_pack_whole = WHOLE.pack

# Enum members are slow to look up on their class in Python 3.11 (the enum metaclass has a
# ``__getattr__``); the per-message hooks compare against these module constants instead.
_REQUEST = Kind.REQUEST
_RESPONSE = Kind.RESPONSE
_ERROR = Kind.ERROR
_BLANK = Kind.BLANK
_DIRECTION_C2S = Direction.C2S
_CANCELLED = "notifications/cancelled"


def cpu_demand() -> float:
    """Seconds the calling thread has run, plus (where Linux says) waited to run.

    On a machine whose CPUs are all taken (the client, the server, the telemetry worker, a local
    collector) the relay's loop may run only part of the time yet be the bottleneck: the time it
    waits in the run queue counts as busy too."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            ran, waited = stat.read().split()[:2]
        return (int(ran) + int(waited)) / 1e9
    except (OSError, ValueError):
        return time.thread_time()


def _sampled_by_env(env: Mapping[str, str]) -> bool:
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    return sampler not in ("always_off", "parentbased_always_off")


class TelemetryFeed(BaseInterceptor):
    def __init__(self, options: ProxyOptions, env: Mapping[str, str], *, service_name: str) -> None:
        self.options = options
        self.service_name = service_name
        self._propagate = options.propagate
        self._sampled = _sampled_by_env(env)
        # The worker applies --capture; it still needs small bodies (log levels, cancellations).
        self._body_cap = max(options.max_body, 4096) + 1024
        self._session: Session | None = None
        self._revision = 0
        self._pending = bytearray()  # records of the batch being gathered
        self._out = bytearray()  # batches not yet taken by the worker's pipe
        self._shed_full = 0  # messages shed since the last batch: the worker was behind
        self._shed_busy = 0  # ... the governor shed them
        self._dropped_reported = False
        self._every = 1  # trace one call (or notification) in this many
        self._limit = BUFFER_LIMIT  # bytes waiting for the worker before new calls are shed
        self._tick = 0  # calls and notifications seen (and decided on)
        self._tick_mark = 0
        self._demand_mark = cpu_demand()
        self._wall_mark = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._writer_armed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.trace_id = random.getrandbits(128) or 1
        self.root_span_id = random.getrandbits(64) or 1
        self._segment_requests = 0
        self._segment = 0
        # our traceparent, JSON-encoded, is head + client span id + tail; the head follows
        # the trace id
        self._tp_trace = -1
        self._tp_head = b""  # '"00-<trace id>-' of the current trace
        self._tp_tail = b'-01"' if self._sampled else b'-00"'
        self._worker = self._spawn_worker(env)
        self._fd = self._worker.stdin.fileno() if self._worker.stdin else -1
        self._pending += pickled(self._config())

    # -- the worker process -----------------------------------------------------------------
    def _spawn_worker(self, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [sys.executable, "-m", "helmet_otel.telemetry.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=dict(env),
            process_group=0,  # a terminal's Ctrl-C must not kill it before it flushed
        )
        assert worker.stdin is not None
        fd = worker.stdin.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except (OSError, AttributeError):
            pass
        os.set_blocking(fd, False)
        return worker

    def _config(self) -> Config:
        return Config(self.options, self.service_name, os.getpid(), socket.gethostname(), "stdio")

    # -- interceptor hooks (on the relay's loop) --------------------------------------------
    def before_forward(self, env: Envelope) -> None:
        msg = env.msg
        if msg.kind is not _REQUEST or self._shed():  # a shed call gets no ids, no splice
            return
        env.trace_id = self.trace_id
        bits = _getrandbits(128)  # both span ids from one draw
        env.server_span_id = (bits & _SPAN_MASK) or 1
        env.client_span_id = (bits >> 64) or 1
        if env.direction is not _DIRECTION_C2S:
            return
        self._segment_requests += 1
        if self._segment_requests > self.options.trace_max_requests:
            self._roll_over()
            env.trace_id = self.trace_id
            # Handed over in after_forward, right before this message: frames stay in order.
            env.annotations["segment"] = (self.trace_id, self.root_span_id)
        # (The client's own traceparent, which becomes a span link, the worker reads from the
        # message.)
        payload = msg.payload
        if self._propagate and payload is not None and len(env.raw) <= PROPAGATE_MAX_BYTES:
            self._inject(env, payload)

    def _full(self) -> bool:
        """The worker is behind: its pipe and our buffer are full."""
        return len(self._out) + len(self._pending) >= self._limit

    def _shed(self) -> bool:
        """Whether telemetry sheds the call (or notification) that starts now; counted.

        While the governor sheds, this runs for nearly every message at the relay's busiest:
        it is written out for speed."""
        self._tick = tick = self._tick + 1
        every = self._every
        if every > 1 and tick % every:
            self._shed_busy += 1
        elif len(self._out) + len(self._pending) >= self._limit:
            self._shed_full += 1
        else:
            return False
        if self._timer is None:
            self._arm_for_drops()
        return True

    def _roll_over(self) -> None:
        self._segment += 1
        self._segment_requests = 1
        self.trace_id = random.getrandbits(128) or 1
        self.root_span_id = random.getrandbits(64) or 1

    def _inject(self, env: Envelope, payload: dict[str, Any]) -> None:
        """Write our traceparent into ``params._meta`` (made when absent or null) by splicing
        it into the sender's bytes; when that cannot be done exactly, forward them untouched."""
        trace_id = env.trace_id
        if trace_id != self._tp_trace:
            self._tp_trace = trace_id
            self._tp_head = b'"00-%032x-' % trace_id
        encoded = self._tp_head + b"%016x" % env.client_span_id + self._tp_tail
        wire = with_meta_entry(env.raw, payload, "traceparent", encoded)
        if wire is not None:
            env.wire = wire

    def after_forward(self, env: Envelope) -> None:
        msg = env.msg
        kind = msg.kind
        weight = self._every  # how many calls a traced one stands for
        if kind is _REQUEST:
            if not env.server_span_id:  # shed in before_forward
                return
        elif kind is _RESPONSE or kind is _ERROR:
            request = env.request
            if request is None:  # an answer to no request we know: on its own
                if self._shed():
                    return
            elif not request.span_id:  # its request was shed
                if weight > 1:
                    self._shed_busy += 1
                else:
                    self._shed_full += 1
                if self._timer is None:
                    self._arm_for_drops()
                return
            # else its request was traced: the response goes too, whatever the buffer holds
            # (it is bounded by the traced requests in flight)
        elif kind is _BLANK:
            return
        elif msg.method == _CANCELLED:  # always goes, standing for itself: the request it
            weight = 1  # cancels may be traced, and must not end as unanswered
        elif self._shed():
            return
        # What the session learned travels before the next record that is handed over (a
        # shed message needs none of it, and is done with sooner).
        session = self._session
        if session is not None and session.revision != self._revision:
            self._revision = session.revision
            self._append(self._session_info(session))
        annotations = env.annotations
        if annotations:
            segment = annotations.get("segment")
            if isinstance(segment, tuple):
                trace_id, root_span_id = cast(tuple[int, int], segment)
                self._append(Segment(SESSION, env.ts, trace_id, root_span_id))
        raw = env.raw
        size = len(raw)
        s2c = env.direction is not _DIRECTION_C2S
        if size > self._body_cap:  # only its head goes over, with the facts the worker needs
            summary = summarize(msg, not s2c, env.reply is not None)
            frame = Msg(
                SESSION, env.ts, int(s2c), size, raw[: self._body_cap], summary,
                env.trace_id, env.server_span_id, env.client_span_id, weight, None,
            )  # fmt: skip
            self._append(frame)
            return
        trace_id = env.trace_id
        pending = self._pending
        pending += _pack_whole(
            b"M", s2c | (FLAG_REPLIED if env.reply is not None else 0), weight, SESSION,
            env.ts, size, trace_id >> 64, trace_id & _SPAN_MASK, env.server_span_id,
            env.client_span_id,
        )  # fmt: skip
        pending += raw
        if self._timer is None:  # the rest of `_append`
            self._arm()

    def _start(self, session: Session, upstream: dict[str, object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = session
        self._append(
            Start(
                SESSION, session.started_ns, session.id, session.transport, self.trace_id,
                self.root_span_id, dict(upstream),
            )
        )  # fmt: skip

    @staticmethod
    def _session_info(session: Session) -> Info:
        return Info(
            SESSION, session.era, session.protocol_version, session.client_info,
            session.server_info, None,
        )  # fmt: skip

    def session_started(self, session: Session, upstream: dict[str, object]) -> None:
        self._start(session, upstream)

    def upstream_stderr(self, session: Session, line: bytes, ts: int) -> None:
        if self._full():  # the governor spares them: they are few, and they explain crashes
            self._shed_full += 1
            if self._timer is None:
                self._arm_for_drops()
        else:
            self._append(Stderr(SESSION, ts, line[:8192]))

    def upstream_failed(self, session: Session, reason: str) -> None:
        self._start(session, {})
        self._append(Failed(SESSION, time.time_ns(), reason))

    def session_ended(self, session: Session) -> None:
        self._append(
            End(
                SESSION, session.ended_ns or time.time_ns(), session.exit_status,
                session.exit_reason, session.requests, session.errors,
                dict(session.method_counts), session.era, session.protocol_version,
                session.client_info, session.server_info,
            )
        )  # fmt: skip

    # -- batching and hand-over -------------------------------------------------------------
    def _append(self, frame: Frame) -> None:
        self._pending += pickled(frame)
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        if self._loop is not None and not self._closed:
            # while the governor sheds, fewer, larger hand-overs: fewer syscalls and wake-ups
            delay = FLUSH_DELAY if self._every == 1 else BUSY_FLUSH_DELAY
            self._timer = self._loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        """Hand the batch over. New calls are shed while the buffer is full, so what is left
        (responses to traced calls, session events) always goes, and the buffer stays bounded."""
        self._timer = None
        now = time.monotonic()
        if now - self._wall_mark >= GOVERN_WINDOW:
            self._govern(now)
        pending = self._pending
        if not pending and not self._shed_full and not self._shed_busy:
            return
        self._pending = bytearray()
        self._out += BATCH.pack(len(pending), self._shed_full, self._shed_busy)
        self._out += pending
        self._shed_full = self._shed_busy = 0
        self._write()

    def _govern(self, now: float) -> None:
        """Trace fewer calls while the relay's loop is busy, more again when it is not."""
        demand = cpu_demand()
        elapsed = now - self._wall_mark
        busy = (demand - self._demand_mark) / elapsed
        rate = (self._tick - self._tick_mark) / elapsed
        self._demand_mark = demand
        self._wall_mark = now
        self._tick_mark = self._tick
        if busy > BUSY_LIMIT and rate >= GOVERN_MIN_RATE:
            self._every = MAX_EVERY
        elif busy < BUSY_LIMIT - 0.1:
            self._every = max(self._every // 2, 1)
        self._limit = BUFFER_LIMIT if self._every == 1 else BUSY_BUFFER

    def _arm_for_drops(self) -> None:
        """The counts travel with the next batch; the first time, tell the user."""
        self._arm()
        if not self._dropped_reported:
            self._dropped_reported = True
            os.write(
                2,
                b"helmet-otel: telemetry is shedding records to keep up with the traffic "
                b"(counted in helmet.telemetry.dropped). MCP traffic is not affected.\n",
            )

    def _write(self) -> None:
        while self._out:
            try:
                written = os.write(self._fd, self._out)
            except BlockingIOError:
                break
            except OSError as exc:  # the worker is gone: nothing more can be handed over
                if exc.errno in (errno.EPIPE, errno.EBADF):
                    self._out.clear()
                    self._closed = True
                    return
                raise
            del self._out[:written]
        if self._out and not self._writer_armed and self._loop is not None:
            self._writer_armed = True
            self._loop.add_writer(self._fd, self._on_writable)
        elif not self._out and self._writer_armed and self._loop is not None:
            self._writer_armed = False
            self._loop.remove_writer(self._fd)

    def _on_writable(self) -> None:
        self._write()

    # -- shutdown ---------------------------------------------------------------------------
    async def close(self, reason: str = "session ended") -> None:
        """Hand over what is left, tell the worker to finish, wait for it (bounded)."""
        import anyio

        self._append(Close(time.time_ns(), reason))
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        self._closed = True
        with anyio.move_on_after(FLUSH_TIMEOUT):
            while self._out:
                await anyio.sleep(0.005)
        if self._writer_armed and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._writer_armed = False
        if self._worker.stdin is not None:
            try:
                self._worker.stdin.close()
            except OSError:
                pass
        with anyio.move_on_after(FLUSH_TIMEOUT + 1.0):
            while self._worker.poll() is None:
                await anyio.sleep(0.01)

    def kill(self) -> None:
        """Last resort after `close`: the worker overstayed its flush deadline."""
        if self._worker.poll() is None:
            self._worker.kill()
            self._worker.wait()
