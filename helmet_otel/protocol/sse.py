"""Server-sent events (the ``text/event-stream`` format), as pure functions over bytes.

`SseSplitter` cuts a stream into events and keeps each event's own bytes, so a proxy can pass an
event on exactly as it came (its ``id:``, ``retry:`` and comment lines included) and still read
its data. A comment-only block (``: keep-alive``) is an event too, with no data: relaying it keeps
idle streams alive through intermediaries. Lines end with LF, CRLF or CR, as the format allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(slots=True)
class SseEvent:
    raw: bytes  # the event's bytes, up to and including the blank line that ends it
    event: str  # the ``event:`` field, "message" when absent
    data: bytes | None  # the ``data:`` lines joined by LF; None when the block had none
    id: str | None  # the ``id:`` field, when given
    retry: int | None = None  # the ``retry:`` field (milliseconds), when given


def _field(line: bytes) -> tuple[bytes, bytes]:
    name, colon, value = line.partition(b":")
    if colon and value.startswith(b" "):
        value = value[1:]
    return name, value


def parse_event(raw: bytes) -> SseEvent:
    """One event block (``raw`` ends with its blank line)."""
    event = "message"
    data: list[bytes] = []
    event_id: str | None = None
    retry: int | None = None
    for line in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, value = _field(line)
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            event_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            retry = int(value)
    return SseEvent(raw, event, b"\n".join(data) if data else None, event_id, retry)


_BLOCK_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")  # a blank line, with any of the line ends


class SseSplitter:
    """Feed chunks, get whole events (a block ends at an empty line). Linear in the bytes fed:
    a chunk that ends no block is only looked at (with the 3 bytes before it) and kept, and
    the pending bytes are joined once, when their block ends (a 50 MB event costs one copy)."""

    __slots__ = ("_parts", "_tail")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._tail = b""  # the last 3 pending bytes: a blank line may straddle two chunks

    def feed(self, chunk: bytes) -> list[SseEvent]:
        parts = self._parts
        if parts:
            edge = self._tail + chunk[:3]
            if _BLOCK_END.search(edge) is None and _BLOCK_END.search(chunk) is None:
                parts.append(chunk)
                self._tail = (self._tail + chunk)[-3:]
                return []
            parts.append(chunk)
            buffer = b"".join(parts)
            parts.clear()
        else:
            buffer = chunk
        events: list[SseEvent] = []
        start = 0
        for match in _BLOCK_END.finditer(buffer):
            end = match.end()
            events.append(parse_event(buffer[start:end]))
            start = end
        if start < len(buffer):
            rest = buffer[start:] if start else buffer
            parts.append(rest)
            self._tail = rest[-3:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not finished yet (what a stream that ends now leaves behind)."""
        return b"".join(self._parts)


def sse_message(data: bytes, event_id: str | None = None) -> bytes:
    """A ``message`` event carrying ``data`` (one JSON-RPC message: a single line)."""
    head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
    return head + b"event: message\ndata: " + data + b"\n\n"
