"""The detectors stay quiet on ordinary traffic: server-everything's tools called with ordinary
arguments (one of them repeatedly) and its resources read, in two sessions, raise no finding
(no sensitive_argument, unusual_rate, data_volume, tool_drift); a tool first called in a third session is a
`new_tool` finding, the only one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from mcp import Client

from helmet_otel import semconv as sc
from tests.e2e.helpers import RawProcess, clean_env, everything_server
from tests.policy.helpers import security_records
from tests.telemetry.helpers import drive

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

ORDINARY: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"message": "hello, what is the weather in Paris?"}),
    ("get-sum", {"a": 2, "b": 40}),
    ("get-annotated-message", {"messageType": "error", "includeImage": True}),
    ("get-resource-links", {"count": 3}),
    ("get-resource-reference", {"resourceType": "Text", "resourceId": 2}),
    ("get-structured-content", {"location": "New York"}),
    ("get-tiny-image", {}),
    ("simulate-research-query", {"topic": "renewable energy", "ambiguous": False}),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def ordinary(client: Client) -> None:
    await client.list_tools()
    for tool, arguments in ORDINARY:
        await client.call_tool(tool, arguments)
    for i in range(10):  # a client calling one tool repeatedly, as agents do
        await client.call_tool("echo", {"message": f"step {i} of the plan"})
    await client.read_resource("demo://resource/dynamic/text/1")
    await client.read_resource("demo://resource/dynamic/blob/2")


async def first_time(client: Client) -> None:
    await client.list_tools()
    await client.call_tool("echo", {"message": "again"})
    await client.call_tool("get-env", {})


async def test_no_finding_on_ordinary_traffic_and_new_tool_on_a_first_call(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store.db"
    policy = tmp_path / "policy.toml"  # the default thresholds; resources checked too
    policy.write_text('[detectors]\nallowed_resources = ["demo://resource/*"]\n')
    options = ("--store", str(store), "--name", "everything", "--policy", str(policy))
    for _ in range(2):
        await drive(everything_server(), clean_env(), ordinary, options=options,
                    stderr_path=tmp_path / "stderr")  # fmt: skip
    assert security_records(store) == []
    await drive(everything_server(), clean_env(), first_time, options=options,
                stderr_path=tmp_path / "stderr")  # fmt: skip
    (found,) = security_records(store)
    assert {k: found["attributes"][k] for k in (
        sc.HELMET_SECURITY_TYPE, sc.HELMET_SECURITY_SEVERITY, sc.HELMET_SECURITY_RULE,
        sc.GEN_AI_TOOL_NAME, sc.HELMET_SERVER_NAME)} == {
        sc.HELMET_SECURITY_TYPE: "new_tool", sc.HELMET_SECURITY_SEVERITY: "low",
        sc.HELMET_SECURITY_RULE: "new_tool", sc.GEN_AI_TOOL_NAME: "get-env",
        sc.HELMET_SERVER_NAME: "everything",
    }  # fmt: skip
    assert found["body"] == "tool 'get-env' is called for the first time on this server"
    argv = [sys.executable, "-m", "helmet_otel", "security", "--store", str(store), "--format",
            "json"]  # fmt: skip
    with RawProcess(argv, env=clean_env()) as report:
        assert report.wait(timeout=30) == 0
        report.stdout.join(5)
        summary = orjson.loads(report.stdout.data())
    assert summary["findings"] == 1
    assert summary["by_type"] == [{"type": "new_tool", "severity": "low", "count": 1}]
    assert summary["top_tools"] == [{"tool": "get-env", "count": 1}]
    assert summary["latest"][0]["trace_id"] == found["trace_id"]
