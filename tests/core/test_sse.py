"""`protocol.sse.SseSplitter`: events come out whole, with their own bytes, however the stream
is cut into chunks, for every line end the format allows."""

from __future__ import annotations

from helmet_otel.protocol.sse import SseEvent, SseSplitter, sse_message

STREAM = (
    b": keep-alive\n\n"
    b'id: 7\nevent: message\ndata: {"a":1}\n\n'
    b'retry: 1000\r\nid: 8\r\ndata: {"b":\r\ndata: 2}\r\n\r\n'
    b"event: endpoint\rdata: /messages?x=1\r\r"
    b"data: tail-without-end\n"
)


def split_all(chunks: list[bytes]) -> tuple[list[SseEvent], bytes]:
    splitter = SseSplitter()
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(splitter.feed(chunk))
    return events, splitter.pending


def test_events_and_their_bytes() -> None:
    events, pending = split_all([STREAM])
    assert [(e.event, e.data, e.id, e.retry) for e in events] == [
        ("message", None, None, None),
        ("message", b'{"a":1}', "7", None),
        ("message", b'{"b":\n2}', "8", 1000),
        ("endpoint", b"/messages?x=1", None, None),
    ]
    assert b"".join(e.raw for e in events) + pending == STREAM
    assert pending == b"data: tail-without-end\n"


def test_every_cut_gives_the_same_events() -> None:
    whole, _ = split_all([STREAM])
    for cut in range(1, len(STREAM)):
        for second in (cut + 1, cut + 3, len(STREAM)):
            chunks = [STREAM[:cut], STREAM[cut:second], STREAM[second:]]
            events, pending = split_all([c for c in chunks if c])
            assert events == whole, (cut, second)
            assert pending == b"data: tail-without-end\n"


def test_a_large_event_in_small_chunks() -> None:
    data = b"x" * 3_000_000
    stream = sse_message(data, "e1") + sse_message(b"{}")
    events, pending = split_all([stream[i : i + 4096] for i in range(0, len(stream), 4096)])
    assert [(e.data, e.id) for e in events] == [(data, "e1"), (b"{}", None)]
    assert pending == b""
