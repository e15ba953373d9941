"""What a wrapped server's process tree uses, read from Linux ``/proc`` (no dependency).

The tree of a server is the process the proxy started, every descendant of it (by parent pid)
and every process still in its process group (the server was started as a group leader; a
daemonised grandchild re-parented to init stays in the group). One pass over ``/proc`` serves
every server of the proxy: ``sample_trees(pids)``. It runs in the telemetry worker, never on
the relay's loop. Where ``/proc`` is missing (not Linux) it finds nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final, NamedTuple

__all__ = ["TreeSample", "sample_trees"]

_TICK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class TreeSample(NamedTuple):
    """A server's process tree at one moment (sums over its processes)."""

    cpu_user_s: float  # user CPU, including children they reaped
    cpu_system_s: float  # system CPU, likewise
    memory_bytes: int  # resident set
    threads: int
    open_fds: int
    processes: int


class _Proc(NamedTuple):
    ppid: int
    pgid: int
    user_ticks: int
    system_ticks: int
    threads: int
    rss_pages: int


def _read_stat(pid: int) -> _Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime
    # vsize rss ...
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return _Proc(
            int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[13]),
            int(fields[12]) + int(fields[14]), int(fields[17]), int(fields[21]),
        )  # fmt: skip
    except (IndexError, ValueError):
        return None


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def sample_trees(roots: Iterable[int]) -> dict[int, TreeSample]:
    """For each root pid that is still running, what its tree uses now."""
    wanted = set(roots)
    if not wanted:
        return {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    procs: dict[int, _Proc] = {}
    for name in entries:
        if name.isdigit():
            proc = _read_stat(int(name))
            if proc is not None:
                procs[int(name)] = proc
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    samples: dict[int, TreeSample] = {}
    for root in wanted:
        if root not in procs:
            continue
        members = {root}
        stack = [root]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in members:
                    members.add(child)
                    stack.append(child)
        members.update(pid for pid, proc in procs.items() if proc.pgid == root)
        tree = [procs[pid] for pid in members]
        samples[root] = TreeSample(
            sum(p.user_ticks for p in tree) / _TICK,
            sum(p.system_ticks for p in tree) / _TICK,
            sum(p.rss_pages for p in tree) * _PAGE,
            sum(p.threads for p in tree),
            sum(_open_fds(pid) for pid in members),
            len(members),
        )
    return samples
