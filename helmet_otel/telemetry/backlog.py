"""Bytes waiting for the worker's pipe, kept as the chunks they were handed over in.

The relay's hand-overs used to wait in one ``bytearray``: appended at the end, cut at the front
as the pipe took them. While the worker is behind that buffer holds up to the telemetry buffer
(4 MiB), and every append to a buffer cut at the front makes CPython allocate a new one and
copy it (a 4 MiB copy per hand-over). Blocks that large come from glibc's heap once one of them
was freed (its mmap threshold rises to their size, and the trim threshold to twice that), which
then kept up to three times the buffer resident: the proxy's RSS rose by 8 to 12 MiB whenever
the worker fell behind. Chunks are written with ``writev`` and freed one by one, as the pipe
takes them; nothing is joined or copied.
"""

from __future__ import annotations

import os
from collections import deque
from itertools import islice

IOV_MAX = 64  # chunks per writev (a pipe takes at most its capacity anyway)


class Backlog:
    __slots__ = ("_chunks", "_head", "size")

    def __init__(self) -> None:
        self._chunks: deque[bytes | bytearray] = deque()
        self._head = 0  # bytes of the first chunk already written
        self.size = 0  # bytes waiting (what `len` says, read as an attribute on the hot path)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __iadd__(self, data: bytes | bytearray) -> Backlog:
        """Queue ``data`` (not copied: the caller must not change it afterwards)."""
        if data:
            self._chunks.append(data)
            self.size += len(data)
        return self

    def __bytes__(self) -> bytes:
        return b"".join(self._chunks)[self._head :]

    @property
    def chunks(self) -> int:
        """Chunks held (each freed once the pipe took all of it)."""
        return len(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self._head = self.size = 0

    def write_to(self, fd: int) -> int:
        """One ``writev`` of the first chunks to ``fd``; what it took is dropped. Bytes
        written; raises what ``os.writev`` raises (BlockingIOError on a full pipe)."""
        chunks = self._chunks
        head = self._head
        first = memoryview(chunks[0])[head:] if head else chunks[0]
        written = os.writev(fd, [first, *islice(chunks, 1, IOV_MAX)])
        del first  # (a view keeps a bytearray from being resized)
        self.size -= written
        taken = head + written
        while chunks and taken >= len(chunks[0]):
            taken -= len(chunks.popleft())
        self._head = taken
        return written
