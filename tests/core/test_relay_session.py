"""The transport-agnostic core: lenient parsing, framing, sessions, the relay and its seam."""

from __future__ import annotations

import orjson

from helmet_otel.core.envelope import Direction, Envelope
from helmet_otel.core.interceptor import BaseInterceptor
from helmet_otel.core.relay import UPSTREAM_GONE_CODE, Relay
from helmet_otel.core.session import LEGACY, MODERN, Session
from helmet_otel.protocol.framing import LineSplitter
from helmet_otel.protocol.message import Kind, inspect


def line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


def test_inspect_is_lenient_and_exact() -> None:
    assert inspect(b"not json\n").kind is Kind.INVALID
    assert inspect(b"[1, 2]\n").kind is Kind.BATCH
    assert inspect(b"   \n").kind is Kind.BLANK
    assert inspect(b'"a string"\n').kind is Kind.INVALID
    request = inspect(line({"jsonrpc": "2.0", "id": "abc", "method": "tools/call",
                            "params": {"name": "echo", "x-unknown": 1}}))  # fmt: skip
    assert (request.kind, request.id, request.method, request.target_name) == (
        Kind.REQUEST, "abc", "tools/call", "echo"
    )  # fmt: skip
    note = inspect(line({"jsonrpc": "2.0", "method": "notifications/progress"}))
    assert note.kind is Kind.NOTIFICATION
    error = inspect(line({"jsonrpc": "2.0", "id": 3, "error": {"code": -32601, "message": "no"}}))
    assert (error.kind, error.id, error.error_code, error.error_message) == (
        Kind.ERROR, 3, -32601, "no"
    )  # fmt: skip
    tool_error = inspect(line({"jsonrpc": "2.0", "id": 4, "result": {"isError": True}}))
    assert tool_error.kind is Kind.RESPONSE and tool_error.is_tool_error
    assert inspect(line({"jsonrpc": "2.0", "id": None, "method": "x"})).kind is Kind.NOTIFICATION


def test_line_splitter_handles_any_chunking() -> None:
    data = b'{"a":1}\n' + b"x" * 100_000 + b"\n\n" + b"tail"
    for size in (1, 7, 4096, len(data)):
        splitter = LineSplitter()
        lines: list[bytes] = []
        for start in range(0, len(data), size):
            lines += splitter.feed(data[start : start + size])
        assert lines == [b'{"a":1}\n', b"x" * 100_000 + b"\n", b"\n"]
        assert splitter.flush() == b"tail"


class Recording(BaseInterceptor):
    def __init__(self) -> None:
        self.seen: list[tuple[Direction, bytes, Kind, str | None]] = []

    def after_forward(self, env: Envelope) -> None:
        method = env.request.method if env.request else env.msg.method
        self.seen.append((env.direction, env.raw, env.msg.kind, method))


def test_relay_forwards_everything_in_order_and_tracks_the_session() -> None:
    session = Session(transport="stdio")
    recording = Recording()
    relay = Relay(session, [recording])
    client_lines = [
        line({"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "clientInfo": {"name": "c", "version": "1"}}}),
        line({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        b"garbage\n",
        line({"jsonrpc": "2.0", "id": "1", "method": "tools/call", "params": {"name": "t"}}),
    ]  # fmt: skip
    routed = relay.route(Direction.C2S, client_lines)
    assert routed.forward == client_lines and routed.replies == []
    relay.forwarded(routed)
    assert session.era == LEGACY and session.protocol_version == "2025-11-25"
    assert session.client_info == {"name": "c", "version": "1"}
    assert [p.id for p in session.pending.values()] == [1, "1"]  # 1 and "1" are distinct ids
    server_lines = [
        line({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18",
                                                     "serverInfo": {"name": "s"}}}),
        line({"jsonrpc": "2.0", "id": "1", "result": {"isError": True}}),
    ]  # fmt: skip
    routed = relay.route(Direction.S2C, server_lines)
    relay.forwarded(routed)
    assert session.protocol_version == "2025-06-18" and session.server_info == {"name": "s"}
    assert session.pending == {}
    assert session.method_counts == {"initialize": 1, "notifications/initialized": 1,
                                     "tools/call": 1}  # fmt: skip
    assert [(d, m) for d, _, _, m in recording.seen] == [
        (Direction.C2S, "initialize"), (Direction.C2S, "notifications/initialized"),
        (Direction.C2S, None), (Direction.C2S, "tools/call"),
        (Direction.S2C, "initialize"), (Direction.S2C, "tools/call"),
    ]  # fmt: skip


def test_modern_era_is_detected_from_request_meta() -> None:
    session = Session(transport="stdio")
    relay = Relay(session)
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "m"}}  # fmt: skip
    relay.forwarded(relay.route(Direction.C2S, [
        line({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": meta}})
    ]))  # fmt: skip
    assert (session.era, session.protocol_version, session.client_info) == (
        MODERN, "2026-07-28", {"name": "m"}
    )  # fmt: skip


def test_pending_requests_are_answered_when_the_upstream_is_gone() -> None:
    session = Session(transport="stdio")
    relay = Relay(session)
    relay.forwarded(relay.route(Direction.C2S, [
        line({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "t"}}),
        line({"jsonrpc": "2.0", "id": "z", "method": "ping"}),
    ]))  # fmt: skip
    replies = [
        orjson.loads(r) for r in relay.answer_pending("MCP server exited with status 1").forward
    ]
    assert replies == [
        {"jsonrpc": "2.0", "id": 9,
         "error": {"code": UPSTREAM_GONE_CODE, "message": "MCP server exited with status 1"}},
        {"jsonrpc": "2.0", "id": "z",
         "error": {"code": UPSTREAM_GONE_CODE, "message": "MCP server exited with status 1"}},
    ]  # fmt: skip
    later = relay.route(Direction.C2S, [line({"jsonrpc": "2.0", "id": 10, "method": "ping"})])
    assert later.forward == []
    assert orjson.loads(later.replies[0])["error"]["code"] == UPSTREAM_GONE_CODE


def test_a_cancelled_request_gets_no_synthesized_answer() -> None:
    """MCP: the receiver of a cancellation does not answer the cancelled request."""
    session = Session(transport="stdio")
    relay = Relay(session)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled"}
    relay.forwarded(relay.route(Direction.C2S, [
        line({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow"}}),
        line({"jsonrpc": "2.0", "id": "1", "method": "ping"}),
        line({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
        line({**cancel, "params": {"requestId": 1, "reason": "user"}}),
        line({**cancel, "params": {"requestId": 77}}),  # unknown: ignored
    ]))  # fmt: skip
    # a server->client request with the same id is not the one the client cancelled
    relay.forwarded(relay.route(Direction.S2C, [
        line({"jsonrpc": "2.0", "id": 1, "method": "roots/list"}),
    ]))  # fmt: skip
    replies = [orjson.loads(r)["id"] for r in relay.answer_pending("MCP server exited").forward]
    assert replies == ["1", 2]
    assert [p.id for p in session.pending_from(Direction.S2C)] == [1]


def test_an_interceptor_can_rewrite_or_answer_instead() -> None:
    class Block(BaseInterceptor):
        def before_forward(self, env: Envelope) -> None:
            if env.msg.method == "tools/call":
                env.reply = b'{"blocked":true}\n'
            elif env.msg.method == "ping":
                env.wire = b'{"rewritten":true}\n'

    relay = Relay(Session(transport="stdio"), [Block()])
    routed = relay.route(Direction.C2S, [
        line({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}),
        line({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
    ])  # fmt: skip
    assert routed.forward == [b'{"rewritten":true}\n']
    assert routed.replies == [b'{"blocked":true}\n']


def test_hooks_run_for_the_kinds_an_interceptor_names() -> None:
    seen: list[tuple[str, str, Kind]] = []

    class Requests(BaseInterceptor):  # before: requests; after: answers
        before_kinds = frozenset((Kind.REQUEST,))
        after_kinds = frozenset((Kind.RESPONSE, Kind.ERROR))

        def before_forward(self, env: Envelope) -> None:
            seen.append(("requests", "before", env.msg.kind))

        def after_forward(self, env: Envelope) -> None:
            seen.append(("requests", "after", env.msg.kind))

    class Everything(BaseInterceptor):  # every kind; no after_forward of its own
        def before_forward(self, env: Envelope) -> None:
            seen.append(("everything", "before", env.msg.kind))

    relay = Relay(Session(transport="stdio"), [Requests(), Everything()])
    assert len(relay._after["request"]) == 0 and len(relay._after["response"]) == 1  # pyright: ignore[reportPrivateUsage]
    for direction, message in (
        (Direction.C2S, line({"jsonrpc": "2.0", "id": 1, "method": "tools/call"})),
        (Direction.C2S, line({"jsonrpc": "2.0", "method": "notifications/initialized"})),
        (Direction.S2C, line({"jsonrpc": "2.0", "id": 1, "result": {}})),
        (Direction.S2C, b"\n"),
    ):
        relay.forwarded(relay.route(direction, [message]))
    assert seen == [
        ("requests", "before", Kind.REQUEST),
        ("everything", "before", Kind.REQUEST),
        ("everything", "before", Kind.NOTIFICATION),
        ("everything", "before", Kind.RESPONSE),
        ("requests", "after", Kind.RESPONSE),
        ("everything", "before", Kind.BLANK),
    ]
