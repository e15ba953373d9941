"""Newline framing for stdio MCP: one message per line, no length limit."""

from __future__ import annotations


class LineSplitter:
    """Split a byte stream into lines that keep their trailing ``\\n``.

    Partial lines are kept as a list of chunks and joined once, so a line of N bytes
    costs O(N) however many chunks it arrives in.
    """

    __slots__ = ("_parts", "_pending")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pending = 0

    @property
    def pending(self) -> int:
        """Bytes held for a line that has not ended yet."""
        return self._pending

    def feed(self, data: bytes) -> list[bytes]:
        end = data.find(b"\n")
        if end < 0:
            if data:
                self._parts.append(data)
                self._pending += len(data)
            return []
        lines: list[bytes] = []
        if self._parts:
            self._parts.append(data[: end + 1])
            lines.append(b"".join(self._parts))
            self._parts.clear()
            self._pending = 0
        else:
            lines.append(data[: end + 1])
        start = end + 1
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            lines.append(data[start : end + 1])
            start = end + 1
        if start < len(data):
            rest = data[start:]
            self._parts.append(rest)
            self._pending = len(rest)
        return lines

    def flush(self) -> bytes:
        """Whatever is left when the stream ends (a last line without ``\\n``)."""
        rest = b"".join(self._parts)
        self._parts.clear()
        self._pending = 0
        return rest
