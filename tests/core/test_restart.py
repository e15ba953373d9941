"""The pure parts of ``--restart on-failure``: the backoff and its bound, the handshake replay,
and what the session keeps across servers."""

from __future__ import annotations

import json

from helmet_otel.core.envelope import C2S, S2C
from helmet_otel.core.lifecycle import Lifecycle
from helmet_otel.core.restart import Handshake, RestartBudget, replay_failure
from helmet_otel.core.session import ProcessUsage, Session
from helmet_otel.protocol.message import inspect


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_to_five_seconds_and_the_bound_is_per_minute() -> None:
    clock = Clock()
    budget = RestartBudget(8, clock)
    delays = [budget.next_delay() for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert budget.next_delay() is None  # 8 within the minute: the crash ends the session
    assert budget.count == 8
    clock.now += 61  # a minute later the window is empty again: short waits again
    assert budget.next_delay() == 0.1
    assert budget.count == 9


def test_no_restarts_at_all() -> None:
    assert RestartBudget(0, Clock()).next_delay() is None


INIT = b'{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c"}}}\n'
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'


def test_the_handshake_is_replayed_under_the_proxys_id() -> None:
    handshake = Handshake()
    handshake.observe(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"initialize"}}'
    )
    assert handshake.initialize is None  # a tool named so is not the handshake
    handshake.observe(INIT.rstrip(b"\n"))
    assert not handshake.complete
    handshake.observe(INITIALIZED.rstrip(b"\n"))
    assert handshake.complete
    assert handshake.initialize_id == 7
    replay = handshake.replay(2)
    assert json.loads(replay) == {**json.loads(INIT), "id": "helmet-otel/restart/2"}
    assert replay.endswith(b"\n") and replay.count(b"\n") == 1
    assert handshake.initialized == INITIALIZED
    ours = (
        b'{"jsonrpc":"2.0","id":"helmet-otel/restart/2","result":{"protocolVersion":"2025-06-18"}}'
    )
    assert handshake.answer_in(b'{"jsonrpc":"2.0","id":7,"result":{}}') is None
    assert (
        handshake.answer_in(b'{"jsonrpc":"2.0","id":"helmet-otel/restart/1","result":{}}') is None
    )
    assert handshake.answer_in(
        b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"helmet-otel/restart/2"}}'
    ) is None  # fmt: skip
    answer = handshake.answer_in(ours)
    assert answer is not None and replay_failure(answer, "2025-06-18") is None


def test_a_replay_answer_that_cannot_continue_the_session() -> None:
    error = inspect(b'{"jsonrpc":"2.0","id":"x","error":{"code":-32603,"message":"nope"}}')
    assert replay_failure(error, "2025-06-18") == (
        "answered the replayed initialize with an error: nope"
    )
    other = inspect(b'{"jsonrpc":"2.0","id":"x","result":{"protocolVersion":"2024-11-05"}}')
    assert replay_failure(other, "2025-06-18") == (
        "answered the replayed initialize with protocol version '2024-11-05', not "
        "'2025-06-18' as before"
    )


def _route(lifecycle: Lifecycle, direction: object, line: bytes) -> None:
    relay = lifecycle.relay
    relay.forwarded(relay.route(direction, [line]))  # type: ignore[arg-type]


def test_a_crash_answers_the_clients_requests_and_forgets_the_servers() -> None:
    session = Session(transport="stdio")
    lifecycle = Lifecycle(session)
    _route(lifecycle, C2S, b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}')
    _route(lifecycle, S2C, b'{"jsonrpc":"2.0","id":0,"method":"roots/list"}')
    routed, orphaned = lifecycle.upstream_crashed(
        "MCP server exited with status 3", ProcessUsage(1, 2, 10)
    )
    assert orphaned == {(False, 0)}  # the client's answer to roots/list must not go on
    assert routed.forward == [
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"MCP server exited with '
        b'status 3 before responding; restarting it (helmet-otel)"}}\n'
    ]
    lifecycle.relay.forwarded(routed)
    assert session.pending == {}
    assert session.exit_status is None and session.exit_reason is None  # the session goes on
    lifecycle.upstream_exited(0, "MCP server exited with status 0", ProcessUsage(0.5, 1, 20))
    assert session.upstream_usage == ProcessUsage(1.5, 3, 20)  # summed; the largest peak
