"""One session's wrapped server: what its process tree used, as metrics and record figures.

Every sample (`process_tree.sample_trees`, every ``--metrics-interval`` and when the session
starts) moves the process metrics by this session's change since its previous sample, so the
instruments always hold the sum over the proxy's live servers (memory, threads, descriptors)
and the CPU seconds every server used so far (a counter that never goes down). When the
session ends, its tree leaves the sums, and the CPU time and peak memory the relay read when
it reaped the server (``wait4``) complete what the samples saw: a session shorter than one
interval still has its figures.
"""

from __future__ import annotations

from typing import Any

from helmet_otel import semconv as sc
from helmet_otel.telemetry.instruments import Instruments
from helmet_otel.telemetry.process_tree import TreeSample

__all__ = ["ServerUsage"]

_USER = {sc.CPU_MODE: "user"}
_SYSTEM = {sc.CPU_MODE: "system"}


class ServerUsage:
    def __init__(self, pid: int, instruments: Instruments) -> None:
        self.pid = pid
        self._instruments = instruments
        self.cpu_user_s = 0.0
        self.cpu_system_s = 0.0
        self.memory_bytes = 0
        self.peak_memory_bytes = 0
        self.threads = 0
        self.open_fds = 0
        self.processes = 0
        self.sampled = False
        self.ended = False
        # CPU seconds of the session's servers that exited before this one (a restart)
        self._base_user = 0.0
        self._base_system = 0.0

    def observe(self, sample: TreeSample) -> None:
        """A sample of the live tree."""
        if self.ended:
            return
        self.sampled = True
        self._cpu(self._base_user + sample.cpu_user_s, self._base_system + sample.cpu_system_s)
        self._gauges(sample.memory_bytes, sample.threads, sample.open_fds)
        self.processes = sample.processes
        self.peak_memory_bytes = max(self.peak_memory_bytes, sample.memory_bytes)

    def finish(self, reaped: tuple[float, float, int] | None) -> None:
        """The server is gone: its figures are final; it leaves the live sums. ``reaped``:
        what the session's servers used together, as the relay reaped them."""
        if self.ended:
            return
        self._gone(reaped)
        self.ended = True

    def next_child(self, pid: int, reaped: tuple[float, float, int] | None) -> None:
        """A new server process replaced the crashed one (``reaped``: as for `finish`): the
        figures go on, counting from what the servers before it used."""
        if self.ended:
            return
        self._gone(reaped)
        self.pid = pid
        self._base_user, self._base_system = self.cpu_user_s, self.cpu_system_s

    def _gone(self, reaped: tuple[float, float, int] | None) -> None:
        if reaped is not None:
            user, system, max_rss = reaped
            self._cpu(user, system)
            self.peak_memory_bytes = max(self.peak_memory_bytes, max_rss)
            self.sampled = True
        self._gauges(0, 0, 0)
        self.processes = 0

    def _cpu(self, user: float, system: float) -> None:
        # A tree's CPU time can go down (a descendant nobody reaped leaves it): never count back.
        instruments = self._instruments
        if user > self.cpu_user_s:
            instruments.process_cpu_time.add(user - self.cpu_user_s, _USER)
            self.cpu_user_s = user
        if system > self.cpu_system_s:
            instruments.process_cpu_time.add(system - self.cpu_system_s, _SYSTEM)
            self.cpu_system_s = system

    def _gauges(self, memory: int, threads: int, fds: int) -> None:
        instruments = self._instruments
        instruments.process_memory.add(memory - self.memory_bytes)
        instruments.process_threads.add(threads - self.threads)
        instruments.process_fds.add(fds - self.open_fds)
        self.memory_bytes, self.threads, self.open_fds = memory, threads, fds

    @property
    def cpu_s(self) -> float:
        return round(self.cpu_user_s + self.cpu_system_s, 3)

    def figures(self) -> dict[str, Any]:
        """The ``server`` part of ``helmet.performance`` (and of ``helmet.session_end``)."""
        return {
            "pid": self.pid,
            "cpu_s": self.cpu_s,
            "cpu_user_s": round(self.cpu_user_s, 3),
            "cpu_system_s": round(self.cpu_system_s, 3),
            "memory_bytes": self.memory_bytes,
            "memory_peak_bytes": self.peak_memory_bytes,
            "threads": self.threads,
            "open_fds": self.open_fds,
            "processes": self.processes,
        }

    def attributes(self) -> dict[str, Any]:
        """What the store keeps per session (``sessions``: CPU seconds, peak memory)."""
        if not self.sampled:
            return {}
        return {
            sc.HELMET_SERVER_CPU_TIME: self.cpu_s,
            sc.HELMET_SERVER_MEMORY_PEAK: self.peak_memory_bytes,
        }
