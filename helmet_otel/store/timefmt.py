"""Durations, timestamps and sizes as users type them, and timestamps as the store prints them.

Everything in the store is nanoseconds since the Unix epoch (UTC). Users type either a duration
(``30s``, ``5m``, ``2h``, ``7d``, ``1w``, combinations such as ``1h30m``; meaning "that long ago"
for ``--since``/``--until``) or an ISO 8601 timestamp (``2026-11-24``, ``2026-11-24T10:00``,
``2026-11-24 10:00:00.250+01:00``, ``...Z``; without an offset it is local time).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

__all__ = [
    "format_duration_ms",
    "format_local",
    "format_rfc3339",
    "parse_duration",
    "parse_size",
    "parse_time",
]

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_duration(text: str) -> float:
    """``"1h30m"`` -> 5400.0 seconds. A bare number is seconds. Raises ``ValueError``."""
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value < 0 or value != value or value == float("inf"):  # negative, NaN, infinite
            raise ValueError(f"invalid duration: {text!r}")
        return value
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(s):
        if match.start() != pos:
            raise ValueError(f"invalid duration: {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(s) or pos == 0 or total == float("inf"):
        raise ValueError(f"invalid duration: {text!r}")
    return total


def parse_time(text: str, *, now_ns: int | None = None) -> int:
    """A duration ("that long ago") or an ISO 8601 timestamp -> ns since the epoch.

    Raises ``ValueError`` with a message fit for users.
    """
    s = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    if s.lower() == "now":
        return now
    try:
        seconds = parse_duration(s)
    except ValueError:
        pass
    else:  # longer ago than a store can say: its beginning
        return _clamp(now - int(min(seconds, _MAX_SECONDS) * 1e9))
    iso = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"invalid duration or timestamp: {text!r} "
            "(examples: 30s, 5m, 2h, 7d, 2026-11-24, 2026-11-24T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive means local time
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return _clamp((delta // timedelta(microseconds=1)) * 1000)


_INT64 = (-(2**63), 2**63 - 1)  # what a store's time column (SQLite INTEGER) holds
_MAX_SECONDS = 2**64 / 1e9  # a duration longer than the int64 range, in seconds


def _clamp(ts_ns: int) -> int:
    return min(max(ts_ns, _INT64[0]), _INT64[1])


def parse_size(text: str) -> int:
    """``"500MB"`` -> 500_000_000, ``"1GiB"`` -> 1_073_741_824, ``"4096"`` -> 4096."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size: {text!r} (examples: 500MB, 1GiB, 1048576)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def format_rfc3339(ts_ns: int) -> str:
    """UTC with nanoseconds: ``2026-11-24T10:56:01.123456789Z`` (exact, sortable)."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{nanos:09d}Z"


def format_local(ts_ns: int, *, utc: bool = False) -> str:
    """For people: ``2026-11-24 10:56:01.123`` in local time (or UTC)."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    parts = time.gmtime(seconds) if utc else time.localtime(seconds)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', parts)}.{nanos // 1_000_000:03d}"


def format_duration_ms(ms: float | None) -> str:
    """``0.42 ms``, ``12.3 ms``, ``1.25 s``, ``3m12s``, ``2h05m``; empty for None."""
    if ms is None:
        return ""
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
