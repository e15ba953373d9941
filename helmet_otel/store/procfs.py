"""Is a proxy process still running? ``pid_alive``, with a check against reused pids (Linux
``/proc``; elsewhere the pid alone decides)."""

from __future__ import annotations

import contextlib
import os
from typing import Final

__all__ = ["pid_alive"]

_PID_REUSE_SLACK_NS: Final = 2_000_000_000


def _boot_time_s() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return None


def _process_start_ns(pid: int) -> int | None:
    """When ``pid`` started (Linux /proc), else None."""
    try:
        with open(f"/proc/{pid:d}/stat", encoding="utf-8", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat, after pid and (comm)
        boot = _boot_time_s()
        if boot is None:
            return None
        return int((boot + ticks / os.sysconf("SC_CLK_TCK")) * 1e9)
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, *, started_by_ns: int | None = None) -> bool:
    """Is ``pid`` a running process (that was already running at ``started_by_ns``)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    if started_by_ns is not None:
        began = _process_start_ns(pid)
        if began is not None and began > started_by_ns + _PID_REUSE_SLACK_NS:
            return False  # the pid was reused by a newer process
    return True
