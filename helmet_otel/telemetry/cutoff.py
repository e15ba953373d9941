"""The worker's recording deadline once the proxy closes.

When the relay closes it sends the worker `CLOSING_SIGNAL`. A worker far behind (starved of CPU
under load, or stopped) would otherwise record its backlog for longer than ``--flush-timeout``
allows, and be killed by the relay with all it held, uncounted. From the signal on the worker
records for `RECORD_SHARE` of the flush timeout; after that it only counts the messages it reads
(``shutdown_timeout``, with the calls each stands for) until the end of its input, which is
cheap, so its drains and its ``helmet.proxy_close`` (with every count) fit in the rest. The relay
also takes the worker out of SCHED_IDLE where it may (`compete_for_the_cpu`): the traffic is
over, and a loaded machine must not starve its end.
Decisions, findings and session events are still recorded: they are few, and never shed.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

from helmet_otel.telemetry.frames import Frame, Msg

# Ignored by default (a worker still starting up is not killed by it) and raised by nothing
# else the worker does: it has no socket that receives out-of-band data.
CLOSING_SIGNAL = signal.SIGURG
RECORD_SHARE = 0.5  # of the flush timeout, from the signal on
SHUTDOWN_TIMEOUT = "shutdown_timeout"  # helmet.telemetry.dropped reason


class Cutoff:
    """Whether the worker still records messages, and what it counted since it stopped."""

    def __init__(self, flush_timeout: float, drop: Callable[[str, int], None]) -> None:
        self._budget = flush_timeout * RECORD_SHARE
        self._drop = drop
        self.at = math.inf  # monotonic: messages read from then on are counted, not recorded

    def install(self) -> None:
        """Take the signal from now on, and one that came before (the relay starts the worker
        with it blocked)."""
        signal.signal(CLOSING_SIGNAL, self._closing)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {CLOSING_SIGNAL})

    def _closing(self, signum: int, frame: FrameType | None) -> None:
        self.at = min(self.at, time.monotonic() + self._budget)

    def sift(self, frames: list[Frame]) -> list[Frame]:
        """``frames`` as they are while there is time; past the deadline without the messages,
        which are counted."""
        if self.at == math.inf or time.monotonic() < self.at:
            return frames
        kept: list[Frame] = []
        lost = 0
        for frame in frames:
            if type(frame) is Msg:
                lost += frame.weight
            else:
                kept.append(frame)
        if lost:
            self._drop(SHUTDOWN_TIMEOUT, lost)
        return kept


def compete_for_the_cpu(pid: int) -> None:
    """The traffic is over: process ``pid``'s threads (the worker's) leave SCHED_IDLE and
    their nice value, so that a loaded machine does not starve its last flush. Done by the
    relay, which has a CPU now (a starved worker might not run its signal handler for
    seconds); where the system lets an unprivileged process (RLIMIT_NICE), or as root:
    otherwise they stay as they are."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except (OSError, ValueError):
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError, AttributeError):
            if os.sched_getscheduler(tid) == os.SCHED_IDLE:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, 0)
