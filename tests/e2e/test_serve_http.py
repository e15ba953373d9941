"""`helmet-otel serve` over real sockets, driven with raw HTTP: sessions, streams, cancellation,
the child's exit, idle timeout and the 2026-07-28 header checks (the probe server records every
line it receives, so what reached the server is checked byte for byte)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.e2e.serve_helpers import PROBE, ServeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT = 10.0
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def lines(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


async def until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not predicate():
            await anyio.sleep(0.01)


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


async def initialize(client: httpx2.AsyncClient, url: str) -> str:
    response = await client.post(url, json=INIT, headers=ACCEPT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.headers["mcp-session-id"]


async def test_a_legacy_session_from_initialize_to_delete(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    with ServeProcess((*PROBE, str(record))) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            sid = await initialize(client, serve.url)
            headers = {**ACCEPT, "mcp-session-id": sid}
            assert len(serve.children()) == 1
            # A pretty-printed body reaches the server as one line, every other byte unchanged.
            body = (
                b'{"jsonrpc": "2.0",\n  "id": 7, "method": "probe/echo",\r\n "params": {"x": 1.50}}'
            )
            response = await client.post(serve.url, content=body, headers=headers)
            assert response.json() == {"jsonrpc": "2.0", "id": 7, "result": {"params": {"x": 1.5}}}
            raw = (tmp_path / "record.jsonl").read_bytes().splitlines()
            assert (
                raw[1]
                == b'{"jsonrpc": "2.0",   "id": 7, "method": "probe/echo",   "params": {"x": 1.50}}'
            )
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            response = await client.post(serve.url, json=note, headers=headers)
            assert response.status_code == 202
            # no session id, an unknown one
            response = await client.post(
                serve.url, json={**INIT, "method": "probe/echo"}, headers=ACCEPT
            )
            assert response.status_code == 400
            response = await client.post(
                serve.url, json=note, headers={**ACCEPT, "mcp-session-id": "nope"}
            )
            assert response.status_code == 404
            # DELETE ends the session and its child
            response = await client.delete(serve.url, headers={"mcp-session-id": sid})
            assert response.status_code == 200
            await until(lambda: not serve.children())
            response = await client.post(serve.url, json=note, headers=headers)
            assert response.status_code == 404


async def test_progress_streams_before_the_result(tmp_path: Path) -> None:
    with ServeProcess((*PROBE, str(tmp_path / "record.jsonl"))) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            sid = await initialize(client, serve.url)
            call = {"jsonrpc": "2.0", "id": "p", "method": "probe/progress",
                    "params": {"_meta": {"progressToken": 42}}}  # fmt: skip
            response = await client.post(
                serve.url, json=call, headers={**ACCEPT, "mcp-session-id": sid}
            )
            assert response.headers["content-type"] == "text/event-stream"
            got = events(response.text)
            assert [e.get("method") or "result" for e in got] == [
                "notifications/progress",
                "notifications/progress",
                "result",
            ]
            assert [e["params"]["progress"] for e in got[:2]] == [1, 2]
            assert got[2] == {"jsonrpc": "2.0", "id": "p", "result": {"done": True}}


async def test_a_server_request_goes_to_the_get_stream_and_its_answer_back(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    with ServeProcess((*PROBE, str(record))) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            sid = await initialize(client, serve.url)
            headers = {**ACCEPT, "mcp-session-id": sid}
            result: list[Any] = []
            async with client.stream(
                "GET", serve.url, headers={"accept": "text/event-stream", "mcp-session-id": sid}
            ) as stream:
                assert stream.headers["content-type"] == "text/event-stream"

                async def ask() -> None:
                    call = {"jsonrpc": "2.0", "id": 5, "method": "probe/ask"}
                    result.append((await client.post(serve.url, json=call, headers=headers)).json())

                with anyio.fail_after(WAIT):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(ask)
                        async for line in stream.aiter_lines():
                            if line.startswith("data: "):
                                request = json.loads(line[6:])
                                break
                        assert request == {
                            "jsonrpc": "2.0",
                            "id": "srv-1",
                            "method": "roots/list",
                            "params": {},
                        }
                        answer = {"jsonrpc": "2.0", "id": "srv-1", "result": {"roots": []}}
                        response = await client.post(serve.url, json=answer, headers=headers)
                        assert response.status_code == 202
            assert result == [{"jsonrpc": "2.0", "id": 5, "result": {"answer": {"roots": []}}}]


async def test_a_client_that_disconnects_cancels_its_request_upstream(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    with ServeProcess((*PROBE, str(record))) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            sid = await initialize(client, serve.url)
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            call = {"jsonrpc": "2.0", "id": 99, "method": "probe/hang"}

            async def post() -> None:
                await client.post(serve.url, json=call, headers={**ACCEPT, "mcp-session-id": sid})

            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(post)
                    await until(lambda: any(m.get("method") == "probe/hang" for m in lines(record)))
                    tg.cancel_scope.cancel()
        await until(
            lambda: any(m.get("method") == "notifications/cancelled" for m in lines(record))
        )
        cancel = next(m for m in lines(record) if m.get("method") == "notifications/cancelled")
        assert cancel["params"]["requestId"] == 99


async def test_the_child_exits_then_its_session_is_404(tmp_path: Path) -> None:
    with ServeProcess((*PROBE, str(tmp_path / "record.jsonl"))) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            sid = await initialize(client, serve.url)
            headers = {**ACCEPT, "mcp-session-id": sid}
            response = await client.post(
                serve.url, json={"jsonrpc": "2.0", "id": 1, "method": "probe/exit"}, headers=headers
            )
            error = response.json()["error"]
            assert error["code"] == -32000 and "status 3" in error["message"]
            response = await client.post(
                serve.url, json={"jsonrpc": "2.0", "id": 2, "method": "probe/echo"}, headers=headers
            )
            assert response.status_code == 404
            assert response.json()["error"]["message"] == "Session not found"
            # a new session works
            await initialize(client, serve.url)


async def test_our_stderr_lines_about_the_command_are_scrubbed(tmp_path: Path) -> None:
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4"
    missing = str(tmp_path / secret)
    with ServeProcess((missing,)) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            response = await client.post(serve.url, json=INIT, headers=ACCEPT)
        assert response.status_code == 200, response.text
        assert response.json()["error"]["code"] == -32000
        serve.stop()
        stderr = serve.stderr().decode()
    assert secret not in stderr, stderr
    assert f"serving {tmp_path}/[REDACTED:openai-key] on http://" in stderr, stderr
    assert (
        f"helmet-otel: MCP server could not be started: command not found: {tmp_path}/"
        "[REDACTED:openai-key]\n"
    ) in stderr, stderr


async def test_an_idle_session_ends(tmp_path: Path) -> None:
    with ServeProcess(
        (*PROBE, str(tmp_path / "record.jsonl")), "--session-idle-timeout", "200ms"
    ) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            sid = await initialize(client, serve.url)
            await until(lambda: not serve.children())
            response = await client.post(
                serve.url,
                json={"jsonrpc": "2.0", "id": 2, "method": "probe/echo"},
                headers={**ACCEPT, "mcp-session-id": sid},
            )
            assert response.status_code == 404


def modern(method: str, **params: Any) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"},
    }
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}


async def test_2026_requests_are_stateless_and_their_headers_checked(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    with ServeProcess((*PROBE, str(record))) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            base = {**ACCEPT, "mcp-protocol-version": "2026-07-28"}
            response = await client.post(
                serve.url,
                json=modern("probe/echo", a=1),
                headers={**base, "mcp-method": "probe/echo"},
            )
            assert response.status_code == 200
            assert "mcp-session-id" not in response.headers
            assert response.json()["result"]["params"]["a"] == 1
            # the same identity shares one child
            response = await client.post(
                serve.url,
                json=modern("probe/echo", a=2),
                headers={**base, "mcp-method": "probe/echo"},
            )
            assert response.json()["result"]["params"]["a"] == 2
            assert len(serve.children()) == 1
            for headers in (
                {**base, "mcp-method": "tools/list"},
                base,
                {**base, "mcp-method": "tools/call", "mcp-name": "other"},
                {**base, "mcp-method": "tools/call"},
            ):
                method = "tools/call" if headers.get("mcp-method") == "tools/call" else "probe/echo"
                response = await client.post(
                    serve.url, json=modern(method, name="echo"), headers=headers
                )
                assert response.status_code == 400, headers
                assert response.json()["error"]["code"] == -32020
            response = await client.post(
                serve.url,
                json=modern("tools/call", name="é"),
                headers={**base, "mcp-method": "tools/call", "mcp-name": "=?base64?w6k=?="},
            )
            assert response.status_code == 200
        assert [m["method"] for m in lines(record)] == ["probe/echo", "probe/echo", "tools/call"]
