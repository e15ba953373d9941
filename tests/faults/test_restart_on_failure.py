"""``--restart on-failure``: a server that crashes is replaced and the client's session goes on.

The server is `tests/servers/crashing_server.py` in a real subprocess under the real proxy; the
official MCP SDK client drives the main case, raw pipes the rest (so the tests can assert every
byte the client receives: the replayed initialize's answer must never be among them).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from helmet_otel import semconv as sc
from helmet_otel.protocol.message import error_response
from helmet_otel.store.query import LogEntry, LogFilter, Reader
from tests.e2e.helpers import SERVERS_DIR, RawProcess, clean_env, proxy_argv
from tests.faults.helpers import poll, unread_in_stdin

CRASHING = (sys.executable, str(SERVERS_DIR / "crashing_server.py"))
LEGACY = "2025-06-18"
INIT_PARAMS = {
    "protocolVersion": LEGACY,
    "capabilities": {},
    "clientInfo": {"name": "restart-test", "version": "0"},
}
TIMEOUT = 30.0


def line(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def request(msg_id: int, method: str, params: dict[str, Any]) -> bytes:
    return line({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})


def call(msg_id: int, tool: str, **arguments: object) -> bytes:
    return request(msg_id, "tools/call", {"name": tool, "arguments": arguments})


def init_answer(version: str = LEGACY) -> bytes:
    """The crashing server's answer to the test's initialize (id 1)."""
    result: dict[str, Any] = {
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "crashing", "version": "1"},
    }
    return line({"jsonrpc": "2.0", "id": 1, "result": result})


def echo_answer(msg_id: int, generation: int, text: str) -> bytes:
    content = [{"type": "text", "text": f"gen {generation}: {text}"}]
    return line({"jsonrpc": "2.0", "id": msg_id, "result": {"content": content, "isError": False}})


CRASH_ERROR = "MCP server exited with status 3 before responding; restarting it (helmet-otel)"
RESTARTING = (
    "helmet-otel: MCP server exited with status {}; restarting it (restart {}, at most {} "
    "within a minute)"
)
INITIALIZED = line({"jsonrpc": "2.0", "method": "notifications/initialized"})


def server_log(path: Path) -> dict[int, list[dict[str, Any]]]:
    """What each server process read, by its generation (1 = the first)."""
    lines: dict[int, list[dict[str, Any]]] = {}
    for entry in path.read_text().splitlines():
        kind, generation, *rest = entry.split(" ", 2)
        got = lines.setdefault(int(generation), [])
        if kind == "in":
            got.append(json.loads(rest[0]))
    return lines


def restart_records(store: Path) -> tuple[list[LogEntry], list[LogEntry]]:
    """The session's helmet.initialization and helmet.session_end records."""
    with Reader.open(store) as reader:
        inits = reader.logs(LogFilter(events=(sc.EVENT_INITIALIZATION,)))
        ends = reader.logs(LogFilter(events=(sc.EVENT_SESSION_END,)))
    return inits, ends


def attrs(entry: LogEntry) -> dict[str, Any]:
    return json.loads(entry.attrs_json or "{}")


class Proxy(RawProcess):
    """The proxy with ``--restart on-failure`` in front of the crashing server."""

    def __init__(
        self, tmp_path: Path, *options: str, store: bool = False, extra: dict[str, str] | None = None,
        **env: str,
    ) -> None:  # fmt: skip
        self.log = tmp_path / "server.log"
        self.store = tmp_path / "store.db"
        store_options = ("--store", str(self.store)) if store else ()
        argv = proxy_argv(
            CRASHING, "--restart", "on-failure", *store_options, *options, store=store
        )
        super().__init__(argv, env=clean_env({"CRASH_LOG": str(self.log), **env, **(extra or {})}))
        self.expected = b""

    def __enter__(self) -> Proxy:
        return self

    def exchange(self, data: bytes, answer: bytes) -> None:
        """Send ``data``; the client must receive exactly ``answer`` next."""
        self.write(data)
        self.expect(answer)

    def expect(self, answer: bytes) -> None:
        self.expected += answer
        got = self.stdout.wait_len(len(self.expected), TIMEOUT)
        assert got == self.expected

    def end(self, status: int) -> None:
        """Close our side: the proxy exits with ``status``, having written nothing more."""
        self.close_stdin()
        assert self.wait(TIMEOUT) == status
        self.stdout.join(TIMEOUT)
        assert self.stdout.data() == self.expected


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_sdk_session_survives_a_crash(tmp_path: Path, anyio_backend: str) -> None:
    log, store = tmp_path / "server.log", tmp_path / "store.db"
    argv = proxy_argv(CRASHING, "--restart", "on-failure", "--store", str(store), store=True)
    params = StdioServerParameters(
        command=argv[0], args=argv[1:], env=clean_env({"CRASH_LOG": str(log)})
    )
    with (tmp_path / "stderr").open("w") as errlog, anyio.fail_after(60):
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            before = await session.call_tool("echo", {"text": "before"})
            assert before.content[0].model_dump()["text"] == "gen 1: before"
            with pytest.raises(MCPError) as crashed:
                await session.call_tool("crash", {})
            assert (crashed.value.error.code, crashed.value.error.message) == (-32000, CRASH_ERROR)
            after = await session.call_tool("echo", {"text": "after"})
            assert after.content[0].model_dump()["text"] == "gen 2: after"
            assert not after.is_error

    seen = server_log(log)
    assert sorted(seen) == [1, 2]
    first_init, second_init = seen[1][0], seen[2][0]
    assert second_init["id"] == "helmet-otel/restart/1"
    assert second_init["method"] == "initialize"
    first_params = {k: v for k, v in first_init["params"].items() if k != "_meta"}  # (our splice)
    assert second_init["params"] == first_params
    assert seen[2][1] == {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert [m["params"]["arguments"] for m in seen[2][2:] if m.get("method") == "tools/call"] == [
        {"text": "after"}
    ]

    def ended() -> bool:
        return store.exists() and len(restart_records(store)[1]) == 1

    with anyio.fail_after(20):
        while not ended():
            await anyio.sleep(0.05)
    inits, (end,) = restart_records(store)
    assert len(inits) == 2
    assert {entry.session_id for entry in (*inits, end)} == {end.session_id}
    first, restart = (attrs(entry) for entry in inits)
    assert sc.HELMET_RESTART not in first
    assert (restart[sc.HELMET_RESTART], restart[sc.HELMET_RESTART_COUNT]) == (True, 1)
    assert restart[sc.HELMET_ERA] == "legacy"
    assert restart[sc.HELMET_SERVER_PID] != first[sc.HELMET_SERVER_PID]
    body = inits[1].body
    assert isinstance(body, dict)
    assert (body["previous_exit"], body["replayed_initialize"]) == (
        "MCP server exited with status 3", True,
    )  # fmt: skip
    assert "failure" not in body
    end_attrs = attrs(end)
    assert (end_attrs[sc.HELMET_RESTART_COUNT], end_attrs[sc.HELMET_EXIT_STATUS]) == (1, 0)
    with Reader.open(store) as reader:
        (info,) = reader.sessions()
        calls = reader.logs(LogFilter(events=(sc.EVENT_REQUEST,), methods=("initialize",)))
    assert info.status == "ended"
    assert len(calls) == 1  # the replay is not a request of the client's
    assert info.cpu_s is not None and info.cpu_s > 0  # both servers' CPU time


def test_held_messages_wait_for_the_replay_and_its_answer_never_reaches_the_client(
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    with Proxy(tmp_path, "--no-store", CRASH_GO=str(go)) as proxy:
        proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
        proxy.write(INITIALIZED)
        proxy.exchange(call(2, "crash"), error_response(2, -32000, CRASH_ERROR))
        # the new server waits for `go` before it answers the replayed initialize: meanwhile
        # the proxy holds what the client sends, 1,000 messages at most
        held = call(3, "echo", text="held") + b"".join(
            request(i, "ping", {}) for i in range(4, 1003)
        )
        proxy.write(held)
        proxy.exchange(request(1003, "ping", {}), error_response(
            1003, -32000,
            "MCP server is restarting and too many messages wait for it (helmet-otel)",
        ))  # fmt: skip
        poll(lambda: unread_in_stdin(proxy.proc.pid), lambda n: n == 0, TIMEOUT, "held read")
        go.touch()
        proxy.expect(
            echo_answer(3, 2, "held")
            + b"".join(line({"jsonrpc": "2.0", "id": i, "result": {}}) for i in range(4, 1003))
        )
        proxy.exchange(call(1004, "echo", text="next"), echo_answer(1004, 2, "next"))
        proxy.end(0)
        assert proxy.stderr.data().decode().splitlines() == [RESTARTING.format(3, 1, 5)]
    seen = server_log(proxy.log)
    assert [m.get("id") for m in seen[2][:3]] == ["helmet-otel/restart/1", None, 3]
    assert seen[2][1] == json.loads(INITIALIZED)
    assert len(seen[2]) == 3 + 999 + 1  # not the request beyond the bound


def test_a_crash_loop_ends_after_the_bound(tmp_path: Path) -> None:
    with Proxy(tmp_path, "--max-restarts", "2", store=True, CRASH_LOOP="1") as proxy:
        proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
        proxy.write(INITIALIZED)
        proxy.exchange(call(2, "crash"), error_response(2, -32000, CRASH_ERROR))
        assert proxy.wait(TIMEOUT) == 1
        proxy.stdout.join(TIMEOUT)
        assert proxy.stdout.data() == proxy.expected
        stderr = proxy.stderr.data().decode().splitlines()
        assert stderr == [
            RESTARTING.format(3, 1, 2),
            RESTARTING.format(1, 2, 2),
            "helmet-otel: MCP server exited with status 1; not restarting it: 2 restarts "
            "within a minute already",
        ]
    assert sorted(server_log(proxy.log)) == [1, 2, 3]
    poll(lambda: restart_records(proxy.store)[1], lambda ends: len(ends) == 1, TIMEOUT, "the end")
    inits, (end,) = restart_records(proxy.store)
    counts = [attrs(entry).get(sc.HELMET_RESTART_COUNT) for entry in inits]
    assert counts == [None, 1, 2]
    previous = [entry.body["previous_exit"] for entry in inits[1:]]  # type: ignore[index]
    assert previous == ["MCP server exited with status 3", "MCP server exited with status 1"]
    assert (attrs(end)[sc.HELMET_RESTART_COUNT], attrs(end)[sc.HELMET_EXIT_STATUS]) == (2, 1)


def _take_over_fails(proxy: Proxy, go: Path | None) -> str:
    """A crash, then a call held for the new server, which cannot take the session over (once
    ``go`` exists, or never): the held call gets the error and the proxy exits with the
    crash's status, having written nothing more. -> the session's end reason."""
    proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
    proxy.write(INITIALIZED)
    proxy.exchange(call(2, "crash"), error_response(2, -32000, CRASH_ERROR))
    proxy.write(call(3, "echo", text="held"))
    if go is not None:
        poll(lambda: unread_in_stdin(proxy.proc.pid), lambda n: n == 0, TIMEOUT, "held read")
        go.touch()
    reason = "MCP server exited with status 3; the restarted server failed"
    proxy.expect(error_response(3, -32000, f"{reason} before responding (helmet-otel)"))
    assert proxy.wait(TIMEOUT) == 3
    proxy.stdout.join(TIMEOUT)
    assert proxy.stdout.data() == proxy.expected
    return reason


@pytest.mark.parametrize(
    ("variable", "value", "failure"),
    [
        ("CRASH_VERSION", "2025-03-26",
         "answered the replayed initialize with protocol version '2025-03-26', not "
         "'2025-06-18' as before"),
        ("CRASH_INIT_ERROR", "upstream rejected key sk-proj-ZQLEAK11restartAbcdefgh1234",
         "answered the replayed initialize with an error: upstream rejected key "
         "[REDACTED:openai-key]"),  # our stderr is a sink too: scrubbed
    ],
)  # fmt: skip
def test_a_new_server_that_cannot_take_the_session_over_ends_it(
    tmp_path: Path, variable: str, value: str, failure: str
) -> None:
    go = tmp_path / "go"
    with Proxy(tmp_path, store=True, CRASH_GO=str(go), extra={variable: value}) as proxy:
        reason = _take_over_fails(proxy, go)
        assert proxy.stderr.data().decode().splitlines() == [
            RESTARTING.format(3, 1, 5),
            f"helmet-otel: the restarted MCP server {failure}: ending the session",
        ]
    seen = server_log(proxy.log)
    assert [m.get("id") for m in seen[2]] == ["helmet-otel/restart/1"]  # no initialized, no call
    poll(lambda: restart_records(proxy.store)[1], lambda ends: len(ends) == 1, TIMEOUT, "the end")
    (_, restart), (end,) = restart_records(proxy.store)
    body = json.loads(restart.body_json or "{}")
    assert (body["failure"], restart.severity_text) == (failure, "ERROR")
    assert attrs(restart)[sc.HELMET_ERROR_MESSAGE] == failure
    assert (attrs(end)[sc.HELMET_EXIT_STATUS], attrs(end)[sc.HELMET_EXIT_REASON]) == (3, reason)
    sinks = [proxy.stderr.data(), proxy.stdout.data()]
    sinks += [path.read_bytes() for path in tmp_path.glob("store.db*")]  # with its WAL
    assert not any(b"ZQLEAK" in sink for sink in sinks)


def test_a_stateless_session_is_restarted_without_a_handshake(tmp_path: Path) -> None:
    meta = {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}
    with Proxy(tmp_path, "--no-store") as proxy:
        proxy.exchange(
            request(1, "tools/call", {"name": "echo", "arguments": {"text": "a"}, **meta}),
            echo_answer(1, 1, "a"),
        )
        proxy.exchange(
            request(2, "tools/call", {"name": "crash", "arguments": {}, **meta}),
            error_response(2, -32000, CRASH_ERROR),
        )
        proxy.exchange(
            request(3, "tools/call", {"name": "echo", "arguments": {"text": "b"}, **meta}),
            echo_answer(3, 2, "b"),
        )
        proxy.end(0)
    seen = server_log(proxy.log)
    assert [m["id"] for m in seen[2]] == [3]


def test_the_clients_late_answer_to_the_crashed_servers_request_is_not_for_the_new_one(
    tmp_path: Path,
) -> None:
    ask = line({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"})
    with Proxy(tmp_path, "--no-store") as proxy:
        proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
        proxy.write(INITIALIZED)
        proxy.exchange(call(2, "ask_then_crash"), ask + error_response(2, -32000, CRASH_ERROR))
        # the client answers the request of a server that is gone, then calls on
        proxy.write(line({"jsonrpc": "2.0", "id": "srv-1", "result": {"roots": []}}))
        proxy.exchange(call(3, "echo", text="after"), echo_answer(3, 2, "after"))
        proxy.end(0)
    stderr = proxy.stderr.data().decode()
    assert stderr.count("dropped the client's answer to request 'srv-1'") == 1, stderr
    second = server_log(proxy.log)[2]
    assert [m.get("method") for m in second] == ["initialize", "notifications/initialized",
                                                 "tools/call"]  # fmt: skip
    assert all(m.get("id") != "srv-1" for m in second)


def test_a_clean_exit_is_not_restarted(tmp_path: Path) -> None:
    with Proxy(tmp_path, "--no-store") as proxy:
        proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
        proxy.exchange(
            call(2, "crash", code=0),
            error_response(2, -32000, "MCP server exited with status 0 before responding (helmet-otel)"),
        )  # fmt: skip
        assert proxy.wait(TIMEOUT) == 0
    assert sorted(server_log(proxy.log)) == [1]


def test_a_server_the_proxy_stopped_on_a_signal_is_not_restarted(tmp_path: Path) -> None:
    with Proxy(tmp_path, "--no-store") as proxy:
        proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
        proxy.proc.send_signal(signal.SIGTERM)  # forwarded: the server dies of it
        assert proxy.wait(TIMEOUT) == 128 + signal.SIGTERM
        assert proxy.stderr.data() == b""
    assert sorted(server_log(proxy.log)) == [1]


def test_every_request_around_a_crash_gets_exactly_one_answer(tmp_path: Path) -> None:
    """Pipelined calls before and after the crash, in one write: each id is answered once,
    by the first server, the proxy's -32000 (sent to the dead server) or the second server."""
    with Proxy(tmp_path, "--no-store") as proxy:
        proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
        proxy.write(INITIALIZED)
        before = [call(i, "echo", text=str(i)) for i in range(10, 210)]
        after = [call(i, "echo", text=str(i)) for i in range(211, 411)]
        proxy.write(b"".join([*before, call(210, "crash"), *after]))
        data = proxy.stdout.wait(lambda got: got.count(b"\n") >= 1 + 401, TIMEOUT)
        answers = [json.loads(raw) for raw in data.splitlines()[1:]]
        assert sorted(a["id"] for a in answers) == list(range(10, 411))
        by_id = {a["id"]: a for a in answers}
        for i in range(10, 210):
            assert by_id[i]["result"]["content"][0]["text"] == f"gen 1: {i}"
        assert by_id[210]["error"] == {"code": -32000, "message": CRASH_ERROR}
        for i in range(211, 411):
            got = by_id[i]
            assert got.get("error") == {"code": -32000, "message": CRASH_ERROR} or (
                got["result"]["content"][0]["text"] == f"gen 2: {i}"
            ), got
        proxy.expected = data
        proxy.exchange(call(411, "echo", text="last"), echo_answer(411, 2, "last"))
        proxy.end(0)
    assert b"helmet-otel/restart" not in proxy.stdout.data()


def test_a_server_that_cannot_be_started_again_ends_the_session(tmp_path: Path) -> None:
    """The command is gone when the crashed server is to be replaced: the session ends with
    the crash's status, what the client sends afterwards gets the error, one stderr line."""
    script = tmp_path / "server.sh"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {SERVERS_DIR / 'crashing_server.py'}\n")
    script.chmod(0o755)
    log = tmp_path / "server.log"
    argv = proxy_argv((str(script),), "--restart", "on-failure", "--no-store")
    with RawProcess(argv, env=clean_env({"CRASH_LOG": str(log)})) as proxy:
        proxy.write(request(1, "initialize", INIT_PARAMS))
        assert proxy.stdout.wait_len(len(init_answer()), TIMEOUT) == init_answer()
        script.unlink()
        proxy.write(call(2, "crash"))
        expected = init_answer() + error_response(2, -32000, CRASH_ERROR)
        assert proxy.stdout.wait_len(len(expected), TIMEOUT) == expected
        assert proxy.wait(TIMEOUT) == 3
        proxy.stdout.join(TIMEOUT)
        assert proxy.stdout.data() == expected
        assert proxy.stderr.data().decode().splitlines() == [
            RESTARTING.format(3, 1, 5),
            "helmet-otel: MCP server exited with status 3; MCP server could not be started: "
            f"command not found: {script}",
        ]
    assert sorted(server_log(log)) == [1]


def test_held_bytes_are_bounded_too(tmp_path: Path) -> None:
    """Beyond 4 MiB of held messages a request gets the error at once; what was held goes to
    the new server whole."""
    go = tmp_path / "go"
    big = "x" * (4 * 1024 * 1024 - 200)
    with Proxy(tmp_path, "--no-store", CRASH_GO=str(go)) as proxy:
        proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
        proxy.write(INITIALIZED)
        proxy.exchange(call(2, "crash"), error_response(2, -32000, CRASH_ERROR))
        held = call(3, "echo", text=big)
        assert len(held) < 4 * 1024 * 1024
        proxy.write(held)
        proxy.exchange(call(4, "echo", text="y" * 300), error_response(
            4, -32000,
            "MCP server is restarting and too many messages wait for it (helmet-otel)",
        ))  # fmt: skip
        go.touch()
        proxy.expect(echo_answer(3, 2, big))
        proxy.exchange(call(5, "echo", text="next"), echo_answer(5, 2, "next"))
        proxy.end(0)
    seen = server_log(proxy.log)
    assert [m.get("id") for m in seen[2]] == ["helmet-otel/restart/1", None, 3, 5]


def test_a_client_that_leaves_during_the_backoff_ends_the_session(
    tmp_path: Path,
) -> None:
    """The fifth restart's backoff is 1.6 s: the client leaves as it begins, and no server is
    started again (the session ends with the last crash's status)."""
    with Proxy(tmp_path, store=True, CRASH_LOOP="1") as proxy:
        proxy.exchange(request(1, "initialize", INIT_PARAMS), init_answer())
        proxy.write(INITIALIZED)
        proxy.exchange(call(2, "crash"), error_response(2, -32000, CRASH_ERROR))
        fifth = RESTARTING.format(1, 5, 5).encode()
        proxy.stderr.wait(lambda data: fifth in data, TIMEOUT)
        proxy.close_stdin()
        assert proxy.wait(TIMEOUT) == 1
        proxy.stdout.join(TIMEOUT)
        assert proxy.stdout.data() == proxy.expected
        assert proxy.stderr.data().decode().splitlines() == [
            RESTARTING.format(3, 1, 5), *(RESTARTING.format(1, n, 5) for n in range(2, 6)),
        ]  # fmt: skip
    assert sorted(server_log(proxy.log)) == [1, 2, 3, 4, 5]  # not a sixth
    poll(lambda: restart_records(proxy.store)[1], lambda ends: len(ends) == 1, TIMEOUT, "the end")
    _, (end,) = restart_records(proxy.store)
    # the fifth was announced, never made: four servers took the session over
    assert (attrs(end)[sc.HELMET_RESTART_COUNT], attrs(end)[sc.HELMET_EXIT_STATUS]) == (4, 1)


def test_a_new_server_that_never_answers_the_replayed_initialize_ends_the_session(
    tmp_path: Path,
) -> None:
    """The replay's answer is awaited 10 s (`REPLAY_TIMEOUT`, the one slow test here): then the
    held call gets the error, the new server is stopped, and the crash's status is the exit's."""
    never = tmp_path / "never"  # the new server waits for this file before it answers
    with Proxy(tmp_path, "--no-store", CRASH_GO=str(never)) as proxy:
        _take_over_fails(proxy, None)
        assert proxy.stderr.data().decode().splitlines() == [
            RESTARTING.format(3, 1, 5),
            "helmet-otel: the restarted MCP server did not answer the replayed initialize "
            "within 10 s: ending the session",
        ]
    seen = server_log(proxy.log)
    assert [m.get("id") for m in seen[2]] == ["helmet-otel/restart/1"]  # nothing else reached it
