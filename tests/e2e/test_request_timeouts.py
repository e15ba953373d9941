"""`--request-timeout` on every HTTP path (`serve -- CMD`, `serve --upstream`, `connect`): a
request with no answer in time gets -32001 naming the timeout and is cancelled upstream; each
progress notification for a request starts its clock again, so a slow call that reports
progress is not cut off; a client that disconnects while it waits for a JSON answer through
`serve --upstream` cancels the request upstream. The probe server records every line it gets,
so what reached the server is checked exactly."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import Process

from tests.e2e.helpers import clean_env
from tests.e2e.serve_helpers import PROBE, ServeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT = 15.0
TIMEOUT = "1"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}}  # fmt: skip
# six progress notifications 0.3 s apart: 1.8 s in all, longer than the 1 s timeout
SLOW = {"jsonrpc": "2.0", "id": 5, "method": "probe/slow",
        "params": {"steps": 6, "interval": 0.3, "_meta": {"progressToken": "tok"}}}  # fmt: skip
HANG = {"jsonrpc": "2.0", "id": 6, "method": "probe/hang"}
TIMED_OUT = {
    "jsonrpc": "2.0", "id": 6,
    "error": {"code": -32001, "message": "request timed out after 1 s (helmet-otel --request-timeout)",
              "data": {"timeout": 1.0}},
}  # fmt: skip


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


def cancels(record: Path) -> list[dict[str, Any]]:
    return [m["params"] for m in lines(record) if m.get("method") == "notifications/cancelled"]


async def slow_and_hanging(url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A legacy session; then the slow call (with progress) and the hanging one at once."""
    got: dict[str, Any] = {}
    async with httpx2.AsyncClient(timeout=WAIT) as client:
        response = await client.post(url, json=INIT, headers=ACCEPT)
        headers = {**ACCEPT, "mcp-session-id": response.headers["mcp-session-id"]}

        async def call(name: str, body: dict[str, Any]) -> None:
            got[name] = await client.post(url, json=body, headers=headers)

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "slow", SLOW)
                tg.start_soon(call, "hang", HANG)
    slow, hang = got["slow"], got["hang"]
    assert slow.headers["content-type"] == "text/event-stream"
    assert hang.headers["content-type"] == "application/json"
    return events(slow.text), hang.json()


def progress(step: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "tok", "progress": step, "total": 6}}  # fmt: skip


EXPECTED_SLOW = [*(progress(step) for step in range(1, 7)),
                 {"jsonrpc": "2.0", "id": 5, "result": {"done": True}}]  # fmt: skip
EXPECTED_CANCEL = {
    "requestId": 6,
    "reason": "request timed out after 1 s (helmet-otel --request-timeout)",
}


async def test_serve_times_out_a_request_and_progress_resets_the_clock(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    with ServeProcess((*PROBE, str(record)), "--request-timeout", TIMEOUT) as serve:
        slow, hang = await slow_and_hanging(serve.url)
        assert slow == EXPECTED_SLOW
        assert hang == TIMED_OUT
        await until(lambda: bool(cancels(record)))
        assert cancels(record) == [EXPECTED_CANCEL]


async def test_serve_upstream_times_out_resets_on_progress_and_cancels_on_disconnect(
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    inner = ServeProcess((*PROBE, str(record)))
    with inner, ServeProcess((), "--upstream", inner.url, "--request-timeout", TIMEOUT) as serve:
        slow, hang = await slow_and_hanging(serve.url)
        assert slow == EXPECTED_SLOW
        assert hang == TIMED_OUT
        await until(lambda: bool(cancels(record)))
        assert cancels(record) == [EXPECTED_CANCEL]
        # A client that goes away while waiting for a JSON answer: cancelled upstream.
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            response = await client.post(serve.url, json=INIT, headers=ACCEPT)
            headers = {**ACCEPT, "mcp-session-id": response.headers["mcp-session-id"]}
            call = {"jsonrpc": "2.0", "id": 77, "method": "probe/hang"}

            async def post() -> None:
                await client.post(serve.url, json=call, headers=headers)

            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(post)
                    await until(lambda: any(m.get("id") == 77 for m in lines(record)))
                    tg.cancel_scope.cancel()
        await until(lambda: len(cancels(record)) == 2)
        assert cancels(record)[1] == {"requestId": 77, "reason": "the HTTP client disconnected"}


async def read_message(proc: Process, buffer: bytearray) -> dict[str, Any]:
    assert proc.stdout is not None
    while b"\n" not in buffer:
        chunk = await proc.stdout.receive()
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


async def test_connect_resets_the_clock_on_progress(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    with ServeProcess((*PROBE, str(record))) as upstream:
        argv = [sys.executable, "-m", "helmet_otel", "connect", "--no-store",
                "--request-timeout", TIMEOUT, upstream.url]  # fmt: skip
        async with await anyio.open_process(argv, env=clean_env()) as proc:
            assert proc.stdin is not None
            buffer = bytearray()
            with anyio.fail_after(WAIT):
                await proc.stdin.send(json.dumps(INIT).encode() + b"\n")
                assert (await read_message(proc, buffer))["id"] == 0
                note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                await proc.stdin.send(json.dumps(note).encode() + b"\n")
                await proc.stdin.send(json.dumps(SLOW).encode() + b"\n")
                await proc.stdin.send(json.dumps(HANG).encode() + b"\n")
                got = [await read_message(proc, buffer) for _ in range(8)]
                await proc.stdin.aclose()
                assert await proc.wait() == 0
        assert [m for m in got if m.get("id") != 6] == EXPECTED_SLOW
        assert [m for m in got if m.get("id") == 6] == [TIMED_OUT]
        await until(lambda: bool(cancels(record)))
        assert cancels(record) == [EXPECTED_CANCEL]
