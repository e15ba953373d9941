"""`connect` resumes SSE streams the server ended early, from the last event id it gave
(``Last-Event-ID``, after its ``retry`` hint): a request's POST stream (the answer arrives on the
resumed stream) and the GET stream; a request whose stream ended before its answer, with no id
to resume from, is answered at once with a JSON-RPC error instead of waiting for the timeout.

The upstream is a small stdlib HTTP server that ends its streams on purpose and records the
``Last-Event-ID`` of every GET."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import anyio
import pytest
from anyio.abc import Process

from tests.e2e.helpers import clean_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT = 15.0
SID = "resume-session"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def log(text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": text}}  # fmt: skip


def progress(token: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": 1}}  # fmt: skip


class Upstream(BaseHTTPRequestHandler):
    """POST ``tools/call`` ``resume``: an event ``p1`` (progress, ``retry: 20``), then the stream
    ends; the answer comes on the GET that resumes from ``p1``. ``cut``: progress without an
    id, then the stream ends. GET without ``Last-Event-ID``: ``g1`` then the end; from ``g1``:
    ``g2`` then the end; any other GET: 405."""

    protocol_version = "HTTP/1.1"
    gets: ClassVar[list[str | None]] = []  # the Last-Event-ID of every GET, in order
    answers: ClassVar[dict[str, Any]] = {}  # the resume call's answer, waiting for its GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: bytes = b"", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _events(self, *events: bytes) -> None:
        """An SSE answer that ends when the connection closes."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(event)
            self.wfile.flush()
        self.close_connection = True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        method, msg_id = body.get("method"), body.get("id")
        if method == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "resumable", "version": "1"}}  # fmt: skip
            answer = dumps({"jsonrpc": "2.0", "id": msg_id, "result": result})
            self._json(200, answer, {"mcp-session-id": SID})
        elif msg_id is None or method is None:
            self._json(202)
        elif body["params"]["name"] == "resume":
            token = body["params"]["_meta"]["progressToken"]
            result = {"content": [{"type": "text", "text": "resumed"}]}
            Upstream.answers["p1"] = {"jsonrpc": "2.0", "id": msg_id, "result": result}
            self._events(b"id: p1\nretry: 20\ndata: " + dumps(progress(token)) + b"\n\n")
        else:  # "cut"
            token = body["params"]["_meta"]["progressToken"]
            self._events(b"data: " + dumps(progress(token)) + b"\n\n")

    def do_GET(self) -> None:
        last = self.headers.get("last-event-id")
        Upstream.gets.append(last)
        if last is None and Upstream.gets.count(None) == 1:
            self._events(b"id: g1\ndata: " + dumps(log("first")) + b"\n\n")
        elif last == "g1":
            self._events(b"id: g2\ndata: " + dumps(log("second")) + b"\n\n")
        elif last == "p1" and "p1" in Upstream.answers:
            self._events(b"id: p2\ndata: " + dumps(Upstream.answers.pop("p1")) + b"\n\n")
        else:
            self._json(405)

    def do_DELETE(self) -> None:
        self._json(200)


@contextmanager
def upstream() -> Iterator[str]:
    Upstream.gets = []
    Upstream.answers = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()


async def read_message(proc: Process, buffer: bytearray) -> dict[str, Any]:
    assert proc.stdout is not None
    while b"\n" not in buffer:
        buffer.extend(await proc.stdout.receive())
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


def call(msg_id: int, name: str) -> bytes:
    return dumps({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call",
                  "params": {"name": name, "arguments": {}, "_meta": {"progressToken": name}}})  # fmt: skip


async def test_connect_resumes_streams_and_fails_a_cut_one_at_once() -> None:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "1"}}}  # fmt: skip
    with upstream() as url:
        argv = [sys.executable, "-m", "helmet_otel", "connect", "--no-store", url]
        async with await anyio.open_process(argv, env=clean_env()) as proc:
            assert proc.stdin is not None
            buffer = bytearray()
            got: list[dict[str, Any]] = []
            with anyio.fail_after(WAIT):
                await proc.stdin.send(dumps(init) + b"\n")
                got.append(await read_message(proc, buffer))
                note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                await proc.stdin.send(dumps(note) + b"\n")
                await proc.stdin.send(call(1, "resume") + b"\n")
                while not any(m.get("id") == 1 for m in got):
                    got.append(await read_message(proc, buffer))
                started = time.monotonic()
                await proc.stdin.send(call(2, "cut") + b"\n")
                while not any(m.get("id") == 2 for m in got):
                    got.append(await read_message(proc, buffer))
                cut_after = time.monotonic() - started
                while len([m for m in got if m.get("method") == "notifications/message"]) < 2:
                    got.append(await read_message(proc, buffer))
                await proc.stdin.aclose()
                assert await proc.wait() == 0
    assert got[0]["id"] == 0
    resumed = [
        m for m in got if m.get("id") == 1 or m.get("params", {}).get("progressToken") == "resume"
    ]
    assert resumed == [
        progress("resume"),
        {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "resumed"}]}},
    ]
    cut = [m for m in got if m.get("id") == 2 or m.get("params", {}).get("progressToken") == "cut"]
    assert cut == [
        progress("cut"),
        {"jsonrpc": "2.0", "id": 2, "error": {
            "code": -32000, "message": "the MCP server ended the response stream before answering"}},
    ]  # fmt: skip
    assert cut_after < 5.0  # not the 5-minute request timeout
    assert [m for m in got if m.get("method") == "notifications/message"] == [
        log("first"),
        log("second"),
    ]
    # the GET stream: opened, then resumed from g1 (and from g2 if connect is still running
    # by then: refused, the stream ends); the POST stream of "resume": resumed from p1
    stream = [g for g in Upstream.gets if g is None or g.startswith("g")]
    assert stream[:2] == [None, "g1"] and set(stream[2:]) <= {"g2"}, Upstream.gets
    assert [g for g in Upstream.gets if g is not None and g.startswith("p")] == ["p1"]
