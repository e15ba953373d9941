"""A proxy killed with SIGKILL in the middle of a call, driven by the official SDK client:
its telemetry worker ends the session as lost, ``sessions`` counts the unanswered call as an
error, ``logs --calls`` shows it as a call that got no response."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from helmet_otel import semconv as sc
from helmet_otel.store.query import LogFilter, Reader
from tests.e2e.helpers import DEMO_SERVER, clean_env
from tests.store.conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _pending_slow_call(store: Path) -> int | None:
    """The proxy's pid once the store holds the slow call's request (else None)."""
    if not store.exists():
        return None
    with Reader.open(store) as reader:
        calls = reader.logs(LogFilter(events=(sc.EVENT_REQUEST,), tools=("slow",)))
        sessions = reader.sessions()
    if not calls or not sessions or sessions[0].proxy_pid is None:
        return None
    return int(sessions[0].proxy_pid)


async def test_sigkill_mid_call_counts_the_unanswered_call(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    argv = [sys.executable, "-m", "helmet_otel", "--store", str(store), *DEMO_SERVER]
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=clean_env())
    killed: list[int] = []
    with (tmp_path / "stderr").open("w") as errlog, anyio.fail_after(60):
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert not (await session.call_tool("echo", {"text": "before"})).is_error

            async def kill_when_pending() -> None:
                while (pid := _pending_slow_call(store)) is None:  # bounded by fail_after
                    await anyio.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_when_pending)
                with pytest.raises(Exception):  # noqa: B017  (the SDK's connection error)
                    with anyio.fail_after(30):
                        await session.call_tool("slow", {"seconds": 30, "steps": 1})
        assert killed

    # the worker saw its input end: it ends the session (lost) and the open call (no_response)
    def ended() -> bool:
        with Reader.open(store) as reader:
            (info,) = reader.sessions()
            return info.end_ts is not None

    with anyio.fail_after(20):
        while not ended():
            await anyio.sleep(0.05)

    sessions = run_cli("sessions", "--store", str(store), "--format", "json")
    (row,) = json.loads(sessions.out)
    # initialize, echo, slow, and the tools/list the SDK sends to learn output schemas
    assert (row["status"], row["requests"], row["errors"]) == ("lost", 4, 1)
    assert row["exit"] == "proxy killed"

    calls = run_cli("logs", "--calls", "--store", str(store), "--format", "json")
    rows = {(c["method"], c["target"]): c for c in json.loads(calls.out)}
    assert sorted(rows) == [
        ("initialize", None), ("tools/call", "echo"), ("tools/call", "slow"), ("tools/list", None),
    ]  # fmt: skip
    slow = rows[("tools/call", "slow")]
    assert slow["status"] == "no response", slow
    assert rows[("tools/call", "echo")]["status"] == "ok"
    table = run_cli("logs", "--calls", "--store", str(store), "--wide", "--no-pager")
    (line,) = [row for row in table.out.splitlines() if " slow" in row]
    assert "no response" in line
