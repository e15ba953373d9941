"""`unusual_rate` and `data_volume` through the proxy in front of server-everything, with the
official SDK client: each detector's findings, as `helmet-otel logs --security` shows them.
(That they stay quiet on ordinary traffic is `test_ordinary_traffic`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helmet_otel import semconv as sc
from tests.e2e.helpers import clean_env, everything_server
from tests.policy.helpers import security_records
from tests.telemetry.helpers import drive

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

POLICY = """\
[detectors]
rate_window = 60
rate_min_calls = 10
burst_window = 60
burst_tools = 4
volume_min_samples = 2
volume_min_bytes = 2000
volume_factor = 10
allowed_resources = ["demo://resource/dynamic/*"]
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def unusual(client: Client) -> str:
    await client.list_tools()
    for i in range(11):  # the 10th call of echo within a minute reaches the floor
        await client.call_tool("echo", {"message": f"hello {i}"})
    await client.call_tool("get-sum", {"a": 1, "b": 2})
    await client.call_tool("get-structured-content", {"location": "New York"})
    await client.call_tool("get-tiny-image", {})  # the 4th distinct tool within a minute
    await client.call_tool("echo", {"message": "lorem ipsum " * 2000})  # ~24 kB answer
    await client.read_resource("demo://resource/dynamic/text/1")  # allowed
    listed = await client.list_resources()
    static = next(str(r.uri) for r in listed.resources if "/static/" in str(r.uri))
    await client.read_resource(static)  # outside the allowed URIs
    return static


def summary(record: dict[str, Any]) -> tuple[str, str, str, str | None, str]:
    attributes = record["attributes"]
    return (attributes[sc.HELMET_SECURITY_TYPE], attributes[sc.HELMET_SECURITY_SEVERITY],
            attributes[sc.HELMET_SECURITY_RULE], attributes.get(sc.GEN_AI_TOOL_NAME),
            record["body"])  # fmt: skip


async def test_unusual_rate_and_data_volume_fire(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    store = tmp_path / "store.db"
    static = await drive(
        everything_server(), clean_env(), unusual, stderr_path=tmp_path / "stderr",
        options=("--store", str(store), "--policy", str(policy)),
    )  # fmt: skip
    found = [summary(r) for r in security_records(store)]
    assert found[:3] == [
        ("unusual_rate", "medium", "unusual_rate", "echo",
         "10 calls of 'echo' within 60 s (usually 0.0 per session in 60 s)"),
        ("unusual_rate", "medium", "unusual_rate", None, "4 distinct tools called within 60 s"),
        ("data_volume", "medium", "data_volume", "echo", found[2][4]),
    ]  # fmt: skip
    assert found[2][4].startswith("response of 'echo' is 24")
    assert found[3:] == [
        ("data_volume", "medium", "data_volume", None,
         f"resource '{static}' read outside the allowed URIs"),
    ]  # fmt: skip
