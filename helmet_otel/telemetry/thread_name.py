"""The worker's threads named for the operating system too (``top -H``, ``/proc/PID/task``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable

_PR_SET_NAME = 15


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(ctypes.util.find_library("c")).prctl
    except (OSError, AttributeError):
        return None
    return function


_PRCTL = _prctl()


def name_this_thread() -> None:
    """Give the calling thread its Python name in the kernel (at most 15 bytes are kept)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_NAME, threading.current_thread().name.encode()[:15], 0, 0, 0)
