"""The frame format between the relay and the worker: every frame type through a real pipe."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import orjson
import pytest

from helmet_otel.config import ProxyOptions
from helmet_otel.core.verdicts import Decision, Finding
from helmet_otel.protocol.message import JsonId, inspect
from helmet_otel.telemetry import frames
from helmet_otel.telemetry.frames import (
    CUT,
    FLAG_PROXY,
    FLAG_REPLIED,
    NOT_JSON,
    Close,
    Config,
    Dropped,
    End,
    Failed,
    Frame,
    Info,
    Msg,
    Security,
    Segment,
    Start,
    Stderr,
    Summary,
    read_batch,
    summarize,
)
from helmet_otel.telemetry.spans import client_link

TRACE = (1 << 128) - 1  # both 64-bit halves in use
CLIENT_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    reader, writer = os.pipe()
    yield reader, writer
    for fd in (reader, writer):
        try:
            os.close(fd)
        except OSError:
            pass


def _through(pipe: tuple[int, int], data: bytes) -> list[list[Frame] | None]:
    """Write ``data``, close the pipe, and read batches until the end."""
    reader, writer = pipe
    os.write(writer, data)
    os.close(writer)
    batches: list[list[Frame] | None] = []
    with os.fdopen(reader, "rb") as stream:
        while True:
            batches.append(read_batch(stream))
            if batches[-1] is None:
                return batches


def _summary(kind: str, msg_id: JsonId | None = None, method: str | None = None) -> Summary:
    return Summary(kind, msg_id, method, None, None, None, None, False, None, False, False)


def test_every_frame_type_round_trips(pipe: tuple[int, int]) -> None:
    shared = {"name": "client", "version": "1"}
    pickled_frames: list[Frame] = [
        Config(ProxyOptions(store="/tmp/x.db", redact=["k"], worker_sched="normal"), "svc",
               4242, "host", "http"),
        Start(7, 10, "sid-7", "stdio", TRACE, 1 << 63, {"command": ["srv", "-v"], "pid": 9,
                                                        "cwd": "/tmp"}),
        Start(8, 11, "sid-8", "http", 5, 6, {"url": "http://upstream/mcp"}),
        Info(8, "legacy", "2025-06-18", shared, {"name": "srv"}, "mcp-8"),
        Segment(7, 12, 99, 100),
        Stderr(7, 13, b"warn: \xff\n"),
        Failed(8, 14, "no such file"),
        Security(7, 14, 77, Decision("sec-1", "deny", False, "tools/call", "get-env"),
                 (Finding("policy_block", "medium", "sec-1", "get-env", "denied"),),
                 {"mode": "enforce", "rules": [{"id": "sec-1"}]}),
        Security(8, 14, 0, None, (), None),
        End(7, 15, 3, "server exited with status 3", 4, 1, {"tools/call": 2}, "legacy",
            "2025-11-25", shared, None),
        Close(16, "proxy received SIGTERM"),
    ]  # fmt: skip
    records = b"".join(frames.pickled(f) for f in pickled_frames)
    (got, end) = _through(pipe, frames.batch(records))
    assert got == pickled_frames
    assert [type(f) for f in got or []] == [type(f) for f in pickled_frames]
    assert end is None


def test_messages_whole_and_cut(pipe: tuple[int, int]) -> None:
    request = b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo",' \
        b'"_meta":{"traceparent":"' + CLIENT_TP.encode() + b'"}}}\n'  # fmt: skip
    proxy_error = b'{"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"gone"}}\n'
    head = Msg(7, 5, 0, 1 << 20, b'{"jsonrpc":"2.0","id":4,"meth', _summary("request", 4, "x"),
               1, 2, 64, None)  # fmt: skip
    records = (
        frames.whole(7, 0, 0, 1, request, (1 << 64) - 1, 1 << 63, weight=64)
        + frames.whole(9, 1, FLAG_PROXY, 2, proxy_error, 0, 0)
        + frames.whole(7, 0, FLAG_REPLIED, 3, b"nope\n", 0, 0)
        + frames.pickled(head)
    )
    (got, _) = _through(pipe, frames.batch(records, queue_full=3, busy=4))
    assert got == [
        Dropped("relay_queue_full", 3),
        Dropped("relay_busy", 4),
        Msg(7, 1, 0, len(request), request,
            Summary("request", 3, "tools/call", "echo", None, None, None, False, CLIENT_TP,
                    False, False),
            (1 << 64) - 1, 1 << 63, 64, orjson.loads(request)),
        Msg(9, 2, 1, len(proxy_error), proxy_error,
            Summary("error", 3, None, None, None, -32000, "gone", False, None, False, True),
            0, 0, 1, orjson.loads(proxy_error)),
        Msg(7, 3, 0, 5, b"nope\n",
            Summary("invalid", None, None, None, None, None, None, False, None, True, False),
            0, 0, 1, NOT_JSON),
        head._replace(parsed=CUT),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        # beyond 64 bits: orjson would make the id a float
        (b'{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}',
         {"jsonrpc": "2.0", "id": 18446744073709551616, "method": "ping"}),
        # a lone surrogate is read, and recorded as U+FFFD: no sink can store or encode it
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"s":"\\ud834"}}',
         {"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"s": "\ufffd"}}),
        (b'{"jsonrpc":"2.0","id":2,"result":{"n":1e400}}',
         {"jsonrpc": "2.0", "id": 2, "result": {"n": float("inf")}}),
        (b'{"jsonrpc":"2.0","id":2.5,"result":{}}', {"jsonrpc": "2.0", "id": 2.5, "result": {}}),
    ],
)  # fmt: skip
def test_messages_are_parsed_exactly(
    pipe: tuple[int, int], raw: bytes, parsed: dict[str, object]
) -> None:
    (got, _) = _through(pipe, frames.batch(frames.whole(1, 0, 0, 1, raw, 0, 0)))
    assert got is not None
    (msg,) = got
    assert type(msg) is Msg
    assert msg.parsed == parsed
    assert msg.summary.id == parsed["id"]
    assert type(msg.summary.id) is type(parsed["id"])


def test_too_deep_json_is_not_json(pipe: tuple[int, int]) -> None:
    raw = b"[" * 5000 + b"]" * 5000  # deeper than orjson and the standard library go
    (got, _) = _through(pipe, frames.batch(frames.whole(1, 0, 0, 1, raw, 0, 0)))
    assert got is not None and type(got[0]) is Msg and got[0].parsed is NOT_JSON


def test_a_torn_batch_is_the_end(pipe: tuple[int, int]) -> None:
    whole = frames.batch(frames.pickled(Close(1, "bye")))
    assert _through(pipe, whole + whole[:-1]) == [[Close(1, "bye")], None]


def test_summarize_reads_the_facts_once() -> None:
    call = inspect(
        b'{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"demo://x",'
        b'"_meta":{"traceparent":"tp"}}}'
    )
    assert summarize(call, True, False) == Summary(
        "request", "a", "resources/read", None, "demo://x", None, None, False, "tp", False, False
    )
    assert summarize(call, False, True).client_traceparent is None  # only a client's request
    tool_error = inspect(b'{"jsonrpc":"2.0","id":1,"result":{"isError":true}}')
    assert summarize(tool_error, False, False, proxy=True) == Summary(
        "response", 1, None, None, None, None, None, True, None, False, True
    )


_MESSAGES = [
    b'{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"demo://x",'
    b'"_meta":{"traceparent":"tp"}}}',
    b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","uri":3,'
    b'"_meta":{"traceparent":5}}}',
    b'{"jsonrpc":"2.0","id":1.5,"method":"prompts/get","params":{"name":"p"}}',
    b'{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":["x"]}}',
    b'{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"n"}}',
    b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}',
    b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x","_meta":{"traceparent":"t"}}}',
    b'{"jsonrpc":"2.0","id":2,"method":"ping","params":[1]}',
    b'{"jsonrpc":"2.0","id":1,"result":{"isError":true}}',
    b'{"jsonrpc":"2.0","id":1,"result":{"isError":1}}',
    b'{"jsonrpc":"2.0","id":"z","result":null}',
    b'{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no"},"result":{"isError":true}}',
    b'{"jsonrpc":"2.0","id":3,"error":{"code":"x","message":7}}',
    b'{"jsonrpc":"2.0","id":3,"error":"flat"}',
    b'{"jsonrpc":"2.0","id":4,"method":5,"result":{}}',
    b'{"jsonrpc":"2.0","id":4}',
    b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"result":{}}',
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
    b'"text"',
    b"not json",
]


@pytest.mark.parametrize("flags", [0, 1, FLAG_REPLIED, 1 | FLAG_PROXY])
def test_decoding_a_message_gives_what_inspect_and_summarize_give(flags: int) -> None:
    """The worker reads an ``M`` record's summary straight from its JSON value (no `Message`):
    the same facts as the relay's `inspect` then `summarize`."""
    decoded = frames.decode(
        b"".join(frames.whole(1, flags & 1, flags & ~1, 5, raw, 2, 3) for raw in _MESSAGES)
    )
    expected = [
        summarize(inspect(raw), not flags & 1, bool(flags & FLAG_REPLIED), bool(flags & FLAG_PROXY))
        for raw in _MESSAGES
    ]
    assert [f.summary for f in decoded if isinstance(f, Msg)] == expected
    big = decoded[16]
    assert isinstance(big, Msg) and big.summary.id == 123456789012345678901234567890
    assert isinstance(decoded[-1], Msg) and decoded[-1].parsed is NOT_JSON


@pytest.mark.parametrize(
    ("traceparent", "linked"),
    [
        (CLIENT_TP, ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # version ff: invalid
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),  # no flags
        ("garbage", None),
        (None, None),
    ],
)
def test_client_traceparent_becomes_a_link_only_when_valid(
    traceparent: str | None, linked: tuple[str, str] | None
) -> None:
    link = client_link(traceparent)
    if linked is None:
        assert link is None
    else:
        assert link is not None
        assert (f"{link.trace_id:032x}", f"{link.span_id:016x}") == linked
        assert link.remote
        assert dict(link.attributes or {}) == {"helmet.link": "client_traceparent"}


def test_the_batch_reader_takes_whole_batches_however_the_pipe_splits_them(
    pipe: tuple[int, int],
) -> None:
    """What `read_batch` reads one batch at a time, `BatchReader` reads as the pipe delivers
    it: several batches at once, a batch split across reads, one larger than its buffer; a
    torn last batch is the end."""
    body = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s"}}'
    batches = [
        frames.batch(frames.whole(7, 0, 0, i, body % (i, b"x" * 40 * i), i + 1, i + 2)
                     + frames.pickled(Segment(7, i, 99, 100)), queue_full=i % 2, busy=i % 3)
        for i in range(1, 8)
    ]  # fmt: skip
    data = b"".join(batches)
    expected = [f for b in batches for f in _through_once(b)]
    reader_fd, writer = pipe
    reader = frames.BatchReader(reader_fd, size=64)  # smaller than a batch: it grows
    got: list[Frame] = []
    for at in range(0, len(data), 37):  # split anywhere
        os.write(writer, data[at : at + 37])
        more = reader.read()  # (what was written: it does not block)
        assert more is not None
        got += more
    assert got == expected
    os.write(writer, batches[0][:-1])  # torn
    os.close(writer)
    assert reader.read() == []
    assert reader.read() is None


def _through_once(data: bytes) -> list[Frame]:
    frames_read = read_batch(io.BytesIO(data))
    assert frames_read is not None
    return frames_read
