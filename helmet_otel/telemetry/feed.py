"""The relay side of telemetry: cheap, non-blocking, no OpenTelemetry SDK.

`TelemetryFeed` is the process-wide part (one worker process, one batch, one governor, however
many sessions the process carries); each session's interceptor is a `SessionFeed`. On the relay's
loop they only assign trace and span ids, write trace context into forwarded requests, and append
each message's bytes behind a small binary header, keyed by session, to the batch (see
`frames`); the worker parses them again. A timer hands the batch to the worker process through
a non-blocking pipe.

Telemetry sheds whole calls, never parts of one: a request is traced or not, and its response
follows it. It sheds (and counts) new calls while the worker's pipe and our buffer are full,
and, while the relay's own loop is busy, all but one call in `every` (see `governor`), so at
saturation the traffic keeps the relay's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections import deque
from collections.abc import Mapping

from helmet_otel.config import ProxyOptions
from helmet_otel.core.session import Session
from helmet_otel.core.verdicts import Finding
from helmet_otel.telemetry.backlog import Backlog
from helmet_otel.telemetry.cutoff import CLOSING_SIGNAL, SHUTDOWN_TIMEOUT, compete_for_the_cpu
from helmet_otel.telemetry.frames import (
    BATCH,
    PROCESS,
    Close,
    Config,
    Dropped,
    Frame,
    Msg,
    Security,
    decode,
    pickled,
)
from helmet_otel.telemetry.governor import Governor
from helmet_otel.telemetry.session_feed import SessionFeed

# Seconds a record may wait in the relay before it is handed over. Each hand-over is a write and
# a wake-up of the worker, which then reads, decodes and records the batch: at 2,000 calls/s
# every 160 calls (at 0.05 s, every 100, the worker's main thread cost 2.1 us more per call; at
# 0.02 s, every 40, 2.5 us more again: more wake-ups, each read's work on colder caches).
# `logs --follow` shows a record within 0.4 s all the same.
FLUSH_DELAY = 0.08
# While messages pass, the first one past the delay hands the batch over (`flush_due`); the
# timer, this many seconds after the first record, only hands over what a quiet spell leaves: a
# timer that expires wakes the relay's loop, a cost of its own that is larger than the hand-over.
QUIET_FLUSH_DELAY = 0.1
PIPE_SIZE = 1024 * 1024
# A batch this large is handed over at once, whatever its age: a burst's batch stays well within
# what the worker's pipe holds (what a lost worker had not read is counted batch by batch).
HANDOVER_BYTES = PIPE_SIZE // 8
_NEVER = 1 << 62  # `flush_due` while the hand-over is already scheduled


WORKER_LOST = "worker_lost"  # helmet.telemetry.dropped reason: records a dead worker never took
CUT_GRACE_S = 0.2  # how long the count of what the flush deadline cut off may take to go over
MAX_WORKER_RESTARTS = 3  # a worker that keeps dying is not started a fourth time
_F_GETPIPE_SZ = 1032


def _say(line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, line.encode())


class WorkerUnavailable(Exception):
    """The telemetry worker process could not be started (e.g. EAGAIN under a process limit)."""


def _sampled_by_env(env: Mapping[str, str]) -> bool:
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    return sampler not in ("always_off", "parentbased_always_off")


class TelemetryFeed:
    """The process-wide side: the worker process, the batch and its hand-over, the governor.

    One per proxy process, whatever the number of sessions; `for_session` makes each session's
    interceptor (`SessionFeed`), which holds that session's trace and key."""

    def __init__(
        self, options: ProxyOptions, env: Mapping[str, str], *, service_name: str,
        transport: str = "stdio",
    ) -> None:  # fmt: skip
        self.options = options
        self.service_name = service_name
        self.sampled = _sampled_by_env(env)
        # The worker applies --capture; it still needs small bodies (log levels, cancellations).
        self.body_cap = max(options.max_body, 4096) + 1024
        self._buffer_limit = options.telemetry_buffer
        self._sessions = 0  # keys handed out
        self.batch = bytearray()  # records of the batch being gathered
        self.backlog = Backlog()  # batches not yet taken by the worker's pipe
        self._shed_full = 0  # messages shed since the last batch: the worker was behind
        self._shed_busy = 0  # ... the governor shed them
        self.lost_weight = 0  # what the last call shed at a full buffer stood for
        # Decisions and findings are never shed; past twice the buffer (a worker that is
        # gone or hopelessly behind) they cannot be kept either, and are counted apart.
        self._security_lost = 0
        self._dropped_reported = False
        self._every = 1  # trace one call (or notification) in this many (`every`)
        self._limit = self._buffer_limit  # bytes waiting for the worker before calls are shed
        # `_limit` while every call is traced (a session's feed then decides on a call with
        # one comparison, `SessionFeed.before_forward`), else -1: every call goes through
        # `shed` (the governor samples, or telemetry is off)
        self.open_limit = self._limit
        self.tick = 0  # calls and notifications seen (and decided on; the governor's rate)
        self._governor = Governor(options.relay_busy_limit)
        self.timer: asyncio.Handle | None = None  # the hand-over that is scheduled
        self.flush_due = 0  # time_ns at which the batch being gathered is handed over
        self.handover_bytes = HANDOVER_BYTES  # or once it is this large
        self._writer_armed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._env = dict(env)
        self._config = Config(options, service_name, os.getpid(), socket.gethostname(), transport)
        self.live: dict[int, SessionFeed] = {}  # sessions started and not ended, by key
        # What a dead worker could not take: records counted as they are batched, and where
        # each hand-over ends in the byte stream written to the worker (`_lost_with`).
        self.records = 0  # records batched since the worker started
        # (stream offset, records) per batch: the records counted with the relay_queue_full
        # counts in the batches' headers (`_carried`), which are lost with a batch never read
        self._handed: deque[tuple[int, int]] = deque()
        self._carried = 0
        self._queued_bytes = 0  # bytes put into `backlog` since the worker started
        self._written = 0  # ... and written into its pipe
        self._pipe_capacity = PIPE_SIZE
        self.restarts = 0
        self.lost = 0  # records lost with dead workers (and after telemetry went off)
        self._off = False  # no worker: it died and could not be replaced
        self._pidfd = -1
        self._left_alone = False  # a signal cut `close` short: the worker finishes alone
        self._unhanded = 0  # records the worker's pipe never took while the proxy closed
        self._cut = 0  # messages cut off at the flush deadline: their count went instead
        self._worker = self._spawn_worker(self._env)
        self._fd = self._worker.stdin.fileno() if self._worker.stdin else -1
        self.batch += pickled(self._config)

    def for_session(self, session: Session) -> SessionFeed:
        self._sessions += 1
        return SessionFeed(self, session, self._sessions)

    # -- the worker process -----------------------------------------------------------------
    def _spawn_worker(self, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        # The worker starts with `CLOSING_SIGNAL` blocked, so one sent before it can take it
        # (a worker starved while it starts up) waits for it instead of being ignored.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {CLOSING_SIGNAL})
        try:
            worker = subprocess.Popen(
                [sys.executable, "-m", "helmet_otel.telemetry.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=dict(env),
                process_group=0,  # a terminal's Ctrl-C must not kill it before it flushed
            )
        except OSError as exc:
            raise WorkerUnavailable(exc.strerror or str(exc)) from exc
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        assert worker.stdin is not None
        fd = worker.stdin.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            self._pipe_capacity = fcntl.fcntl(fd, _F_GETPIPE_SZ)
        except (OSError, AttributeError):
            pass
        os.set_blocking(fd, False)
        return worker

    def _watch(self) -> None:
        """Learn of the worker's death the moment it happens (a pidfd turns readable), not
        at the next write; without pidfds, the write's EPIPE tells."""
        pid = getattr(self._worker, "pid", None)
        if self._loop is None or self._pidfd >= 0 or not isinstance(pid, int):
            return
        try:
            self._pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            return
        self._loop.add_reader(self._pidfd, self._worker_died)

    def _unwatch(self) -> None:
        if self._pidfd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _worker_died(self) -> None:
        """The worker is gone while the proxy runs: reap it, count what it never took, say so
        once, and carry on with a new worker that is told the sessions in progress."""
        if self._closed or self._off:
            return
        self._unwatch()
        if self._writer_armed and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._writer_armed = False
        worker = self._worker
        status = worker.wait()  # it is dead: this reaps it at once
        lost = self._lost_with()
        self.lost += lost
        if worker.stdin is not None:
            with contextlib.suppress(OSError):
                worker.stdin.close()
        how = f"signal {-status}" if status < 0 else f"status {status}"
        if self.restarts >= MAX_WORKER_RESTARTS:
            self._turn_off(f"the telemetry worker died again ({how})", lost)
            return
        self.restarts += 1
        try:
            self._worker = self._spawn_worker(self._env)
        except WorkerUnavailable as exc:
            self._turn_off(f"the telemetry worker died ({how}) and no new one starts ({exc})", lost)
            return
        _say(
            f"helmet-otel: the telemetry worker died ({how}); {lost} records it had not taken "
            f"are lost (counted in helmet.telemetry.dropped as {WORKER_LOST}); a new worker "
            "records the rest. MCP traffic is not affected.\n"
        )
        self._fd = self._worker.stdin.fileno() if self._worker.stdin else -1
        self._restart_stream(lost)
        self._watch()

    def _lost_with(self) -> int:
        """Records handed to the worker that it never read (still in its pipe, or in `backlog`)."""
        unread = len(self.backlog)
        if self._fd >= 0:
            unread += _pipe_unread(self._fd)
        read_records = self._records_through(self._queued_bytes - unread)
        flushed = self._handed[-1][1] if self._handed else 0
        return max(flushed - read_records, 0)

    def _records_through(self, offset: int) -> int:
        """Records (and relay_queue_full counts) of the batches that end at or before
        ``offset`` in the stream handed to the worker (a batch cut short is lost whole)."""
        through = 0
        for end, records in self._handed:
            if end > offset:
                break
            through = records
        return through

    def _restart_stream(self, lost: int) -> None:
        """A new worker: the configuration, every session in progress (resumed, so it writes
        no second start), what was lost, then the batch that was being gathered."""
        pending = self.batch
        pending_records = (
            self.records + self._carried - (self._handed[-1][1] if self._handed else 0)
        )
        self.backlog.clear()
        self._handed.clear()
        self._queued_bytes = self._written = 0
        self.batch = bytearray(pickled(self._config))
        self.records = self._carried = 0
        for session_feed in self.live.values():
            self.append(session_feed.start_frame(resumed=True))
            self.append(session_feed.info_frame())
        self.append(Dropped(WORKER_LOST, lost))
        self.batch += pending
        self.records += pending_records
        if self.timer is None:
            self.arm()

    def _turn_off(self, what: str, lost: int) -> None:
        self._off = True
        self._closed = True
        self.lost += self.records + self._carried - (self._handed[-1][1] if self._handed else 0)
        self.batch = bytearray()
        self.backlog.clear()
        self._set_open_limit()
        _say(
            f"helmet-otel: telemetry is off: {what}; {self.lost} records were lost. "
            "MCP traffic is not affected.\n"
        )

    # -- shedding ---------------------------------------------------------------------------
    def full(self) -> bool:
        """The worker is behind: its pipe and our buffer are full."""
        return self.backlog.size + len(self.batch) >= self._limit

    @property
    def every(self) -> int:
        """Trace one call (or notification) in this many."""
        return self._every

    @every.setter
    def every(self, every: int) -> None:
        self._every = every
        self._set_open_limit()

    def _set_open_limit(self) -> None:
        """`open_limit`, after `_limit`, `every` or `_off` changed."""
        self.open_limit = self._limit if self._every == 1 and not self._off else -1

    def shed(self) -> bool:
        """Whether telemetry sheds the call (or notification) that starts now; counted.

        While the governor sheds, this runs for nearly every message at the relay's busiest:
        it is written out for speed."""
        self.tick = tick = self.tick + 1
        every = self._every
        if self._off:
            self.lost += 1
            return True
        if every > 1 and tick % every:
            self._shed_busy += 1
            self.lost_weight = 0
        elif self.backlog.size + len(self.batch) >= self._limit:
            # a sample lost: it counts for every call it stood for, so the weighted metrics
            # plus relay_queue_full still add up to the traffic
            self._shed_full += every
            self.lost_weight = every
        else:
            return False
        if self.timer is None:
            self._arm_for_drops()
        return True

    def shed_lost(self, weight: int) -> None:
        """Count the response of a sampled call lost while the buffer was full (``weight``)."""
        self._shed_full += weight
        if self.timer is None:
            self._arm_for_drops()

    def overflowing(self) -> bool:
        """Even decisions and findings cannot be kept: twice the buffer waits."""
        return self.backlog.size + len(self.batch) >= 2 * self._buffer_limit

    def security_lost(self, count: int) -> None:
        self._security_lost += count
        if self.timer is None:
            self._arm_for_drops()

    def process_finding(self, finding: Finding) -> None:
        """A finding of the process, tied to no session (an auth failure at the HTTP front,
        before any session exists): handed over like a session's, never shed."""
        self.attach()
        if self.overflowing():
            self.security_lost(1)
        else:
            self.append(Security(PROCESS, time.time_ns(), 0, None, (finding,), None))

    def shed_follower(self, busy: bool) -> None:
        """Count a message shed because of a decision made before it (a response whose request
        was shed: ``busy`` when the governor sheds; a stderr line while the buffer is full)."""
        if self._off:
            self.lost += 1
            return
        if busy:
            self._shed_busy += 1
        else:
            self._shed_full += 1
        if self.timer is None:
            self._arm_for_drops()

    # -- batching and hand-over -------------------------------------------------------------
    def attach(self) -> None:
        """Hand-overs run on the running loop (called as a session starts)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._watch()
            if self.batch and self.timer is None:
                self.arm()

    def append(self, frame: Frame) -> None:
        if self._off:
            self.lost += 1
            return
        self.batch += pickled(frame)
        self.records += 1
        self.gathered()

    def gathered(self, ts: int = 0) -> None:
        """A record went into the batch at ``ts`` (0: no time; then only its size counts): the
        batch's first arms the hand-over; one past the due time or the size hands it over.
        (`SessionFeed.after_forward` inlines this on the relay's short way.)"""
        if self.timer is None:
            self.arm()
        elif ts >= self.flush_due or len(self.batch) >= self.handover_bytes:
            self.flush_early()

    def arm(self) -> None:
        """The batch has its first record: hand it over in the flush delay, by the first
        message past it (`flush_due`, `flush_early`) or, if none comes, by the timer."""
        if self._loop is not None and not self._closed:
            self.flush_due = time.time_ns() + int(FLUSH_DELAY * 1e9)
            self.timer = self._loop.call_later(QUIET_FLUSH_DELAY, self._flush)

    def flush_early(self) -> None:
        """A message past `flush_due`: the batch is handed over as soon as the loop is done
        with the messages it is handling (a callback of this loop iteration, not a wake-up;
        and not inline, so that nothing in the hand-over can reach the relay's path). Once."""
        if self.flush_due == _NEVER:
            return
        if self.timer is not None:
            self.timer.cancel()
        if self._loop is not None:
            self.flush_due = _NEVER
            self.timer = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Hand the batch over. New calls are shed while the buffer is full, so what is left
        (responses to traced calls, session events) always goes, and the buffer stays bounded."""
        self.timer = None
        now = time.monotonic()
        if self._governor.due(now):
            self._govern(now)
        pending = self.batch
        if not pending and not self._shed_full and not self._shed_busy and not self._security_lost:
            return
        if self._security_lost:
            pending += pickled(Dropped("security_unrecorded", self._security_lost))
            self._security_lost = 0
        self.batch = bytearray()
        self.backlog += BATCH.pack(len(pending), self._shed_full, self._shed_busy)
        self.backlog += pending
        self._queued_bytes += BATCH.size + len(pending)
        self._carried += self._shed_full
        handed = self._handed
        handed.append((self._queued_bytes, self.records + self._carried))
        # a batch wholly behind what the pipe can still hold was read: only the last such
        # one is kept, as the base of the count
        while len(handed) > 1 and handed[1][0] <= self._written - self._pipe_capacity:
            handed.popleft()
        self._shed_full = self._shed_busy = 0
        self._write()

    def _govern(self, now: float) -> None:
        """Trace fewer calls while the relay's loop is busy, more again when it is not."""
        self.every = self._governor.every(now, self.tick, self.every)
        self._limit = self._buffer_limit if self.every == 1 else self._buffer_limit // 8
        self._set_open_limit()

    def _arm_for_drops(self) -> None:
        """The counts travel with the next batch; the first time, tell the user."""
        self.arm()
        if not self._dropped_reported:
            self._dropped_reported = True
            os.write(
                2,
                b"helmet-otel: telemetry is shedding records to keep up with the traffic "
                b"(counted in helmet.telemetry.dropped). MCP traffic is not affected.\n",
            )

    def _write(self) -> None:
        while self.backlog:
            try:
                written = self.backlog.write_to(self._fd)
            except BlockingIOError:
                break
            except OSError as exc:  # the worker is gone: nothing more can be handed over
                if exc.errno in (errno.EPIPE, errno.EBADF):
                    if self._closed:
                        self._unhanded += self._unsent()
                        self.backlog.clear()
                    else:
                        self._worker_died()
                    return
                raise
            self._written += written
        if self.backlog and not self._writer_armed and self._loop is not None:
            self._writer_armed = True
            self._loop.add_writer(self._fd, self._on_writable)
        elif not self.backlog and self._writer_armed and self._loop is not None:
            self._writer_armed = False
            self._loop.remove_writer(self._fd)

    def _on_writable(self) -> None:
        self._write()

    # -- shutdown ---------------------------------------------------------------------------
    async def close(self, reason: str = "session ended") -> None:
        """Hand over what is left, tell the worker to finish, wait for it (bounded).

        What the worker has not taken at the flush deadline is not handed over: it is counted
        (``shutdown_timeout``), and that count goes over instead, so that it reaches the
        worker's ``helmet.proxy_close`` and stderr summary; when even that cannot be handed
        over, the relay says it on stderr."""
        import anyio

        self.append(Close(time.time_ns(), reason))
        if self.timer is not None:
            self.timer.cancel()
        self._flush()
        self._closed = True
        self._unwatch()
        if self._off:
            return
        # from now on the flush timeout bounds the worker's recording (`cutoff`)
        with contextlib.suppress(OSError):
            os.kill(self._worker.pid, CLOSING_SIGNAL)
        compete_for_the_cpu(self._worker.pid)
        flush_timeout = self.options.flush_timeout
        try:
            with anyio.move_on_after(flush_timeout):
                while self.backlog:
                    await anyio.sleep(0.005)
            if self.backlog:
                self._cut_unsent()
                with anyio.move_on_after(min(CUT_GRACE_S, flush_timeout)):
                    while self.backlog:
                        await anyio.sleep(0.005)
        finally:  # (also when a signal cut the wait short: the worker then finishes alone)
            if self._writer_armed and self._loop is not None:
                self._loop.remove_writer(self._fd)
                self._writer_armed = False
            if self.backlog:
                # (the batch with the count of what was cut off is the last: its count stands
                # for the messages cut off, not for a record of its own)
                self._unhanded += self._unsent() + (self._cut - 1 if self._cut else 0)
                self.backlog.clear()
            if self._unhanded:
                _say(
                    f"helmet-otel: {self._unhanded} telemetry records could not be handed to "
                    f"the worker within the flush timeout and are lost ({SHUTDOWN_TIMEOUT}). "
                    "MCP traffic is not affected.\n"
                )
            if self._worker.stdin is not None:
                with contextlib.suppress(OSError):
                    self._worker.stdin.close()
            self._left_alone = True
        with anyio.move_on_after(flush_timeout + 1.0):
            while self._worker.poll() is None:
                await anyio.sleep(0.01)
        self._left_alone = False

    def _unsent(self) -> int:
        """Records (and relay_queue_full counts) of the batches not wholly written into the
        worker's pipe (the worker drops a torn last batch)."""
        return self.records + self._carried - self._records_through(self._written)

    def _cut_unsent(self) -> None:
        """At the flush deadline: keep the rest of the batch the pipe has begun to take, and
        in place of the batches after it one small batch: the count of their messages (with
        the calls each stood for) and their other records (session events, decisions and
        findings, the close), which are few."""
        start, kept = self._boundary()
        out = bytes(self.backlog)  # (once, at the deadline)
        at = begun = start - self._written
        if at >= len(out):
            return
        queue_full = busy = lost = others = 0
        rest = bytearray()
        while at + BATCH.size <= len(out):
            size, full, shed_busy = BATCH.unpack_from(out, at)
            queue_full += full
            busy += shed_busy
            at += BATCH.size
            for frame in decode(out[at : at + size]):
                if type(frame) is Msg:
                    lost += frame.weight
                else:
                    rest += pickled(frame)
                    others += 1
            at += size
        self.backlog.clear()
        self.backlog += out[:begun]
        self._cut = lost
        if lost:
            rest[:0] = pickled(Dropped(SHUTDOWN_TIMEOUT, lost))
            others += 1
        self._handed = deque(x for x in self._handed if x[0] <= start)
        self.backlog += BATCH.pack(len(rest), queue_full, busy)
        self.backlog += rest
        self._queued_bytes = start + BATCH.size + len(rest)
        # (only their sum counts from now on)
        self.records, self._carried = kept + others, queue_full
        self._handed.append((self._queued_bytes, self.records + self._carried))
        self._write()

    def _boundary(self) -> tuple[int, int]:
        """The first batch boundary at or after what the pipe took (a batch it has begun to
        take must be finished), and the records before it."""
        start = before = 0
        for end, records in self._handed:
            if end > self._written:
                return (end, records) if start < self._written else (start, before)
            start, before = end, records
        return start, before

    def kill(self) -> None:
        """Last resort after `close`: the worker overstayed its flush deadline. (Not when a
        signal cut `close` short: the worker has its input and a deadline of its own.) What
        it had not read is counted and said on stderr; what it held is lost with it."""
        if self._left_alone:
            return
        worker = self._worker
        if worker.poll() is None:
            unread = _unread_input(worker.pid)
            worker.kill()
            worker.wait()
            # (what was never written into its pipe is counted by `close`)
            written = self._written
            unread_records = self._records_through(written) - self._records_through(
                written - unread
            )
            if self._cut and self._handed and written - unread < self._handed[-1][0] <= written:
                unread_records += self._cut - 1  # the count it had not read stood for them
            _say(
                f"helmet-otel: the telemetry worker did not finish within the flush timeout "
                f"and was killed; {unread_records} records it had not read are lost "
                f"({WORKER_LOST}), with those it had read and not yet stored; its counts did "
                "not reach the store. MCP traffic is not affected.\n"
            )


def _unread_input(pid: int) -> int:
    """Bytes waiting in process ``pid``'s stdin pipe (0 when that cannot be read)."""
    try:
        fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        return _pipe_unread(fd)
    finally:
        os.close(fd)


def _pipe_unread(fd: int) -> int:
    """Bytes waiting in the pipe ``fd`` is an end of (0 when that cannot be read)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    except OSError:
        return 0
