"""`unusual_rate`: a session calling one tool far faster than the server usually sees it
called, or reaching for many distinct tools in a short window.

Pure state machines over monotonic times the interceptor passes in (no clock of their own):

- `RateBaselines` (one per server, process-wide): for each tool, an exponentially weighted
  average over the recent sessions of how many calls one session made in a window in which it
  called the tool. A session joins it when it ends (`SessionRates.close`), so a session is
  never measured against itself, and a burst cannot raise its own bar halfway through.
- `SessionRates` (one per session): per tool, the calls in the current and the previous
  fixed window; their weighted sum estimates the calls in the last window's length (a sliding
  window at O(1) cost). A finding when that estimate reaches ``max(rate_min_calls, rate_factor
  * baseline)``, at most once per tool per window. And the distinct tools called within
  ``burst_window`` (an ordered dict, oldest first): a finding when they reach
  ``burst_tools``, at most once per ``burst_window``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

ALPHA: Final = 0.2  # weight of the newest window in a baseline


@dataclass(frozen=True, slots=True)
class RateSettings:
    window: float = 10.0  # seconds
    min_calls: int = 60  # calls of one tool in a window below this never fire
    factor: float = 5.0  # times the server's baseline for the tool
    burst_window: float = 10.0  # seconds
    burst_tools: int = 15  # distinct tools within burst_window; 0: not checked


class RateBaselines:
    """Per tool: the usual number of calls one session makes in one window."""

    def __init__(self) -> None:
        self._usual: dict[str, float] = {}

    def usual(self, tool: str) -> float:
        return self._usual.get(tool, 0.0)

    def fold(self, tool: str, count: float) -> None:
        usual = self._usual.get(tool)
        self._usual[tool] = count if usual is None else usual + ALPHA * (count - usual)


@dataclass(slots=True)
class _Window:
    index: int  # the fixed window (time // window) the count is in
    count: int = 0
    previous: int = 0  # the window before it
    fired: int = -1  # the last window a finding was made in
    total: int = 0  # calls in the session
    closed: int = 0  # windows with calls before this one


@dataclass(slots=True)
class SessionRates:
    baselines: RateBaselines
    _tools: dict[str, _Window] = field(default_factory=dict[str, _Window])
    _recent: OrderedDict[str, float] = field(default_factory=OrderedDict[str, float])
    _burst_fired: float = float("-inf")
    _last: str = ""  # the tool called last: the newest entry of `_recent` already

    def call(
        self, tool: str, now: float, settings: RateSettings
    ) -> Sequence[tuple[str | None, str]]:
        """Count a call of ``tool`` at ``now``; the findings (usually none): the tool (None for
        a burst of tools) and the message. (Runs for every tools/call: the estimate is worked
        out only when the counts could reach ``min_calls``; a tool called again is not moved
        in `_recent`, where it is the newest already; old entries are pruned only when a
        burst could be found.)"""
        found: Sequence[tuple[str | None, str]] = ()
        width = settings.window
        index = int(now // width)
        window = self._tools.get(tool)
        if window is None:
            window = self._tools[tool] = _Window(index)
        elif window.index != index:
            window.previous = window.count if window.index == index - 1 else 0
            window.index, window.count = index, 0
            window.closed += 1
        window.count += 1
        window.total += 1
        # (the estimate is at most previous + count; below min_calls nothing fires, whatever
        # the baseline: it is not looked up)
        if window.previous + window.count >= settings.min_calls and window.fired != index:
            elapsed = now / width - index  # of the current window, 0..1
            estimate = window.previous * (1.0 - elapsed) + window.count
            if estimate >= settings.min_calls:
                usual = self.baselines.usual(tool)
                if estimate >= settings.factor * usual:
                    window.fired = index
                    found = [(tool, (
                        f"{round(estimate)} calls of {tool!r} within {width:g} s (usually "
                        f"{usual:.1f} per session in {width:g} s)"
                    ))]  # fmt: skip
        if settings.burst_tools:
            recent = self._recent
            recent[tool] = now
            if tool != self._last:
                self._last = tool
                recent.move_to_end(tool)
            # at most one entry per tool: only a possible burst needs the old ones pruned
            if (
                len(recent) >= settings.burst_tools
                and now - self._burst_fired >= settings.burst_window
            ):
                cutoff = now - settings.burst_window
                while next(iter(recent.values())) < cutoff:
                    recent.popitem(last=False)
                if len(recent) >= settings.burst_tools:
                    self._burst_fired = now
                    found = [*found, (
                        None,
                        f"{len(recent)} distinct tools called within {settings.burst_window:g} s",
                    )]  # fmt: skip
        return found

    def close(self) -> None:
        """The session ended: its calls per window join the server's baselines."""
        for tool, window in self._tools.items():
            self.baselines.fold(tool, window.total / (window.closed + 1))
        self._tools.clear()
