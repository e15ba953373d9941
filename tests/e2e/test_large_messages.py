"""A 50 MB message passes intact through `serve` (a JSON answer) and through `connect` in front
of `serve` (an SSE answer: the request asks for progress): the server receives the client's
bytes, the client receives the server's, byte for byte. Trace context is not written into
``_meta`` (``--no-propagate``) so that the bytes can be compared whole; the store is on for
`serve`, so telemetry takes its share of the 50 MB too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.e2e.helpers import clean_env
from tests.e2e.serve_helpers import PROBE, ServeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SIZE = 50 * 1000 * 1000
WAIT = 60.0
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def big_text() -> str:
    line = "".join(chr(32 + (i * 7) % 95) for i in range(95)).replace("\\", "/").replace('"', "'")
    return (line * (SIZE // len(line) + 1))[:SIZE]


def big_call(msg_id: int, meta: dict[str, Any] | None = None) -> tuple[bytes, bytes]:
    """A ~50 MB ``probe/echo`` request and the exact answer the probe writes for it."""
    params: dict[str, Any] = {"text": big_text()}
    if meta is not None:
        params["_meta"] = meta
    request = dumps({"jsonrpc": "2.0", "id": msg_id, "method": "probe/echo", "params": params})
    answer = dumps({"jsonrpc": "2.0", "id": msg_id, "result": {"params": params}})
    assert len(request) > SIZE
    return request, answer


def recorded_line(record: Path, index: int) -> bytes:
    return record.read_bytes().split(b"\n")[index]


async def test_fifty_megabytes_through_serve(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    store = tmp_path / "store.db"
    request, answer = big_call(7)
    with ServeProcess((*PROBE, str(record)), "--no-propagate", store=store) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            response = await client.post(serve.url, json=INIT, headers=ACCEPT)
            headers = {**ACCEPT, "mcp-session-id": response.headers["mcp-session-id"]}
            response = await client.post(serve.url, content=request, headers=headers)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.content == answer
        assert recorded_line(record, 1) == request
        assert serve.stop() == 0
    done = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "helmet_otel", "sessions", "--store", str(store), "--format",
         "ndjson"], capture_output=True, env=clean_env(), timeout=30, check=True,
    ))  # fmt: skip
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (row["requests"], row["errors"]) == (2, 0), row


async def test_fifty_megabytes_through_connect_and_serve(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    request, answer = big_call(8, {"progressToken": "big"})
    progress = dumps({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": "big", "progress": 1}})  # fmt: skip
    with ServeProcess((*PROBE, str(record))) as upstream:
        argv = [sys.executable, "-m", "helmet_otel", "connect", "--no-store", "--no-propagate",
                upstream.url]  # fmt: skip
        async with await anyio.open_process(argv, env=clean_env()) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            out = bytearray()
            with anyio.fail_after(WAIT):
                note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                await proc.stdin.send(dumps(INIT) + b"\n" + dumps(note) + b"\n")
                await proc.stdin.send(request + b"\n")
                ends = 0
                while ends < 3:
                    chunk = await proc.stdout.receive(1 << 20)
                    ends += chunk.count(b"\n")
                    out.extend(chunk)
                await proc.stdin.aclose()
                assert await proc.wait() == 0
    first, second, third, rest = bytes(out).split(b"\n", 3)
    assert json.loads(first)["id"] == 0
    assert second == progress
    assert third == answer
    assert rest == b""
    assert recorded_line(record, 2) == request
