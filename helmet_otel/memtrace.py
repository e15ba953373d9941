"""A diagnostic, not a feature: where a process's Python memory grows, by `tracemalloc`.

``HELMET_DEBUG_TRACEMALLOC=PREFIX[,SECONDS]`` (read once at start by the proxy and by its
telemetry worker, which inherits it) starts `tracemalloc` and a daemon thread that takes a
baseline snapshot ``SECONDS`` (default 30) after start and then, every ``SECONDS``, writes
``PREFIX.ROLE.PID.txt`` (replaced each time): the traced and resident sizes, and the top
allocation sites by growth since the baseline. Tracing slows the process several times over;
it is for finding a leak (the soak benchmark's ``--tracemalloc``), never for production.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from collections.abc import Mapping

ENV = "HELMET_DEBUG_TRACEMALLOC"
TOP = 30  # allocation sites written per report


def start_from_env(role: str, environ: Mapping[str, str]) -> bool:
    """Start tracing when ``HELMET_DEBUG_TRACEMALLOC`` is set; whether it was."""
    value = environ.get(ENV, "")
    if not value:
        return False
    prefix, _, every = value.partition(",")
    try:
        interval = float(every) if every else 30.0
    except ValueError:
        interval = 30.0
    tracemalloc.start(4)
    path = f"{prefix}.{role}.{os.getpid()}.txt"
    threading.Thread(target=_report_loop, args=(path, interval), daemon=True).start()
    return True


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__))
    )


def _rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _report_loop(path: str, interval: float) -> None:
    time.sleep(interval)
    baseline, base_traced, base_rss, started = (
        _snapshot(),
        tracemalloc.get_traced_memory()[0],
        _rss(),
        time.time(),
    )
    while True:
        time.sleep(interval)
        current = _snapshot()
        traced = tracemalloc.get_traced_memory()[0]
        rss = _rss()
        lines = [
            f"since baseline: {time.time() - started:.0f} s",
            f"traced: {base_traced / 2**20:.1f} -> {traced / 2**20:.1f} MiB",
            f"rss:    {base_rss / 2**20:.1f} -> {rss / 2**20:.1f} MiB",
            "",
            "top growth by line:",
            *(str(stat) for stat in current.compare_to(baseline, "lineno")[:TOP]),
            "",
            "top growth by traceback:",
        ]
        for stat in current.compare_to(baseline, "traceback")[:8]:
            lines.append(f"{stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
            lines.extend(f"    {line}" for line in stat.traceback.format())
        temporary = f"{path}.tmp"
        with open(temporary, "w") as out:
            out.write("\n".join(lines) + "\n")
        os.replace(temporary, path)
