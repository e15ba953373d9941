"""The worker's recording deadline once the proxy closes.

When the relay closes it sends the worker `CLOSING_SIGNAL`. A worker far behind (starved of CPU
under load, or stopped) would otherwise record its backlog for longer than ``--flush-timeout``
allows, and be killed by the relay with all it held, uncounted. From the signal on the worker
records for `RECORD_SHARE` of the flush timeout; after that it only counts the messages it reads
(``shutdown_timeout``, with the calls each stands for) until the end of its input, which is
cheap, so its drains and its ``helmet.proxy_close`` (with every count) fit in the rest.
Decisions, findings and session events are still recorded: they are few, and never shed.
"""

from __future__ import annotations

import math
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
        signal.signal(CLOSING_SIGNAL, self._closing)

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
