"""Restarting a server that crashed (``--restart on-failure``): when, after how long, when to
give up, and the replay of a legacy client's handshake to the new server. No I/O here: the
transport (`transports.restart`) spawns, writes and waits.

A legacy-era client initialized the first server once (``initialize``, then
``notifications/initialized``) and will not do it again: the proxy sends the new server the
client's own ``initialize`` (same params, an id of the proxy's that no client message can be
waiting on, since nothing else reaches the new server before its answer) and swallows the
answer, then the client's ``notifications/initialized``. A 2026-07-28 (stateless) session has no
handshake: every request carries what the server needs, so the new server simply takes the
next one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import orjson

from helmet_otel.protocol.message import ERROR, REQUEST, RESPONSE, JsonId, Message, inspect

BACKOFF_FIRST: Final = 0.1  # seconds before the first restart; doubles with each one after
BACKOFF_MAX: Final = 5.0
RESTART_WINDOW: Final = 60.0  # the restarts that count toward the limit: those this recent
DEFAULT_MAX_RESTARTS: Final = 5
REPLAY_ID_PREFIX: Final = "helmet-otel/restart/"
HANDSHAKE_LINE_MAX: Final = 64 * 1024  # a longer line is not looked at: no handshake is so big


class RestartBudget:
    """At most ``limit`` restarts within `RESTART_WINDOW` seconds, each after a backoff that
    doubles from `BACKOFF_FIRST` to `BACKOFF_MAX` with the restarts in the window (a server that
    ran quietly for a window starts again from the shortest wait)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.count = 0  # restarts so far, in the whole session
        self._clock = clock
        self._recent: deque[float] = deque()

    def next_delay(self) -> float | None:
        """Seconds to wait before the next restart (which counts from now), or None when the
        budget is spent: the crash ends the session."""
        now = self._clock()
        recent = self._recent
        while recent and now - recent[0] > RESTART_WINDOW:
            recent.popleft()
        if len(recent) >= self.limit:
            return None
        delay = min(BACKOFF_FIRST * 2 ** len(recent), BACKOFF_MAX)
        recent.append(now)
        self.count += 1
        return delay


class Handshake:
    """The legacy handshake the client sent, as it sent it, and its replay."""

    def __init__(self) -> None:
        self.initialize: dict[str, Any] | None = None  # the client's initialize request
        self.initialize_id: JsonId | None = None
        self.initialized: bytes | None = None  # its notifications/initialized line
        self.replay_id: str | None = None  # the id of the replay that waits for its answer

    @property
    def complete(self) -> bool:
        return self.initialize is not None and self.initialized is not None

    def observe(self, line: bytes) -> None:
        """A line from the client (call until `complete`; cheap for any other line)."""
        if len(line) > HANDSHAKE_LINE_MAX or b"initialize" not in line:
            return
        msg = inspect(line)
        if msg.kind is REQUEST and msg.method == "initialize" and self.initialize is None:
            self.initialize, self.initialize_id = msg.payload, msg.id
        elif msg.method == "notifications/initialized" and msg.kind is not REQUEST:
            self.initialized = line if line.endswith(b"\n") else line + b"\n"

    def replay(self, restart: int) -> bytes:
        """The client's initialize for the ``restart``-th new server, under an id of ours."""
        assert self.initialize is not None
        self.replay_id = f"{REPLAY_ID_PREFIX}{restart}"
        return orjson.dumps({**self.initialize, "id": self.replay_id}) + b"\n"

    def answer_in(self, line: bytes) -> Message | None:
        """The replay's answer, when ``line`` is it (only the answer to our id is)."""
        replay_id = self.replay_id
        if replay_id is None or replay_id.encode() not in line:
            return None
        msg = inspect(line)
        if (msg.kind is RESPONSE or msg.kind is ERROR) and msg.id == replay_id:
            return msg
        return None


def replay_failure(answer: Message, expected_version: str | None) -> str | None:
    """Why the new server's answer to the replayed initialize does not let the client's session
    go on (an error, or another protocol version than the first server chose), or None."""
    if answer.kind is ERROR:
        return f"answered the replayed initialize with an error: {answer.error_message or ''}"
    result = answer.result
    version = result.get("protocolVersion") if result is not None else None
    if expected_version is not None and version != expected_version:
        return (
            f"answered the replayed initialize with protocol version {version!r}, "
            f"not {expected_version!r} as before"
        )
    return None
