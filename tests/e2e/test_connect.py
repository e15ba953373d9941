"""`helmet-otel connect URL` with the official MCP SDK's stdio client in front of server-everything's
own HTTP transports: the client sees what it sees over Streamable HTTP directly, also after the
server forgot the session (a restart: its 400 "No valid session ID"; `serve` whose child died:
404), and through the deprecated HTTP+SSE transport when that is all the server has."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from tests.e2e.helpers import REPO_ROOT, clean_env, everything_server
from tests.e2e.http_upstreams import EverythingHttp
from tests.e2e.serve_helpers import ServeProcess
from tests.e2e.test_sdk_parity import SCENARIO_TIMEOUT, everything_scenario, observe
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


def connect_argv(url: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "helmet_otel", "connect", *options, url]


@asynccontextmanager
async def connected(argv: list[str], errlog: Path) -> AsyncGenerator[Client]:
    params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=REPO_ROOT, env=clean_env())
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err), mode="legacy", cache=None) as client:
            yield client


def leaves(group: BaseExceptionGroup[MCPError]) -> list[MCPError]:
    found: list[MCPError] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def sum_of(client: Client, a: int, b: int) -> str:
    result = await client.call_tool("get-sum", {"a": a, "b": b})
    return result.content[0].text  # type: ignore[union-attr]


async def test_connect_matches_streamable_http_direct(tmp_path: Path) -> None:
    with EverythingHttp() as upstream:
        direct = await observe_http(upstream.url)
        proxied, stderr = await observe(
            connect_argv(upstream.url, "--no-store"), everything_scenario, "legacy",
            tmp_path / "connect.stderr",
        )  # fmt: skip
        output = upstream.output()
    # server-everything names its own session id in some log lines: one per session
    expected = json.loads(UUID.sub("<session>", json.dumps(direct.comparable(roots_race=True))))
    got = json.loads(UUID.sub("<session>", json.dumps(proxied.comparable(roots_race=True))))
    assert got["steps"] == expected["steps"]
    assert got == expected
    assert proxied.steps["trigger-long-running-operation progress"] == [
        {"progress": float(step), "total": 4.0, "message": None} for step in (1, 2, 3, 4)
    ]
    # the session was DELETEd at exit: both clients' sessions ended that way
    assert output.count(b"Received session termination request") == 2, output[-2000:]
    assert "helmet-otel" not in stderr, stderr


async def test_connect_renews_a_session_the_server_forgot_after_a_restart(tmp_path: Path) -> None:
    errlog = tmp_path / "connect.stderr"
    upstream = EverythingHttp()
    try:
        with anyio.fail_after(SCENARIO_TIMEOUT):
            async with connected(connect_argv(upstream.url, "--no-store"), errlog) as client:
                assert await sum_of(client, 1, 2) == "The sum of 1 and 2 is 3."
                port = upstream.port
                upstream.stop()
                upstream = EverythingHttp(port=port)  # a new process: it knows no session
                assert await sum_of(client, 20, 22) == "The sum of 20 and 22 is 42."
                tools = await client.list_tools()
                assert "get-sum" in [tool.name for tool in tools.tools]
    finally:
        upstream.stop()
    stderr = errlog.read_text()
    assert stderr.count("forgot the session: re-initialized it") >= 1, stderr


async def test_connect_renews_after_404_from_serve_whose_child_died(tmp_path: Path) -> None:
    errlog = tmp_path / "connect.stderr"
    with ServeProcess(everything_server()) as serve:
        with anyio.fail_after(SCENARIO_TIMEOUT):
            async with connected(connect_argv(serve.url, "--no-store"), errlog) as client:
                assert await sum_of(client, 1, 2) == "The sum of 1 and 2 is 3."
                (child,) = serve.children()
                child.kill()
                await anyio.to_thread.run_sync(child.wait, 10)
                # serve now answers 404 for the session; connect re-initializes (a new child).
                # A call that reaches serve before it has noticed the child's death is one the
                # dead child took: serve answers it with the exit (-32000); the next one renews.
                try:
                    answer = await sum_of(client, 3, 4)
                except MCPError as exc:
                    assert "killed by SIGKILL before responding" in str(exc), exc
                    answer = await sum_of(client, 3, 4)
                assert answer == "The sum of 3 and 4 is 7."
                (new_child,) = serve.children()
                assert new_child.pid != child.pid
    stderr = errlog.read_text()
    assert stderr.count("forgot the session: re-initialized it") == 1, stderr


async def test_connect_falls_back_to_http_sse(tmp_path: Path) -> None:
    errlog = tmp_path / "connect.stderr"
    with EverythingHttp("sse") as upstream:
        with anyio.fail_after(SCENARIO_TIMEOUT):
            async with connected(connect_argv(upstream.url, "--no-store"), errlog) as client:
                assert await sum_of(client, 2, 40) == "The sum of 2 and 40 is 42."
                updates: list[float] = []

                async def progress(
                    progress: float, total: float | None, message: str | None
                ) -> None:
                    updates.append(progress)

                result = await client.call_tool(
                    "trigger-long-running-operation", {"duration": 0.1, "steps": 2},
                    progress_callback=progress,
                )  # fmt: skip
                assert updates == [1.0, 2.0]
                assert "completed" in result.content[0].text  # type: ignore[union-attr]
    assert "has only the deprecated HTTP+SSE transport: using it" in errlog.read_text()


async def test_connect_answers_an_unreachable_server_with_the_reason(tmp_path: Path) -> None:
    from tests.e2e.http_upstreams import free_port

    url = f"http://127.0.0.1:{free_port()}/mcp"
    errlog = tmp_path / "connect.stderr"
    errors: list[MCPError] = []
    with anyio.fail_after(SCENARIO_TIMEOUT):
        try:
            async with connected(connect_argv(url, "--no-store"), errlog):
                pass
        except* MCPError as group:
            errors.extend(leaves(group))
    (error,) = errors
    assert error.error.code == -32000
    assert error.error.message.startswith("MCP server unreachable: cannot connect to 127.0.0.1:"), (
        error.error.message
    )


async def test_connect_times_out_a_request_and_records_the_http_upstream(tmp_path: Path) -> None:
    errlog = tmp_path / "connect.stderr"
    store = tmp_path / "store.db"
    with EverythingHttp() as upstream:
        argv = connect_argv(upstream.url, "--store", str(store), "--request-timeout", "0.5")
        with anyio.fail_after(SCENARIO_TIMEOUT):
            async with connected(argv, errlog) as client:
                with pytest.raises(MCPError) as timed_out:
                    await client.call_tool(
                        "trigger-long-running-operation", {"duration": 5, "steps": 5}
                    )
                assert await sum_of(client, 1, 1) == "The sum of 1 and 1 is 2."
    assert timed_out.value.error.code == -32001
    assert timed_out.value.error.message == (
        "request timed out after 0.5 s (helmet-otel --request-timeout)"
    )
    done = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "helmet_otel", "logs", "--store", str(store), "--format",
         "ndjson"], capture_output=True, env=clean_env(), timeout=30, check=True,
    ))  # fmt: skip
    records = [json.loads(line) for line in done.stdout.splitlines()]
    (start,) = [r for r in records if r["event"] == "helmet.session_start"]
    assert start["attributes"]["helmet.transport"] == "http"
    assert start["attributes"]["helmet.server.url"] == upstream.url
    assert start["attributes"]["server.address"] == "127.0.0.1"
    assert start["attributes"]["server.port"] == upstream.port
    cancels = [
        r for r in records if r["attributes"].get("mcp.method.name") == "notifications/cancelled"
    ]
    assert [c["attributes"]["helmet.direction"] for c in cancels] == ["client->server"]
