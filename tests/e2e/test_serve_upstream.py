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
