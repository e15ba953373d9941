"""Many sessions in one proxy process, and proxy-made answers, through the real pieces.

The sessions run in this test's process (the core and the stdio transport's API, each session
on its own pipes with its own server child), behind one `TelemetryFeed` and its real telemetry
worker, which writes a real store and exports to a real OTLP receiver.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from helmet_otel import semconv as sc
from helmet_otel.config import ProxyOptions
from helmet_otel.core.envelope import Envelope
from helmet_otel.core.interceptor import BaseInterceptor, Interceptor
from helmet_otel.core.session import Session
from helmet_otel.protocol.message import error_response
from helmet_otel.telemetry.feed import TelemetryFeed
from helmet_otel.transports.child import ServerCommand
from helmet_otel.transports.pipes import ByteReader, ByteWriter, open_reader, open_writer
from helmet_otel.transports.stdio import StdioProxy
from tests.e2e.helpers import REPO_ROOT, RawProcess, clean_env
from tests.otlp_receiver import OTLPReceiver
from tests.telemetry.helpers import proxy_env

RECORDING = REPO_ROOT / "tests" / "servers" / "recording_upstream.py"
DENIED = {"type": "policy_block", "policy_id": "sec-001"}


def call(msg_id: int, tool: str) -> bytes:
    request = {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call",
               "params": {"name": tool, "arguments": {}}}  # fmt: skip
    return orjson.dumps(request) + b"\n"


@dataclass
class Client:
    """The client side of one session: the proxy's stdin and stdout are our pipes."""

    proxy: StdioProxy
    record: Path  # every byte the session's server received
    to_proxy: ByteWriter
    from_proxy: ByteReader
    got: bytearray

    async def send(self, data: bytes) -> None:
        self.to_proxy.write(data)
        await self.to_proxy.drain()

    async def receive_lines(self, count: int) -> list[Any]:
        while self.got.count(b"\n") < count:
            chunk = await self.from_proxy.receive()
            assert chunk, "the proxy closed its stdout early"
            self.got += chunk
        return [orjson.loads(line) for line in bytes(self.got).splitlines()]


async def open_session(
    tmp_path: Path, name: str, feed: TelemetryFeed, before: Sequence[Interceptor] = ()
) -> Client:
    session = Session(transport="stdio")
    record = tmp_path / f"{name}.record"
    command = ServerCommand([sys.executable, str(RECORDING), str(record)], clean_env())
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_fd = os.open(tmp_path / f"{name}.stderr", os.O_WRONLY | os.O_CREAT)  # the proxy's stderr
    stderr_log = os.fdopen(stderr_fd, "wb", buffering=0)
    proxy = StdioProxy(
        command, session, [*before, feed.for_session(session)],
        stdin=os.fdopen(stdin_r, "rb", buffering=0), stdout=os.fdopen(stdout_w, "wb", buffering=0),
        stderr=stderr_log, signals=False,
    )  # fmt: skip
    to_proxy = await open_writer(os.fdopen(stdin_w, "wb", buffering=0))
    from_proxy = await open_reader(os.fdopen(stdout_r, "rb", buffering=0))
    return Client(proxy, record, to_proxy, from_proxy, bytearray())


def viewer(store: Path, *args: str) -> list[dict[str, Any]]:
    argv = [sys.executable, "-m", "helmet_otel", *args, "--store", str(store), "--format", "ndjson"]
    with RawProcess(argv, env=clean_env()) as process:
        assert process.wait(timeout=30) == 0, process.stderr.data()
        process.stdout.join(5)
        return [orjson.loads(line) for line in process.stdout.data().splitlines()]


def closed(rx: OTLPReceiver) -> bool:
    return sc.EVENT_PROXY_CLOSE in {r["event_name"] for r in rx.logs()}


@pytest.mark.anyio
async def test_two_concurrent_sessions_in_one_process(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    with OTLPReceiver() as rx:
        options = ProxyOptions(store=str(store), otlp_endpoint=rx.endpoint)
        feed = TelemetryFeed(options, proxy_env(rx.endpoint), service_name="two")
        statuses: list[int] = []
        with anyio.fail_after(60):
            clients = [await open_session(tmp_path, name, feed) for name in ("a", "b")]

            async def run(client: Client) -> None:
                statuses.append(await client.proxy.run())

            async with anyio.create_task_group() as tg:
                for client in clients:
                    tg.start_soon(run, client)
                a, b = clients
                # the same JSON-RPC ids in both sessions, interleaved
                for msg_id in (1, 2, 3):
                    await a.send(call(msg_id, f"a-{msg_id}"))
                    await b.send(call(msg_id, f"b-{msg_id}"))
                for client in clients:
                    answers = await client.receive_lines(3)
                    assert [answer["id"] for answer in answers] == [1, 2, 3]
                    client.to_proxy.close()  # the client goes: the session ends
            await feed.close()
        feed.kill()
        assert statuses == [0, 0]
        rx.wait_for(closed, timeout=20)
        ids = {client.proxy.session.id for client in clients}
        tool_of = {
            client.proxy.session.id: name for client, name in zip(clients, "ab", strict=True)
        }
        # OTLP: one trace per session; every SERVER span and record in its own session
        spans = rx.spans()
        roots = [s for s in spans if s["name"] == sc.SPAN_SESSION]
        assert {s["attributes"][sc.HELMET_SESSION_ID] for s in roots} == ids
        assert len({s["trace_id"] for s in roots}) == 2
        root_trace = {s["attributes"][sc.HELMET_SESSION_ID]: s["trace_id"] for s in roots}
        servers = [s for s in spans if s["kind"] == "SERVER"]
        assert len(servers) == 6
        for span in servers:
            session_id = span["attributes"][sc.HELMET_SESSION_ID]
            assert span["trace_id"] == root_trace[session_id]
            assert span["attributes"][sc.GEN_AI_TOOL_NAME].startswith(tool_of[session_id])
            assert span["attributes"][sc.NETWORK_TRANSPORT] == "pipe"
            assert span["status"]["code"] != "ERROR"
            assert sc.MCP_SESSION_ID not in span["attributes"]  # stdio has no protocol session
        responses = [r for r in rx.logs() if r["event_name"] == sc.EVENT_RESPONSE]
        assert len(responses) == 6
        for record in responses:
            session_id = record["attributes"][sc.HELMET_SESSION_ID]
            assert record["attributes"][sc.GEN_AI_TOOL_NAME].startswith(tool_of[session_id])
            assert record["trace_id"] == root_trace[session_id]
    # the store: two session rows, each with its own three calls
    rows = viewer(store, "sessions")
    assert sorted((row["session_id"], row["requests"], row["status"]) for row in rows) == sorted(
        (session_id, 3, "ended") for session_id in ids
    )
    for record in viewer(store, "logs", "--event", "response"):
        tool = record["attributes"][sc.GEN_AI_TOOL_NAME]
        assert tool.startswith(tool_of[record["session_id"]])


class DenyTool(BaseInterceptor):
    """Answers calls of one tool itself, as a policy block does."""

    def __init__(self, tool: str) -> None:
        self.tool = tool

    def before_forward(self, env: Envelope) -> None:
        msg = env.msg
        if msg.method == "tools/call" and msg.target_name == self.tool:
            env.reply = error_response(msg.id, -32001, "Tool access denied by policy", DENIED)


@pytest.mark.anyio
async def test_a_call_blocked_by_an_interceptor_is_answered_traced_and_recorded(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store.db"
    with OTLPReceiver() as rx:
        options = ProxyOptions(store=str(store), otlp_endpoint=rx.endpoint)
        feed = TelemetryFeed(options, proxy_env(rx.endpoint), service_name="policy")
        with anyio.fail_after(60):
            client = await open_session(tmp_path, "p", feed, [DenyTool("get-env")])
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.proxy.run)
                await client.send(call(1, "get-env") + call(2, "echo"))
                answers = await client.receive_lines(2)
                client.to_proxy.close()
            await feed.close()
        feed.kill()
        assert answers == [
            {"jsonrpc": "2.0", "id": 1,
             "error": {"code": -32001, "message": "Tool access denied by policy", "data": DENIED}},
            {"jsonrpc": "2.0", "id": 2, "result": {"method": "tools/call"}},
        ]  # fmt: skip
        assert b"get-env" not in client.record.read_bytes()  # it never reached the server
        session = client.proxy.session
        assert (session.requests, session.errors, session.pending) == (2, 1, {})
        rx.wait_for(closed, timeout=20)
        spans = {(s["name"], s["kind"]): s for s in rx.spans()}
        blocked = spans[("tools/call get-env", "SERVER")]
        assert blocked["status"] == {
            "code": "ERROR", "message": "Tool access denied by policy"
        }  # fmt: skip
        assert blocked["attributes"][sc.RPC_RESPONSE_STATUS_CODE] == "-32001"
        assert ("tools/call get-env", "CLIENT") not in spans  # no upstream call
        assert spans[("tools/call echo", "SERVER")]["status"]["code"] != ("ERROR")
        errors = [r for r in rx.logs() if r["event_name"] == sc.EVENT_ERROR]
        assert [(e["attributes"][sc.JSONRPC_REQUEST_ID], e["attributes"][sc.HELMET_ERROR_CODE])
                for e in errors] == [("1", -32001)]  # fmt: skip
        assert errors[0]["attributes"][sc.HELMET_ORIGIN] == "proxy"
        assert errors[0]["span_id"] == blocked["span_id"]
    stored = viewer(store, "logs", "--event", "error")
    assert [(r["attributes"][sc.JSONRPC_REQUEST_ID], r["attributes"][sc.HELMET_ERROR_CODE])
            for r in stored] == [("1", -32001)]  # fmt: skip
    rows = viewer(store, "sessions")
    assert [(row["requests"], row["errors"], row["status"]) for row in rows] == [(2, 1, "ended")]
