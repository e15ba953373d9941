"""The relay side of telemetry, in process: the frames it hands over and the bytes it forwards.

The worker is replaced by a pipe we read back with `frames.read_batch`, so these tests see the
exact frames the recorder would get.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from helmet_otel.config import ProxyOptions
from helmet_otel.core.envelope import Direction
from helmet_otel.core.relay import Relay
from helmet_otel.core.session import Session
from helmet_otel.telemetry import feed as feed_module
from helmet_otel.telemetry import frames
from helmet_otel.telemetry.feed import PROPAGATE_MAX_BYTES, TelemetryFeed
from helmet_otel.telemetry.frames import Frame, read_batch

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
        frames: list[Frame] = []
        while (batch := read_batch(self.pipe.reader)) is not None:
            frames += batch
        return [f for f in frames if f[0] != "config"]


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
    relay = Relay(Session(transport="stdio"), [feed])
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
    msgs = [f for f in feed.frames() if f[0] == "msg"]
    assert [(f[2], f[3], f[4], f[5]) for f in msgs] == [
        (0, len(requests[0]), requests[0],
         ("request", 1, "tools/call", "echo", "u1", None, None, False, CLIENT_TP, False)),
        (0, len(requests[1]), requests[1],
         ("request", "p", "prompts/get", "greet", None, None, None, False, None, False)),
        (0, len(requests[2]), requests[2],
         ("request", 3, "resources/read", None, "file:///é", None, None, False, None, False)),
        (0, len(requests[3]), requests[3],
         ("request", 4, "tools/call", None, None, None, None, False, None, False)),
        (0, len(requests[4]), requests[4],
         ("notification", None, "notifications/progress", None, "u", None, None, False, None,
          False)),
        (0, len(requests[6]), requests[6],
         ("invalid", None, None, None, None, None, None, False, None, False)),
        (1, len(responses[0]), responses[0],
         ("response", 1, None, None, None, None, None, True, None, False)),
        (1, len(responses[1]), responses[1],
         ("response", "p", None, None, None, None, None, False, None, False)),
        (1, len(responses[2]), responses[2],
         ("error", 3, None, None, None, -32602, "bad", False, None, False)),
        (1, len(responses[3]), responses[3],
         ("error", 4, None, None, None, None, None, False, None, False)),
    ]  # fmt: skip
    for frame in msgs[:4]:  # requests get a trace and two distinct, non-zero 64-bit span ids
        assert frame[6] == feed.trace_id
        assert 0 < frame[7] < 1 << 64 and 0 < frame[8] < 1 << 64 and frame[7] != frame[8]
    assert [f[6:9] for f in msgs[4:]] == [(0, 0, 0)] * 6
    # the worker gets each message's parse with it, and parses nothing twice
    assert [f[9] for f in msgs] == [1] * 10  # every call traced: each stands for itself
    assert [f[10] for f in msgs] == [orjson.loads(r) for r in requests[:5]] + [frames.NOT_JSON] + [
        orjson.loads(r) for r in responses
    ]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r\r\n", b"\n\r\n", b""])
def test_injection_keeps_the_line_ending(make_feed: Any, ending: bytes) -> None:
    feed = make_feed()
    relay = Relay(Session(transport="stdio"), [feed])
    routed = relay.route(Direction.C2S, [line(call(1, {"name": "é"}), ending)])
    env = routed.envelopes[0]
    assert ours(routed.forward[0], feed.trace_id, env.client_span_id) == (
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
    relay = Relay(Session(transport="stdio"), [feed])
    routed = relay.route(Direction.C2S, [request_line])
    assert ours(routed.forward[0], feed.trace_id, routed.envelopes[0].client_span_id) == expected


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
    relay = Relay(Session(transport="stdio"), [feed])
    routed = relay.route(Direction.C2S, [request_line])
    assert routed.forward == [request_line] and routed.forward[0] is request_line


def test_huge_requests_and_server_requests_are_not_rewritten(make_feed: Any) -> None:
    feed = make_feed()
    relay = Relay(Session(transport="stdio"), [feed])
    huge = line(call(1, {"name": "big", "arguments": {"t": "x" * PROPAGATE_MAX_BYTES}}))
    assert route(relay, Direction.C2S, [huge])[0] is huge
    server_request = line(call(9, {"_meta": {"traceparent": CLIENT_TP}}, "sampling/createMessage"))
    routed = relay.route(Direction.S2C, [server_request])
    relay.forwarded(routed)
    assert routed.forward[0] is server_request
    assert routed.envelopes[0].server_span_id and routed.envelopes[0].client_span_id
    # a huge message goes over as its head, with the summary the relay worked out; a
    # server's traceparent is not the client's
    head, server = [f for f in feed.frames() if f[0] == "msg"]
    cap = feed._body_cap
    assert head[3:6] == (
        len(huge),
        huge[:cap],
        ("request", 1, "tools/call", "big", None, None, None, False, None, False),
    )
    assert head[9:] == (1, frames.CUT)
    assert server[5][8] is None and server[10] == orjson.loads(server_request)


def test_sampled_flag_follows_the_sampler(make_feed: Any) -> None:
    feed = make_feed({"OTEL_TRACES_SAMPLER": "always_off"})
    relay = Relay(Session(transport="stdio"), [feed])
    wire = route(relay, Direction.C2S, [line(call(1))])[0]
    match = TRACEPARENT.search(wire)
    assert match is not None and match[3] == b"00"


def test_a_long_session_rolls_over_to_new_traces(make_feed: Any) -> None:
    feed = make_feed(trace_max_requests=2)
    relay = Relay(Session(transport="stdio"), [feed])
    first_trace = feed.trace_id
    traces: list[int] = []
    for i in range(5):
        routed = relay.route(Direction.C2S, [line(call(i))])
        relay.forwarded(routed)
        env = routed.envelopes[0]
        assert ours(routed.forward[0], env.trace_id, env.client_span_id)
        traces.append(env.trace_id)
    assert traces[:2] == [first_trace] * 2 and traces[2] == traces[3] != first_trace
    assert traces[4] not in (first_trace, traces[2])
    tags = [(f[0], f[2]) if f[0] == "segment" else (f[0], f[6]) for f in feed.frames()]
    assert tags == [
        ("msg", first_trace), ("msg", first_trace),
        ("segment", traces[2]), ("msg", traces[2]), ("msg", traces[2]),
        ("segment", traces[4]), ("msg", traces[4]),
    ]  # fmt: skip


def response(msg_id: object) -> bytes:
    return line({"jsonrpc": "2.0", "id": msg_id, "result": {}})


def test_a_full_buffer_sheds_whole_calls_and_keeps_session_events(make_feed: Any) -> None:
    feed = make_feed()
    session = Session(transport="stdio")
    relay = Relay(session, [feed])
    route(relay, Direction.C2S, [line(call("traced"))])
    feed._flush()
    feed._out += b"x" * feed_module.BUFFER_LIMIT  # the worker is not reading
    # a new call is shed at once: no ids, no splice, no record
    routed = relay.route(Direction.C2S, [line(call("shed"))])
    relay.forwarded(routed)
    assert routed.forward == [line(call("shed"))] and routed.envelopes[0].server_span_id == 0
    assert feed._pending == b"" and (feed._shed_full, feed._shed_busy) == (1, 0)
    feed.upstream_stderr(session, b"boom\n", 5)  # shed too
    # the answer to the shed call follows it; the answer to the traced call goes regardless
    route(relay, Direction.S2C, [response("shed"), response("traced")])
    session.ended_ns = 7
    feed.session_ended(session)  # session events are never shed
    assert (feed._shed_full, feed._shed_busy) == (3, 0)
    feed._out.clear()  # the worker caught up
    got = feed.frames()
    assert [f[0] for f in got] == ["msg", "dropped", "msg", "end"]
    assert got[0][4] == line(call("traced")) and got[1] == ("dropped", "relay_queue_full", 3)
    assert got[2][4] == response("traced") and got[3][1] == 7


def test_a_busy_relay_traces_one_call_in_every(make_feed: Any) -> None:
    feed = make_feed()
    relay = Relay(Session(transport="stdio"), [feed])
    feed._every = 4
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
    route(relay, Direction.S2C, [response(i) for i in range(8)] + [note] * 4)
    route(relay, Direction.C2S, [cancel] * 2)  # a cancellation is never shed
    got = feed.frames()
    assert got[0] == ("dropped", "relay_busy", 6 + 6 + 3)
    msgs = [(f[5][0], f[5][1], f[5][2], f[9]) for f in got if f[0] == "msg"]
    assert msgs == [
        ("request", 3, "tools/call", 4), ("request", 7, "tools/call", 4),
        ("response", 3, None, 4), ("response", 7, None, 4),
        ("notification", None, "notifications/progress", 4),
        ("notification", None, "notifications/cancelled", 1),
        ("notification", None, "notifications/cancelled", 1),
    ]  # fmt: skip


def test_the_governor_follows_the_relays_cpu(
    make_feed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = make_feed()
    clock = {"cpu": 0.0}
    monkeypatch.setattr(feed_module, "cpu_demand", lambda: clock["cpu"])
    feed._demand_mark, feed._wall_mark = 0.0, 0.0
    seen: list[tuple[int, int]] = []
    wall = 0.0
    # busy (95% of a CPU) but few calls (a start-up, a loaded machine); busy with calls at
    # 10,000/s for 2 windows, in between (80%) for 2, idle (10%) for 8, busy again
    for share, calls in (
        [(0.95, 100)] + [(0.95, 1000)] * 2 + [(0.8, 1000)] * 2 + [(0.1, 1000)] * 8 + [(0.9, 1000)]
    ):
        wall += 0.1
        clock["cpu"] += 0.1 * share
        feed._tick += calls
        feed._govern(wall)
        seen.append((feed._every, feed._limit))
    busy_buffer, full_buffer = feed_module.BUSY_BUFFER, feed_module.BUFFER_LIMIT
    assert seen == [(1, full_buffer)] + [(64, busy_buffer)] * 4 + [
        (32, busy_buffer), (16, busy_buffer), (8, busy_buffer), (4, busy_buffer),
        (2, busy_buffer), (1, full_buffer), (1, full_buffer), (1, full_buffer),
        (64, busy_buffer),
    ]  # fmt: skip


def test_frames_round_trip_shared_and_deeply_nested_values() -> None:
    deep: object = "leaf"
    for _ in range(200):  # deeper than the pickler's fast-mode nesting limit (50)
        deep = {"k": [deep]}
    shared = {"name": "c", "version": "1"}
    info = ("info", {"client_info": shared, "deep": deep})
    end = ("end", 5, {"client_info": shared, "n": 1 << 127, "f": 2.5, "b": True, "l": [None]})
    summary = ("request", "x", None, None, None, None, None, False, None, False)
    cut = ("msg", 1, 0, 9, b"{}", summary, 7, 1, 2, 1)
    records = (
        frames.pickled(info)
        + frames.pickled(end)
        + frames.whole(
            1, True, 3, b'{"id":"x","method":"m"}\n', (1 << 128) - 1, 1, (1 << 64) - 1, 64
        )
        + frames.pickled(cut)
        + frames.whole(0, False, 4, b"nope\n", 0, 0, 0)
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
            ("dropped", "relay_queue_full", 3),
            ("dropped", "relay_busy", 4),
            info,
            end,
            ("msg", 3, 1, 24, b'{"id":"x","method":"m"}\n',
             ("request", "x", "m", None, None, None, None, False, None, True),
             (1 << 128) - 1, 1, (1 << 64) - 1, 64, {"id": "x", "method": "m"}),
            (*cut, frames.CUT),
            ("msg", 4, 0, 5, b"nope\n",
             ("invalid", None, None, None, None, None, None, False, None, False), 0, 0, 0, 1,
             frames.NOT_JSON),
        ]  # fmt: skip
        with pytest.raises(Exception):  # noqa: B017  # a record cut in two is not a frame
            read_batch(reader)
        assert read_batch(reader) is None  # a torn batch is the end


def test_cpu_demand_counts_running_time() -> None:
    before = feed_module.cpu_demand()
    started = time.thread_time()
    while time.thread_time() - started < 0.05:  # spin: run 50 ms of CPU
        pass
    assert feed_module.cpu_demand() - before >= 0.05
