"""The relay's backlog toward the worker's pipe: chunks written in order with writev, each freed
as soon as the pipe took all of it (nothing joined, so no buffer the size of the backlog)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import pytest

from helmet_otel.telemetry.backlog import Backlog

PAGE = 4096


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PAGE)  # the smallest pipe: writes are cut short
    os.set_blocking(w, False)
    yield r, w
    os.close(r)
    os.close(w)


def test_chunks_arrive_in_order_and_each_is_freed_once_written(pipe: tuple[int, int]) -> None:
    r, w = pipe
    backlog = Backlog()
    sent = [bytes([i % 251]) * (100 + 37 * i) for i in range(200)]  # 100 B .. 7.5 KB, 776 KB
    for chunk in sent:
        backlog += chunk
    backlog += b""  # nothing to queue
    total = sum(map(len, sent))
    assert (len(backlog), backlog.chunks) == (total, 200)
    ends: list[int] = []  # where each chunk ends in the stream
    for chunk in sent:
        ends.append((ends[-1] if ends else 0) + len(chunk))
    received = bytearray()
    written = 0
    while backlog:
        try:
            written += backlog.write_to(w)
        except BlockingIOError:
            received += os.read(r, PAGE)
            continue
        # held: exactly the chunks the pipe has not taken all of
        assert backlog.chunks == sum(1 for e in ends if e > written)
        assert len(backlog) == total - written
    while len(received) < total:
        received += os.read(r, PAGE)
    assert received == b"".join(sent) and written == total
    assert (len(backlog), backlog.chunks, bytes(backlog)) == (0, 0, b"")


def test_bytes_and_clear(pipe: tuple[int, int]) -> None:
    r, w = pipe
    backlog = Backlog()
    backlog += b"abc"
    backlog += bytearray(b"defgh")
    assert backlog.write_to(w) == 8 and os.read(r, 100) == b"abcdefgh"
    backlog += b"x" * (3 * PAGE)
    backlog += b"yz"
    taken = backlog.write_to(w)  # the pipe takes a page: the rest of the chunk stays
    assert taken == PAGE and bytes(backlog) == b"x" * (2 * PAGE) + b"yz"
    assert (len(backlog), backlog.chunks) == (2 * PAGE + 2, 2)
    backlog.clear()
    assert (len(backlog), backlog.chunks, bool(backlog)) == (0, 0, False)
