"""`helmet-otel serve --upstream URL` in front of server-everything's own Streamable HTTP transport:
the official MCP SDK's Streamable HTTP client sees what it sees directly; headers (Authorization
included), OAuth discovery paths and WWW-Authenticate pass through; each upstream session is a
helmet session with its own store row."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.e2e.helpers import clean_env
from tests.e2e.http_upstreams import EverythingHttp
from tests.e2e.serve_helpers import ServeProcess
from tests.e2e.test_serve_sdk import observe_http

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def comparable(observed: object) -> object:
    return json.loads(UUID.sub("<session>", json.dumps(observed)))


async def test_serve_upstream_matches_server_everything_direct(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    with EverythingHttp() as upstream:
        direct = await observe_http(upstream.url)
        with ServeProcess((), "--upstream", upstream.url, store=store) as serve:
            proxied = await observe_http(serve.url)
            assert serve.stop() == 0
        output = upstream.output()
    expected = comparable(direct.comparable(roots_race=True))
    got = comparable(proxied.comparable(roots_race=True))
    assert got["steps"] == expected["steps"]  # type: ignore[index]
    assert got == expected
    assert proxied.steps["trigger-long-running-operation progress"] == [
        {"progress": float(step), "total": 4.0, "message": None} for step in (1, 2, 3, 4)
    ]
    assert output.count(b"Received session termination request") == 2
    done = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "helmet_otel", "sessions", "--store", str(store), "--format",
         "ndjson"], capture_output=True, env=clean_env(), timeout=30, check=True,
    ))  # fmt: skip
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 1, rows
    assert rows[0]["transport"] == "http"
    assert rows[0]["status"] == "ended"


class AuthUpstream:
    """A stdlib HTTP server standing in for a remote MCP server behind OAuth: discovery
    documents, 401 with WWW-Authenticate without a token, and an echo of what it was sent."""

    RESOURCE = b'{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://as.example.com"]}'
    CHALLENGE = 'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'

    def __init__(self) -> None:
        import http.server
        import threading

        self.seen: list[dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.startswith("/.well-known/oauth-protected-resource"):
                    self._send(200, owner.RESOURCE, {"x-upstream": "yes"})
                else:
                    self._send(404, b'{"error":"not here"}')

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                owner.seen.append({k.lower(): v for k, v in self.headers.items()})
                if self.headers.get("authorization") != "Bearer good":
                    self._send(401, b'{"error":"invalid_token"}',
                               {"www-authenticate": owner.CHALLENGE})  # fmt: skip
                    return
                request = json.loads(body)
                answer = {"jsonrpc": "2.0", "id": request["id"], "result": {"echo": request}}
                self._send(200, json.dumps(answer).encode(), {"mcp-session-id": "up-1"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_serve_upstream_passes_auth_and_oauth_discovery_through(tmp_path: Path) -> None:
    import httpx2

    upstream = AuthUpstream()
    store = tmp_path / "store.db"
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
    try:
        with ServeProcess((), "--upstream", upstream.url, store=store) as serve:
            base = serve.url.rsplit("/mcp", 1)[0]
            async with httpx2.AsyncClient(timeout=20) as client:
                meta = await client.get(f"{base}/.well-known/oauth-protected-resource/mcp")
                assert meta.status_code == 200
                assert meta.content == AuthUpstream.RESOURCE
                assert meta.headers["x-upstream"] == "yes"
                refused = await client.post(serve.url, json=initialize, headers={
                    "accept": "application/json, text/event-stream"})  # fmt: skip
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"] == AuthUpstream.CHALLENGE
                assert refused.content == b'{"error":"invalid_token"}'
                accepted = await client.post(serve.url, json=initialize, headers={
                    "accept": "application/json, text/event-stream",
                    "authorization": "Bearer good", "x-custom": "kept",
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})  # fmt: skip
                assert accepted.status_code == 200
                assert accepted.headers["mcp-session-id"] == "up-1"
                echoed = accepted.json()["result"]["echo"]
                # telemetry on: our CLIENT span's context is written into _meta (the header's
                # context is only linked)
                ours = echoed["params"].pop("_meta")["traceparent"]
                assert not ours.startswith("00-0af7651916cd43dd8448eb211c80319c")
                assert echoed == initialize
            assert serve.stop() == 0
    finally:
        upstream.close()
    sent = upstream.seen[-1]
    assert sent["authorization"] == "Bearer good" and sent["x-custom"] == "kept"
    assert sent["host"] == upstream.url.split("/")[2]
    assert "accept-encoding" not in sent
    done = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "helmet_otel", "logs", "--store", str(store), "--format",
         "ndjson", "--errors"], capture_output=True, env=clean_env(), timeout=30, check=True,
    ))  # fmt: skip
    errors = [json.loads(line) for line in done.stdout.splitlines()]
    assert errors, done.stderr
    assert {e["attributes"].get("error.type") for e in errors} == {"401"}, errors
    assert b"Bearer good" not in store.read_bytes()
