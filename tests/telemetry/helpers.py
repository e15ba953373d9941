"""Run the proxy with the official MCP SDK client and a real OTLP receiver."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.e2e.helpers import REPO_ROOT, clean_env

FAST_EXPORT = {
    "OTEL_BSP_SCHEDULE_DELAY": "50",
    "OTEL_BLRP_SCHEDULE_DELAY": "50",
    "HELMET_METRICS_INTERVAL": "60",
}


INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "raw", "version": "0"}},
}  # fmt: skip


def line(obj: dict[str, Any]) -> bytes:
    """One JSON-RPC message as a stdio line."""
    return orjson.dumps(obj) + b"\n"


def proxy_env(endpoint: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **FAST_EXPORT})
    if extra:
        env.update(extra)
    return env


async def drive(
    server: Sequence[str],
    env: Mapping[str, str],
    scenario: Callable[[Client], Awaitable[Any]],
    *,
    options: Sequence[str] = ("--no-store",),
    stderr_path: Path,
    mode: str = "legacy",
) -> Any:
    """Run ``scenario`` through ``helmet-otel OPTIONS SERVER`` and return its result."""
    argv = [sys.executable, "-m", "helmet_otel", *options, *server]
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(env), cwd=REPO_ROOT)
    with stderr_path.open("w") as errlog, anyio.fail_after(60):
        async with Client(
            stdio_client(params, errlog=errlog),
            mode=mode,  # pyright: ignore[reportArgumentType]
        ) as client:
            return await scenario(client)


def by_event(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in logs if r["event_name"] == event]
