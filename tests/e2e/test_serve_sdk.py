"""The official MCP SDK client over Streamable HTTP through `serve -- server-everything stdio`
sees what it sees over stdio directly (tools with progress, sampling, elicitation, roots,
resources, prompts, completion, cancellation), and 50 concurrent SDK sessions each get their own
child, trace and store row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.helpers import clean_env, everything_server
from tests.e2e.serve_helpers import PROBE, ServeProcess
from tests.e2e.test_sdk_parity import SCENARIO_TIMEOUT, Observed, everything_scenario, observe

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

SESSIONS = 50


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def observe_http(url: str) -> Observed:
    obs = Observed()
    with anyio.fail_after(SCENARIO_TIMEOUT):
        async with Client(
            streamable_http_client(url), mode="legacy", cache=None, log_level="debug",
            sampling_callback=obs.on_sampling, elicitation_callback=obs.on_elicitation,
            list_roots_callback=obs.on_list_roots, message_handler=obs.on_message,
        ) as client:  # fmt: skip
            await everything_scenario(client, obs, True)
    return obs


async def test_server_everything_through_serve_matches_stdio(tmp_path: Path) -> None:
    direct, _ = await observe(everything_server(), everything_scenario, "legacy", tmp_path / "e")
    with ServeProcess(everything_server()) as serve:
        proxied = await observe_http(serve.url)
    expected = direct.comparable(roots_race=True)
    got = proxied.comparable(roots_race=True)
    assert got["steps"] == expected["steps"]
    assert got == expected
    assert proxied.steps["trigger-long-running-operation progress"] == [
        {"progress": float(step), "total": 4.0, "message": None} for step in (1, 2, 3, 4)
    ]


async def test_fifty_concurrent_sessions_each_get_a_child_a_trace_and_a_store_row(
    tmp_path: Path,
) -> None:
    """50 SDK clients at once, each its own legacy session (the probe server: a stdlib child that
    starts in milliseconds, so the test measures the proxy rather than 50 node start-ups)."""
    store = tmp_path / "store.db"
    opened = 0
    all_open = anyio.Event()
    release = anyio.Event()
    results: list[Any] = []

    async def one(url: str, n: int) -> None:
        nonlocal opened
        async with Client(streamable_http_client(url), mode="legacy", cache=None) as client:
            results.append(await client.send_ping())
            opened += 1
            if opened == SESSIONS:
                all_open.set()
            await release.wait()

    server = (*PROBE, str(tmp_path / "record.jsonl"))
    with ServeProcess(server, store=store) as serve:
        with anyio.fail_after(SCENARIO_TIMEOUT):
            async with anyio.create_task_group() as tg:
                for n in range(SESSIONS):
                    tg.start_soon(one, serve.url, n)
                await all_open.wait()
                pids = {child.pid for child in serve.children()}
                release.set()
        assert len(pids) == SESSIONS
        assert len(results) == SESSIONS
        assert serve.stop() == 0
    rows = await helmet_ndjson("sessions", store)
    assert len(rows) == SESSIONS, rows
    assert {row["transport"] for row in rows} == {"http"}
    assert len({row["session_id"] for row in rows}) == SESSIONS
    assert {row["status"] for row in rows} == {"ended"}, rows
    assert {row["exit_reason"] for row in rows} == {"the client ended the session (DELETE)"}
    assert all(row["requests"] == 2 for row in rows), rows  # initialize, ping
    records = await helmet_ndjson("logs", store, "--event", "helmet.session_start")
    traces = {r["session_id"]: r["trace_id"] for r in records}
    assert set(traces) == {row["session_id"] for row in rows}
    assert len(set(traces.values())) == SESSIONS


async def helmet_ndjson(command: str, store: Path, *options: str) -> list[dict[str, Any]]:
    done = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "helmet_otel", command, "--store", str(store), "--format",
         "ndjson", *options], capture_output=True, env=clean_env(), timeout=30, check=True,
    ))  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()]
