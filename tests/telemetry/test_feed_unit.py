"""The relay side of telemetry, in process: the frames it hands over and the bytes it forwards.

The worker is replaced by a pipe we read back with `frames.read_batch`, so these tests see the
exact frames the recorder would get.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from helmet_otel.config import ProxyOptions
from helmet_otel.core.envelope import Direction, Envelope
from helmet_otel.core.interceptor import BaseInterceptor, Interceptor
from helmet_otel.core.relay import UPSTREAM_GONE_CODE, Relay
from helmet_otel.core.session import Session
from helmet_otel.protocol.message import REQUEST, error_response
from helmet_otel.telemetry import feed as feed_module
from helmet_otel.telemetry import frames, governor
from helmet_otel.telemetry.feed import TelemetryFeed
from helmet_otel.telemetry.frames import Frame, read_batch
from helmet_otel.telemetry.session_feed import PROPAGATE_MAX_BYTES, SessionFeed

TRACEPARENT = re.compile(rb'"traceparent":"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])"')
CLIENT_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class PipeWorker:
    """Stands in for the worker process: its stdin is a pipe the test reads."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, feed_module.PIPE_SIZE)  # as the real one
        self.reader = os.fdopen(read_fd, "rb")
        self.stdin = os.fdopen(write_fd, "wb")
        os.set_blocking(write_fd, False)

    def poll(self) -> int:
        return 0

    def close(self) -> None:
        self.stdin.close()
        self.reader.close()


class PipeFeed(TelemetryFeed):
    def _spawn_worker(self, env: Any) -> Any:
        self.pipe = PipeWorker()
        return self.pipe

    def frames(self) -> list[Frame]:
        """Hand over what is batched and read it back, without the config frame."""
        self._flush()
        self.pipe.stdin.close()
        got: list[Frame] = []
        while (batch := read_batch(self.pipe.reader)) is not None:
            got += batch
        return [f for f in got if not isinstance(f, frames.Config)]


@pytest.fixture
def make_feed() -> Iterator[Any]:
    feeds: list[PipeFeed] = []

    def make(env: dict[str, str] | None = None, **options: Any) -> PipeFeed:
        feed = PipeFeed(ProxyOptions(no_store=True, **options), env or {}, service_name="t")
        feeds.append(feed)
        return feed

    yield make
    for feed in feeds:
        feed.pipe.close()


def open_session(feed: TelemetryFeed, *before: Interceptor) -> tuple[Session, SessionFeed, Relay]:
    """A session, its telemetry interceptor (after ``before``) and its relay."""
    session = Session(transport="stdio")
    session_feed = feed.for_session(session)
    return session, session_feed, Relay(session, [*before, session_feed])


def messages(got: list[Frame]) -> list[frames.Msg]:
    return [f for f in got if isinstance(f, frames.Msg)]


def line(obj: object, ending: bytes = b"\n") -> bytes:
    return orjson.dumps(obj) + ending


def call(msg_id: object, params: object = None, method: str = "tools/call") -> dict[str, object]:
    obj: dict[str, object] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        obj["params"] = params
    return obj


def route(relay: Relay, direction: Direction, lines: list[bytes]) -> list[bytes]:
    routed = relay.route(direction, lines)
    relay.forwarded(routed)
    return routed.forward


def ours(wire: bytes, trace_id: int, span_id: int) -> bytes:
    """The wire with our own traceparent (checked against the ids) replaced by ``TP``."""
    match = TRACEPARENT.search(wire)
    assert match is not None, wire
    assert (int(match[1], 16), int(match[2], 16), match[3]) == (trace_id, span_id, b"01")
    return wire[: match.start()] + b'"traceparent":"TP"' + wire[match.end() :]


def test_summaries_carry_the_protocol_facts(make_feed: Any) -> None:
    feed = make_feed(propagate=False)
    _, session_feed, relay = open_session(feed)
    requests = [
        line(call(1, {"name": "echo", "uri": "u1", "_meta": {"traceparent": CLIENT_TP}})),
        line(call("p", {"name": "greet", "uri": 5}, "prompts/get")),
        line(call(3, {"uri": "file:///é", "name": "n"}, "resources/read")),
        line(call(4, [1, 2])),
        line({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"uri": "u"}}),
        b"\r\n",
        b"not json\n",
    ]
    responses = [
        line({"jsonrpc": "2.0", "id": 1, "result": {"isError": True}}),
        line({"jsonrpc": "2.0", "id": "p", "result": {"isError": 1}}),
        line({"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "bad"}}),
        line({"jsonrpc": "2.0", "id": 4, "error": {"code": True, "message": 7}}),
    ]
    assert route(relay, Direction.C2S, requests) == requests
    assert route(relay, Direction.S2C, responses) == responses
    got = feed.frames()
    msgs = messages(got)
    assert msgs == got  # nothing but messages (the session learned nothing)
    assert [(f.s2c, f.size, f.body, f.summary) for f in msgs] == [
        (0, len(requests[0]), requests[0],
         ("request", 1, "tools/call", "echo", "u1", None, None, False, CLIENT_TP, False, False, None)),
        (0, len(requests[1]), requests[1],
         ("request", "p", "prompts/get", "greet", None, None, None, False, None, False, False, None)),
        (0, len(requests[2]), requests[2],
         ("request", 3, "resources/read", None, "file:///é", None, None, False, None, False,
          False, None)),
        (0, len(requests[3]), requests[3],
         ("request", 4, "tools/call", None, None, None, None, False, None, False, False, None)),
        (0, len(requests[4]), requests[4],
         ("notification", None, "notifications/progress", None, "u", None, None, False, None,
          False, False, None)),
        (0, len(requests[6]), requests[6],
         ("invalid", None, None, None, None, None, None, False, None, False, False, None)),
        (1, len(responses[0]), responses[0],
         ("response", 1, None, None, None, None, None, True, None, False, False, None)),
        (1, len(responses[1]), responses[1],
         ("response", "p", None, None, None, None, None, False, None, False, False, None)),
        (1, len(responses[2]), responses[2],
         ("error", 3, None, None, None, -32602, "bad", False, None, False, False, None)),
        (1, len(responses[3]), responses[3],
         ("error", 4, None, None, None, None, None, False, None, False, False, None)),
    ]  # fmt: skip
    assert [f.session for f in msgs] == [session_feed.key] * 10 == [1] * 10
    for frame in msgs[:4]:  # requests get two distinct, non-zero 64-bit span ids (their trace
        # is the session's current one, which Start and Segment frames tell)
        assert 0 < frame.server_span_id < 1 << 64 and 0 < frame.client_span_id < 1 << 64
        assert frame.server_span_id != frame.client_span_id
    assert [(f.server_span_id, f.client_span_id) for f in msgs[4:]] == [(0, 0)] * 6
    # the worker gets each message's parse with it, and parses nothing twice
    assert [f.weight for f in msgs] == [1] * 10  # every call traced: each stands for itself
    assert [f.parsed for f in msgs] == [orjson.loads(r) for r in requests[:5]] + [
        frames.NOT_JSON
    ] + [orjson.loads(r) for r in responses]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r\r\n", b"\n\r\n", b""])
def test_injection_keeps_the_line_ending(make_feed: Any, ending: bytes) -> None:
    feed = make_feed()
    _, session_feed, relay = open_session(feed)
    routed = relay.route(Direction.C2S, [line(call(1, {"name": "é"}), ending)])
    env = routed.envelopes[0]
    assert ours(routed.forward[0], session_feed.trace_id, env.client_span_id) == (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{'
        '"_meta":{"traceparent":"TP"},"name":"é"}}'.encode()
        + ending
    )


# The entry is spliced into the sender's bytes: whitespace, number spelling, big integers,
# escapes and key order are forwarded exactly as written.
@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n',
         b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"TP"}}}\n'),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":null}\n',
         b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"TP"}}}\n'),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{}}\n',
         b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"TP"}}}\n'),
        (b'{"id":1, "method":"x", "params":{"_meta":null, "a":1.0e3}}\n',
         b'{"id":1, "method":"x", "params":{"_meta":{"traceparent":"TP"}, "a":1.0e3}}\n'),
        (b'{"id":1,"method":"x","params":{"_meta":{"p":7,"traceparent":"00-x"},"n":"\\u00e9"}}\n',
         b'{"id":1,"method":"x","params":{"_meta":{"p":7,"traceparent":"TP"},"n":"\\u00e9"}}\n'),
        (b'{"id":1,"method":"x","params":{"_meta":{},"v":18446744073709551616}}\n',
         b'{"id":1,"method":"x","params":{"_meta":{"traceparent":"TP"},"v":18446744073709551616}}\n'),
        (b'{ "id" : 1 , "method" : "x" , "params" : { "f" : 0.1000000000000000055511151231257827,'
         b' "g" : 1.50 , "h" : 1E5 } }\n',
         b'{ "id" : 1 , "method" : "x" , "params" : {"_meta":{"traceparent":"TP"}, "f" : '
         b'0.1000000000000000055511151231257827, "g" : 1.50 , "h" : 1E5 } }\n'),
        (b'{"id":1,"method":"x","params":{"a":{"params":{"_meta":1}},"_meta":{"k":"params"}}}\n',
         b'{"id":1,"method":"x","params":{"a":{"params":{"_meta":1}},"_meta":{"traceparent":"TP",'
         b'"k":"params"}}}\n'),
    ],
)  # fmt: skip
def test_injection_writes_our_traceparent_into_params_meta(
    make_feed: Any, request_line: bytes, expected: bytes
) -> None:
    feed = make_feed()
    _, session_feed, relay = open_session(feed)
    routed = relay.route(Direction.C2S, [request_line])
    client_span = routed.envelopes[0].client_span_id
    assert ours(routed.forward[0], session_feed.trace_id, client_span) == expected


@pytest.mark.parametrize(
    "request_line",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":5}}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":[]}}\r\n',
        # duplicate keys: the parse keeps the last, a splice cannot be sure where: untouched
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1},"params":{"b":2}}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{},"_meta":{"b":2}}}\n',
        # a member name spelled with escapes is not matched by bytes: untouched
        b'{"jsonrpc":"2.0","id":1,"method":"x","par\\u0061ms":{"a":1}}\n',
        b'{"jsonrpc":"2.0","method":"notifications/x","params":{}}\n',
        b'{"jsonrpc":"2.0","id":1,"result":{}}\n',
        b"[1]\n",
    ],
)
def test_what_cannot_carry_trace_context_passes_byte_for_byte(
    make_feed: Any, request_line: bytes
) -> None:
    feed = make_feed()
    _, _, relay = open_session(feed)
    routed = relay.route(Direction.C2S, [request_line])
    assert routed.forward == [request_line] and routed.forward[0] is request_line


def test_huge_requests_and_server_requests_are_not_rewritten(make_feed: Any) -> None:
    feed = make_feed()
    _, session_feed, relay = open_session(feed)
    huge = line(call(1, {"name": "big", "arguments": {"t": "x" * PROPAGATE_MAX_BYTES}}))
    assert route(relay, Direction.C2S, [huge])[0] is huge
    server_request = line(call(9, {"_meta": {"traceparent": CLIENT_TP}}, "sampling/createMessage"))
    routed = relay.route(Direction.S2C, [server_request])
    relay.forwarded(routed)
    assert routed.forward[0] is server_request
    assert routed.envelopes[0].server_span_id and routed.envelopes[0].client_span_id
    # a huge message goes over as its head, with the summary the relay worked out; a
    # server's traceparent is not the client's
    head, server = messages(feed.frames())
    cap = feed.body_cap
    assert (head.session, head.size, head.body, head.summary) == (
        session_feed.key,
        len(huge),
        huge[:cap],
        ("request", 1, "tools/call", "big", None, None, None, False, None, False, False, None),
    )
    assert (head.weight, head.parsed) == (1, frames.CUT)
    assert server.summary.client_traceparent is None
    assert server.parsed == orjson.loads(server_request)


def test_sampled_flag_follows_the_sampler(make_feed: Any) -> None:
    feed = make_feed({"OTEL_TRACES_SAMPLER": "always_off"})
    _, _, relay = open_session(feed)
    wire = route(relay, Direction.C2S, [line(call(1))])[0]
    match = TRACEPARENT.search(wire)
    assert match is not None and match[3] == b"00"


def test_a_long_session_rolls_over_to_new_traces(make_feed: Any) -> None:
    feed = make_feed(trace_max_requests=2)
    _, session_feed, relay = open_session(feed)
    first_trace = session_feed.trace_id
    traces: list[int] = []
    roots: list[int] = []
    for i in range(5):
        routed = relay.route(Direction.C2S, [line(call(i))])
        relay.forwarded(routed)
        env = routed.envelopes[0]
        trace_id = session_feed.trace_id  # (after a roll-over: the request's new trace)
        assert ours(routed.forward[0], trace_id, env.client_span_id)
        traces.append(trace_id)
        roots.append(session_feed.root_span_id)
    assert traces[:2] == [first_trace] * 2 and traces[2] == traces[3] != first_trace
    assert traces[4] not in (first_trace, traces[2])
    assert session_feed.trace_id == traces[4]
    # a message's trace is the one the session's Start or the last Segment before it named
    tags = [
        ("segment", f.trace_id) if isinstance(f, frames.Segment) else "msg"
        for f in feed.frames()
        if isinstance(f, frames.Segment | frames.Msg)
    ]
    assert tags == [
        "msg", "msg",
        ("segment", traces[2]), "msg", "msg",
        ("segment", traces[4]), "msg",
    ]  # fmt: skip


def response(msg_id: object) -> bytes:
    return line({"jsonrpc": "2.0", "id": msg_id, "result": {}})


def test_a_full_buffer_sheds_whole_calls_and_keeps_session_events(make_feed: Any) -> None:
    feed = make_feed()
    session, session_feed, relay = open_session(feed)
    route(relay, Direction.C2S, [line(call("traced"))])
    feed._flush()
    feed.backlog += b"x" * feed.options.telemetry_buffer  # the worker is not reading
    # a new call is shed at once: no ids, no splice, no record
    routed = relay.route(Direction.C2S, [line(call("shed"))])
    relay.forwarded(routed)
    assert routed.forward == [line(call("shed"))] and routed.envelopes[0].server_span_id == 0
    assert feed.batch == b"" and (feed._shed_full, feed._shed_busy) == (1, 0)
    session_feed.upstream_stderr(session, b"boom\n", 5)  # shed too
    # the answer to the shed call follows it; the answer to the traced call goes regardless
    route(relay, Direction.S2C, [response("shed"), response("traced")])
    session.ended_ns = 7
    session_feed.session_ended(session)  # session events are never shed
    assert (feed._shed_full, feed._shed_busy) == (3, 0)
    feed.backlog.clear()  # the worker caught up
    got = feed.frames()
    assert [type(f) for f in got] == [frames.Msg, frames.Dropped, frames.Msg, frames.End]
    traced, dropped, answer, end = got
    assert isinstance(traced, frames.Msg) and isinstance(answer, frames.Msg)
    assert isinstance(end, frames.End)
    assert traced.body == line(call("traced"))
    assert dropped == frames.Dropped("relay_queue_full", 3)
    assert answer.body == response("traced") and end.ts == 7


def test_a_busy_relay_traces_one_call_in_every(make_feed: Any) -> None:
    feed = make_feed()
    _, _, relay = open_session(feed)
    feed.every = 4
    requests = [line(call(i)) for i in range(8)]
    routed = relay.route(Direction.C2S, requests)
    relay.forwarded(routed)
    traced = [i for i, env in enumerate(routed.envelopes) if env.server_span_id]
    assert traced == [3, 7]
    for i, wire in enumerate(routed.forward):  # only traced calls carry trace context
        assert (TRACEPARENT.search(wire) is not None) == (i in traced)
        assert i in traced or wire is requests[i]
    note = line({"jsonrpc": "2.0", "method": "notifications/progress"})
    cancel = line({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": 3}})  # fmt: skip
    # the first cancellation of a traced call is never shed; a repeat is a message like any
    route(relay, Direction.C2S, [cancel] * 2)
    route(relay, Direction.S2C, [response(i) for i in range(8)] + [note] * 4)
    got = feed.frames()
    assert got[0] == frames.Dropped("relay_busy", 6 + 1 + 6 + 3)
    assert [type(f) for f in got[1:]] == [frames.Msg] * 6
    msgs = [(f.summary.kind, f.summary.id, f.summary.method, f.weight) for f in messages(got)]
    assert msgs == [
        ("request", 3, "tools/call", 4), ("request", 7, "tools/call", 4),
        ("notification", None, "notifications/cancelled", 1),
        ("response", 3, None, 4), ("response", 7, None, 4),
        ("notification", None, "notifications/progress", 4),
    ]  # fmt: skip


def test_a_response_stands_for_as_many_calls_as_its_request(make_feed: Any) -> None:
    feed = make_feed()
    _, _, relay = open_session(feed)
    route(relay, Direction.C2S, [line(call(1))])  # traced while every call is
    feed.every = 4  # the governor sheds before the answer comes back
    route(relay, Direction.C2S, [line(call(i)) for i in range(2, 6)])  # 4 is traced
    feed.every = 2  # ... and less before the answers come back
    route(relay, Direction.S2C, [response(i) for i in range(1, 6)])
    got = feed.frames()
    msgs = [(f.summary.kind, f.summary.id, f.weight) for f in messages(got)]
    assert msgs == [
        ("request", 1, 1), ("request", 4, 4), ("response", 1, 1), ("response", 4, 4),
    ]  # fmt: skip
    assert got[0] == frames.Dropped("relay_busy", 3 + 3)


def test_what_the_pipe_has_not_taken_at_the_deadline_goes_as_its_count(
    make_feed: Any,
) -> None:
    feed = make_feed(relay_busy_limit=1.0)  # (no sampling: this loop keeps the relay busy)
    session, session_feed, relay = open_session(feed)
    sent = 0
    for _ in range(2):  # the worker does not read: its pipe fills, then more waits
        while not feed.backlog:
            route(relay, Direction.C2S, [line(call(i)) for i in range(sent, sent + 200)])
            sent += 200
            feed._flush()
        route(relay, Direction.C2S, [line(call(i)) for i in range(sent, sent + 200)])
        sent += 200
        feed._flush()
    session.ended_ns = time.time_ns()
    session_feed.session_ended(session)
    feed.append(frames.Close(1, "proxy stopped"))
    feed._flush()
    taken = feed._written
    feed._cut_unsent()
    assert feed._written == taken  # the small batch waits behind the full pipe
    got: list[Frame] = []
    reader = threading.Thread(target=lambda: got.extend(_every_frame(feed.pipe.reader)))
    reader.start()
    deadline = time.monotonic() + 10
    while feed.backlog and time.monotonic() < deadline:
        feed._write()
    feed.pipe.stdin.close()
    reader.join(10)
    assert not feed.backlog
    # what the pipe took, whole (the batch it had begun included), then the count of the rest
    # and the records that are not messages: the session's end and the close
    cut = sent - len(messages(got))
    assert 0 < cut < sent and not any(isinstance(f, frames.Dropped) for f in got[:-3])
    assert [type(f) for f in got[-3:]] == [frames.Dropped, frames.End, frames.Close], got[-3:]
    assert got[-3] == frames.Dropped("shutdown_timeout", cut)
    assert type(got[-4]) is frames.Msg


def _every_frame(stream: Any) -> list[Frame]:
    found: list[Frame] = []
    while (batch := read_batch(stream)) is not None:
        found += batch
    return found


def test_the_governor_follows_the_relays_cpu(
    make_feed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = make_feed()
    clock = {"ran": 0.0, "waited": 0.0}
    monkeypatch.setattr(governor, "loop_times", lambda: (clock["ran"], clock["waited"]))
    feed._governor = governor.Governor(feed.options.relay_busy_limit)
    feed._governor._wall_mark = 0.0
    seen: list[tuple[int, int]] = []
    wall = 0.0
    # (share of the window the loop ran, share it waited for a CPU, calls): busy (95%) but
    # few calls (a start-up); busy with calls at 10,000/s for 2 windows, in between (80%) for
    # 2, idle (10%) for 7; one busy window (a burst of catching up after a stall: the
    # decision reads two windows) and an idle one; a loaded machine on which the loop waits
    # 65% of the time for a CPU, runs 25% and is idle the rest (not busy: 71%; the run time
    # and the wait together would read 90%, but the relay runs under a third of the time) for
    # 2 windows; then saturated while it gets a CPU half the time, never idle (100%)
    for ran, waited, calls in (
        [(0.95, 0, 100)] + [(0.95, 0, 1000)] * 2 + [(0.8, 0, 1000)] * 2
        + [(0.1, 0, 1000)] * 7 + [(0.9, 0, 1000), (0.1, 0, 1000)]
        + [(0.25, 0.65, 1000)] * 2 + [(0.5, 0.5, 1000)] * 2
    ):  # fmt: skip
        wall += 0.1
        clock["ran"] += 0.1 * ran
        clock["waited"] += 0.1 * waited
        feed.tick += calls
        feed._govern(wall)
        seen.append((feed.every, feed._limit))
    assert (feed.options.telemetry_buffer, feed.options.relay_busy_limit) == (4 * 1024 * 1024, 0.85)
    full_buffer = feed.options.telemetry_buffer
    busy_buffer = full_buffer // 8
    assert seen == [(1, full_buffer)] + [(64, busy_buffer)] * 4 + [
        (32, busy_buffer), (16, busy_buffer), (8, busy_buffer), (4, busy_buffer),
        (2, busy_buffer), (1, full_buffer), (1, full_buffer),
        (1, full_buffer), (1, full_buffer),
        (1, full_buffer), (1, full_buffer),
        (64, busy_buffer), (64, busy_buffer),
    ]  # fmt: skip


def test_busy_share_counts_the_wait_for_a_cpu_only_for_a_relay_that_works() -> None:
    assert governor.busy_share(0.3, 0.0, 1.0) == pytest.approx(0.3)
    # runs little, waits much, goes idle: a relay that keeps up on a loaded machine
    assert governor.busy_share(0.25, 0.65, 1.0) == pytest.approx(0.25 / 0.35)
    # runs 40% and waits 50%: the traffic and the relay take the CPUs
    assert governor.busy_share(0.4, 0.5, 1.0) == pytest.approx(0.9)
    assert governor.busy_share(0.2, 0.75, 1.0) == pytest.approx(0.8)  # idle 5%, runs 20%
    assert governor.busy_share(0.6, 0.4, 1.0) == 1.0  # never idle
    assert governor.busy_share(0.6, 0.45, 1.0) == 1.0  # (clocks read a little apart)


def test_frames_round_trip_shared_and_deeply_nested_values() -> None:
    deep: object = "leaf"
    for _ in range(200):  # deeper than the pickler's fast-mode nesting limit (50)
        deep = {"k": [deep]}
    shared = {"name": "c", "version": "1"}
    info = frames.Info(1, "modern", "2025-06-18", shared, {"deep": deep}, None)
    end = frames.End(
        1, 5, 0, "exited", 3, 1, {"tools/call": 3}, "legacy", None, shared,
        {"n": 1 << 127, "f": 2.5, "b": True, "l": [None]},
    )  # fmt: skip
    summary = frames.Summary(
        "request", "x", None, None, None, None, None, False, None, False, False
    )
    cut = frames.Msg(1, 1, 0, 9, b"{}", summary, 1, 2, 1, None)
    start = frames.Start(2, 8, "sid", "stdio", 9, 10, {"command": ["x"], "pid": 1})
    config = frames.Config(ProxyOptions(no_store=True), "t", 11, "host", "http")
    request = b'{"id":"x","method":"m"}\n'
    proxy_error = b'{"jsonrpc":"2.0","id":"x","error":{"code":-32001,"message":"no"}}\n'
    records = (
        frames.pickled(info)
        + frames.pickled(end)
        + frames.whole(2, 1, frames.FLAG_REPLIED, 3, request, 1, (1 << 64) - 1, 64)
        + frames.pickled(cut)
        + frames.whole(2, 0, 0, 4, b"nope\n", 0, 0)
        + frames.whole((1 << 32) - 1, 1, frames.FLAG_PROXY, 6, proxy_error, 0, 0)
        + frames.pickled(start)
        + frames.pickled(config)
    )
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader:
        with os.fdopen(write_fd, "wb") as writer:
            writer.write(
                frames.batch(records, 3, 4)
                + frames.batch(records[:40])
                + frames.batch(records)[:-1]
            )
        assert read_batch(reader) == [
            frames.Dropped("relay_queue_full", 3),
            frames.Dropped("relay_busy", 4),
            info,
            end,
            frames.Msg(2, 3, 1, 24, b'{"id":"x","method":"m"}\n',
             frames.Summary("request", "x", "m", None, None, None, None, False, None, True,
                            False),
             1, (1 << 64) - 1, 64, {"id": "x", "method": "m"}),
            cut._replace(parsed=frames.CUT),
            frames.Msg(2, 4, 0, 5, b"nope\n",
             frames.Summary("invalid", None, None, None, None, None, None, False, None, False,
                            False), 0, 0, 1, frames.NOT_JSON),
            frames.Msg((1 << 32) - 1, 6, 1, len(proxy_error), proxy_error,
             frames.Summary("error", "x", None, None, None, -32001, "no", False, None, False,
                            True), 0, 0, 1, orjson.loads(proxy_error)),
            start,
            config,
        ]  # fmt: skip
        with pytest.raises(Exception):  # noqa: B017  # a record cut in two is not a frame
            read_batch(reader)
        assert read_batch(reader) is None  # a torn batch is the end


def test_loop_times_count_running_time() -> None:
    ran, waited = governor.loop_times()
    started = time.thread_time()
    while time.thread_time() - started < 0.05:  # spin: run 50 ms of CPU
        pass
    ran_after, waited_after = governor.loop_times()
    assert ran_after - ran >= 0.05 and waited_after >= waited


def test_sessions_on_one_feed_keep_their_own_keys_and_traces(make_feed: Any) -> None:
    feed = make_feed()
    s1, f1, r1 = open_session(feed)
    s2, f2, r2 = open_session(feed)
    assert (f1.key, f2.key) == (1, 2) and f1.trace_id != f2.trace_id
    upstream: dict[str, object] = {"command": ["x"], "pid": 1}
    client = {"name": "c", "version": "1"}
    server = {"name": "s", "version": "2"}
    init = line(call(1, {"protocolVersion": "2025-06-18", "clientInfo": client}, "initialize"))
    init_result = line(
        {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18",
                                               "serverInfo": server}}
    )  # fmt: skip
    a1, a2 = line(call(1, {"name": "a"})), line(call(2, {"name": "a"}))
    b2 = line(call(2, {"name": "b"}))
    sent: dict[tuple[int, bytes], Envelope] = {}

    def send(relay: Relay, key: int, direction: Direction, raw: bytes) -> None:
        routed = relay.route(direction, [raw])
        relay.forwarded(routed)
        if direction is Direction.C2S:  # each session's requests carry its own trace
            trace_id = {1: f1.trace_id, 2: f2.trace_id}[key]
            assert ours(routed.forward[0], trace_id, routed.envelopes[0].client_span_id)
        sent[(key, raw)] = routed.envelopes[0]

    async def run() -> None:
        # `session_started` attaches the feed to the running loop. Nothing below awaits, so
        # the hand-over timer never fires: every frame stays in the batch until `frames()`.
        f1.session_started(s1, upstream)
        f2.session_started(s2, upstream)
        send(r2, 2, Direction.C2S, init)
        send(r1, 1, Direction.C2S, a1)
        send(r2, 2, Direction.S2C, init_result)
        send(r1, 1, Direction.C2S, a2)
        send(r2, 2, Direction.C2S, b2)
        send(r1, 1, Direction.S2C, response(1))
        send(r1, 1, Direction.S2C, response(2))
        send(r2, 2, Direction.S2C, response(2))
        s1.ended_ns, s2.ended_ns = 8, 7
        f2.session_ended(s2)
        f1.session_ended(s1)

    asyncio.run(run())
    # the same JSON-RPC ids, each matched in its own session
    assert s1.pending == {} and s2.pending == {}
    for key, request, answer in ((1, a1, response(1)), (1, a2, response(2)),
                                 (2, init, init_result), (2, b2, response(2))):  # fmt: skip
        matched = sent[(key, answer)].request
        assert matched is not None and matched.span_id == sent[(key, request)].server_span_id
    got = feed.frames()
    trace = {1: (f1.trace_id, f1.root_span_id), 2: (f2.trace_id, f2.root_span_id)}
    assert got[:2] == [
        frames.Start(1, s1.started_ns, s1.id, "stdio", *trace[1], upstream),
        frames.Start(2, s2.started_ns, s2.id, "stdio", *trace[2], upstream),
    ]
    assert got[2] == frames.Info(2, "legacy", "2025-06-18", client, None, None)
    assert got[5] == frames.Info(2, "legacy", "2025-06-18", client, server, None)
    assert got[-2:] == [
        frames.End(2, 7, None, None, 2, 0, {"initialize": 1, "tools/call": 1}, "legacy",
                   "2025-06-18", client, server),
        frames.End(1, 8, None, None, 2, 0, {"tools/call": 2}, "unknown", None, None, None),
    ]  # fmt: skip
    msgs = [f for f in got if isinstance(f, frames.Msg)]
    assert got[3:5] + got[6:-2] == msgs
    assert [(f.session, f.s2c, f.summary.kind, f.summary.id, f.body) for f in msgs] == [
        (2, 0, "request", 1, init),
        (1, 0, "request", 1, a1),
        (2, 1, "response", 1, init_result),
        (1, 0, "request", 2, a2),
        (2, 0, "request", 2, b2),
        (1, 1, "response", 1, response(1)),
        (1, 1, "response", 2, response(2)),
        (2, 1, "response", 2, response(2)),
    ]
    for f in msgs:
        if f.s2c:
            assert (f.server_span_id, f.client_span_id) == (0, 0)
        else:
            assert f.server_span_id == sent[(f.session, f.body)].server_span_id


class DenyBlocked(BaseInterceptor):
    """A policy: the tool named "blocked" may not be called."""

    def before_forward(self, env: Envelope) -> None:
        msg = env.msg
        if msg.kind is REQUEST and msg.target_name == "blocked":
            env.reply = error_response(msg.id, -32001, "Tool access denied by policy")


def test_a_call_blocked_before_the_feed_is_answered_by_the_proxy(make_feed: Any) -> None:
    feed = make_feed()
    session, session_feed, relay = open_session(feed, DenyBlocked())
    allowed = line(call(1, {"name": "echo"}))
    blocked = line(call(2, {"name": "blocked"}))
    denial = error_response(2, -32001, "Tool access denied by policy")
    routed = relay.route(Direction.C2S, [allowed, blocked])
    assert routed.replies == [denial] and len(routed.forward) == 1
    first, request, reply = routed.envelopes
    assert ours(routed.forward[0], session_feed.trace_id, first.client_span_id)
    assert (request.raw, request.reply, request.proxy) == (blocked, denial, False)
    assert (reply.direction, reply.raw, reply.proxy) == (Direction.S2C, denial, True)
    relay.forwarded(routed)
    assert reply.request is not None and reply.request.span_id == request.server_span_id
    route(relay, Direction.S2C, [response(1)])
    assert session.pending == {} and session.errors == 1
    got = feed.frames()
    msgs = messages(got)
    assert msgs == got and [f.body for f in msgs] == [allowed, blocked, denial, response(1)]
    asked, answered = msgs[1], msgs[2]
    assert (asked.s2c, asked.summary.replied, asked.summary.proxy) == (0, True, False)
    assert asked.server_span_id == request.server_span_id != 0  # traced: ids, the session's trace
    assert answered == frames.Msg(
        session_feed.key, reply.ts, 1, len(denial), denial,
        frames.Summary("error", 2, None, None, None, -32001, "Tool access denied by policy",
                       False, None, False, True),
        0, 0, 1, orjson.loads(denial),
    )  # fmt: skip
    assert answered.summary.id == asked.summary.id
    # Like every response, the proxy's answer carries no trace ids of its own: the worker
    # matches it by id to the request, whose frame carries the trace.
    assert (msgs[0].summary.replied, msgs[3].summary.proxy) == (False, False)


def test_answers_to_pending_calls_are_handed_over_as_proxy_messages(make_feed: Any) -> None:
    feed = make_feed()
    session, _, relay = open_session(feed)
    calls = [line(call(5, {"name": "slow"})), line(call("a", {"name": "slower"}))]
    sent = relay.route(Direction.C2S, calls)
    relay.forwarded(sent)
    assert all(env.server_span_id for env in sent.envelopes)
    reason = "upstream exited (status 1)"
    routed = relay.answer_pending(reason)
    answers = [error_response(5, UPSTREAM_GONE_CODE, reason),
               error_response("a", UPSTREAM_GONE_CODE, reason)]  # fmt: skip
    assert routed.forward == answers and routed.replies == []
    assert [(env.direction, env.raw, env.proxy) for env in routed.envelopes] == [
        (Direction.S2C, answer, True) for answer in answers
    ]
    relay.forwarded(routed)
    assert [env.request.span_id for env in routed.envelopes if env.request] == [
        env.server_span_id for env in sent.envelopes
    ]
    assert session.pending == {} and session.errors == 2
    # from now on the proxy answers new requests itself
    late = line(call(6))
    after = relay.route(Direction.C2S, [late])
    gone = error_response(6, UPSTREAM_GONE_CODE, reason)
    assert after.forward == [] and after.replies == [gone]
    relay.forwarded(after)
    assert session.pending == {} and session.errors == 3
    got = feed.frames()
    msgs = messages(got)
    assert msgs == got and [f.body for f in msgs] == [*calls, *answers, late, gone]

    def error(msg_id: object) -> tuple[object, ...]:
        return ("error", msg_id, None, None, None, UPSTREAM_GONE_CODE, reason, False, None,
                False, True, None)  # fmt: skip

    assert [(f.session, f.s2c, f.summary) for f in msgs] == [
        (1, 0, ("request", 5, "tools/call", "slow", None, None, None, False, None, False, False, None)),
        (1, 0, ("request", "a", "tools/call", "slower", None, None, None, False, None, False,
                False, None)),
        (1, 1, error(5)),
        (1, 1, error("a")),
        (1, 0, ("request", 6, "tools/call", None, None, None, None, False, None, True, False, None)),
        (1, 1, error(6)),
    ]  # fmt: skip
    assert [f.server_span_id != 0 for f in msgs] == [True, True, False, False, True, False]
    assert [f.weight for f in msgs] == [1] * 6


def test_a_passing_message_hands_the_batch_over_and_the_timer_covers_a_quiet_spell(
    make_feed: Any,
) -> None:
    async def scenario() -> None:
        feed = make_feed()
        session, session_feed, relay = open_session(feed)
        session_feed.session_started(session, {})  # (the loop; the start frame arms)
        loop = asyncio.get_running_loop()
        timer = feed.timer
        assert timer is not None and feed.flush_due > 0
        # due 80 ms after the first record (at 2,000 calls/s a hand-over per 160 calls); the
        # timer is the quiet spell's, at 100 ms
        assert 0.07 < (feed.flush_due - time.time_ns()) / 1e9 <= feed_module.FLUSH_DELAY == 0.08
        assert 0.09 < timer.when() - loop.time() <= feed_module.QUIET_FLUSH_DELAY == 0.1
        written = feed._written
        route(relay, Direction.C2S, [line(call(1))])
        assert feed._written == written and feed.timer is timer  # not due yet
        feed.flush_due = time.time_ns()  # (the delay has passed)
        route(relay, Direction.S2C, [response(1)])
        assert timer.cancelled() and feed._written == written  # (once the loop is free)
        await asyncio.sleep(0)  # the loop's next round: no timer, no wake-up
        assert feed._written > written and feed.timer is None
        assert not feed.batch  # the answer went with it
        # a quiet spell: the next record waits for the timer alone
        route(relay, Direction.C2S, [line(call(2))])
        quiet = feed.timer
        assert quiet is not None and feed.batch
        written = feed._written
        async with asyncio.timeout(5):
            while feed.batch:
                await asyncio.sleep(0.005)
        assert feed._written > written and not quiet.cancelled()

    asyncio.run(scenario())


def test_a_large_batch_is_handed_over_at_once(make_feed: Any) -> None:
    """However young, a batch of ``handover_bytes`` goes with the message that fills it: a
    burst's batches stay well within the worker's pipe."""

    async def scenario() -> None:
        feed = make_feed()
        session, session_feed, relay = open_session(feed)
        session_feed.session_started(session, {})
        assert feed_module.HANDOVER_BYTES == feed_module.PIPE_SIZE // 8
        timer = feed.timer
        assert timer is not None
        written = feed._written
        route(relay, Direction.C2S, [line(call(1))])  # the short way
        assert feed.timer is timer and feed._written == written  # young and small: waits
        feed.handover_bytes = len(feed.batch) + 1  # the next record fills it
        route(relay, Direction.S2C, [response(1)])
        assert timer.cancelled() and feed.flush_due == feed_module._NEVER
        soon = feed.timer
        route(relay, Direction.C2S, [line(call(2))])  # past it again: scheduled once
        assert feed.timer is soon and not soon.cancelled()
        await asyncio.sleep(0)
        assert feed._written > written and feed.timer is None and not feed.batch
        # the other way in (`append`: a notification) hands over past the size too
        route(relay, Direction.C2S, [line(call(3))])
        feed.handover_bytes = len(feed.batch) + 1
        route(relay, Direction.S2C, [line({"jsonrpc": "2.0", "method": "notifications/message"})])
        written = feed._written
        await asyncio.sleep(0)
        assert feed._written > written and not feed.batch
        # and, as a call's message does, past the batch's due time
        route(relay, Direction.C2S, [line(call(4))])
        feed.handover_bytes = feed_module.HANDOVER_BYTES
        feed.flush_due = time.time_ns()
        route(relay, Direction.S2C, [line({"jsonrpc": "2.0", "method": "notifications/message"})])
        written = feed._written
        await asyncio.sleep(0)
        assert feed._written > written and not feed.batch

    asyncio.run(scenario())
