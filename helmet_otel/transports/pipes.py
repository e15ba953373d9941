"""Byte streams over pipes and ttys, on asyncio's low-level pipe transports.

anyio's process streams cost ~50 us per round trip more than the raw transports, so the stdio
transport reads and writes through these. Regular files (``helmet-otel cmd < file``) cannot be
polled; for them the same interface is served by blocking I/O in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections import deque
from typing import IO, Protocol, cast

import anyio

READ_LIMIT = 4 * 1024 * 1024  # pause reading when this much is buffered and not consumed
WRITE_HIGH_WATER = 1024 * 1024


class ByteReader(Protocol):
    async def receive(self) -> bytes:
        """The next chunk, or ``b""`` at end of stream."""
        ...

    def close(self) -> None: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None:
        """Queue ``data``; raises `BrokenPipeError` once the other end is gone."""
        ...

    async def drain(self) -> None: ...

    async def flush(self) -> None:
        """Wait until every queued byte is written."""
        ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class _PipeReader(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.ReadTransport, transport)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > READ_LIMIT and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _PipeWriter(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.WriteTransport | None = None
        self._paused = False
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    @property
    def closed(self) -> bool:
        return self._closed or self._transport is None or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.closed:
            raise BrokenPipeError("pipe closed")
        assert self._transport is not None
        self._transport.write(data)

    async def drain(self) -> None:
        while self._paused and not self._closed:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(waiter)
            await waiter
        if self._closed:
            raise BrokenPipeError("pipe closed")

    async def flush(self) -> None:
        """Wait until every queued byte is written (before closing at shutdown)."""
        if self._transport is None or self.closed:
            return
        self._transport.set_write_buffer_limits(high=0, low=0)  # pauses while anything is queued
        await self.drain()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class _ThreadReader:
    """Blocking reads in a worker thread, for regular files."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    async def receive(self) -> bytes:
        return await anyio.to_thread.run_sync(os.read, self._file.fileno(), 1 << 20)

    def close(self) -> None:
        self._file.close()


class _ThreadWriter:
    """Blocking writes in a worker thread, for regular files."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._queue: list[bytes] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: bytes) -> None:
        if self._closed:
            raise BrokenPipeError("file closed")
        self._queue.append(data)

    async def flush(self) -> None:
        await self.drain()

    async def drain(self) -> None:
        if self._queue:
            data = b"".join(self._queue)
            self._queue.clear()
            await anyio.to_thread.run_sync(self._write_all, data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        fd = self._file.fileno()
        while view:
            view = view[os.write(fd, view) :]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._queue:
                self._write_all(b"".join(self._queue))
                self._queue.clear()
            self._file.close()


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    # /dev/null and other non-tty character devices cannot be registered with epoll.
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


async def open_reader(file: IO[bytes]) -> ByteReader:
    if not _pollable(file.fileno()):
        return _ThreadReader(file)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.connect_read_pipe(lambda: _PipeReader(loop), file)
    return protocol


async def open_writer(file: IO[bytes]) -> ByteWriter:
    if not _pollable(file.fileno()):
        return _ThreadWriter(file)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.connect_write_pipe(lambda: _PipeWriter(loop), file)
    return protocol
