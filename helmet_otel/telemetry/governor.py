"""The relay's telemetry governor: how many calls the relay traces while its loop is busy.

At a hand-over at least `GOVERN_WINDOW` seconds after the last reading (every `FLUSH_DELAY`
at a steady pace, more often when batches fill up) `TelemetryFeed` asks `Governor.every`; the
answer is one call in how many to trace (1: all of them). It reads the relay loop's own CPU
time and its wait for a CPU (`loop_times`), so a relay at saturation keeps its CPU for the
traffic.
"""

from __future__ import annotations

import time

# The governor: at most every GOVERN_WINDOW seconds it reads how busy the relay's loop was (see
# `busy_share`); over the last two windows above `--relay-busy-limit`, it traces one
# call in MAX_EVERY at once and keeps at most an eighth of `--telemetry-buffer` for the worker;
# under the limit - 0.1 it traces twice as many as before. Backing off at once keeps a backlog
# for the worker from building up at saturation, when the worker's CPU would be taken from the
# traffic; two windows (0.1-0.16 s), not one, so that a burst of catching up after a stall does
# not cost a sample of the calls.
GOVERN_WINDOW = 0.05
# ...and only while calls pass faster than this: below it telemetry's share of the relay's CPU
# is small, and a busy start-up must not cost the first calls their records.
GOVERN_MIN_RATE = 2000.0
RUN_FLOOR = 0.3  # see `busy_share`: the share of the time the loop must run for its wait to count
MAX_EVERY = 64


def loop_times() -> tuple[float, float]:
    """Seconds the calling thread has run, and (where Linux says) waited in a run queue for a
    CPU. Without schedstat the CPU time alone (and no wait)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            ran, waited = stat.read().split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return time.thread_time(), 0.0


def busy_share(ran: float, waited: float, elapsed: float) -> float:
    """How busy the loop was over ``elapsed`` seconds in which it ``ran`` and ``waited`` in
    the run queue for a CPU: the larger of two readings.

    - Of the time it had a CPU or did not want one (``elapsed`` less the wait), the share it
      ran. A loop that never goes idle is saturated by its own work, whatever the share of the
      time it got a CPU (on a 2-core machine whose client and server also run flat out it may
      run only 60% of the time): 100%.
    - While it ran at least `RUN_FLOOR` of the time, the time it ran or waited: then the
      traffic and the relay take the CPUs, and what telemetry costs the relay is taken from
      the traffic. Below that floor the wait is the machine's other work (a relay that keeps
      up with a paced load waits after each wake-up on a loaded machine), and counting it
      would shed calls whose records cost the traffic nothing."""
    own = elapsed - waited
    share = 1.0 if own <= ran else ran / own
    if ran >= RUN_FLOOR * elapsed:
        share = max(share, (ran + waited) / elapsed)
    return min(share, 1.0)


class Governor:
    """The readings of the last two windows, and the rule that turns them into `every`."""

    def __init__(self, busy_limit: float) -> None:
        self.busy_limit = busy_limit
        self._tick_mark = 0
        self._ran_mark, self._waited_mark = loop_times()
        self._window = (0.0, 0.0, 0.0)  # the last window's (ran, waited, elapsed)
        self._wall_mark = time.monotonic()

    def due(self, now: float) -> bool:
        """A window has passed since the last reading (``now``: monotonic)."""
        return now - self._wall_mark >= GOVERN_WINDOW

    def every(self, now: float, tick: int, every: int) -> int:
        """Trace one call in how many from now, after one in ``every`` so far; ``tick``: the
        calls and notifications seen in all."""
        ran, waited = loop_times()
        elapsed = now - self._wall_mark
        window = (ran - self._ran_mark, waited - self._waited_mark, elapsed)
        last = self._window
        busy = busy_share(window[0] + last[0], window[1] + last[1], elapsed + last[2])
        rate = (tick - self._tick_mark) / elapsed
        self._ran_mark, self._waited_mark = ran, waited
        self._window = window
        self._wall_mark = now
        self._tick_mark = tick
        if busy > self.busy_limit and rate >= GOVERN_MIN_RATE:
            return MAX_EVERY
        if busy < self.busy_limit - 0.1:
            return max(every // 2, 1)
        return every
