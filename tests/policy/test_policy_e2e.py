"""The official SDK client through `helmet-otel --policy FILE` in front of server-everything:
what a policy blocks, logs, hides and records, in the store and over OTLP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from helmet_otel import semconv as sc
from tests.e2e.helpers import RawProcess, clean_env, everything_server
from tests.otlp_receiver import OTLPReceiver
from tests.telemetry.helpers import by_event, drive, proxy_env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

POLICY = """\
mode = "{mode}"
default = "allow"

[[rule]]
id = "sec-001"
tools = ["get-env", "*delete*"]
action = "deny"
hide = true

[[rule]]
id = "no-passwords"
tools = ["echo"]
action = "deny"
priority = 10
when = [{{ arg = "message", regex = "(?i)password" }}]

[[rule]]
id = "audit-sum"
tools = ["get-sum"]
action = "log"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def denied(rule: str) -> dict[str, Any]:
    return {"code": -32001, "message": "Tool access denied by policy",
            "data": {"type": "policy_block", "policy_id": rule}}  # fmt: skip


async def scenario(client: Client) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    listed = await client.list_tools()
    seen["tools"] = sorted(t.name for t in listed.tools)
    for step, tool, arguments in (
        ("echo", "echo", {"message": "hello"}),
        ("password", "echo", {"message": "my Password is 1234"}),
        ("get-env", "get-env", {}),
        ("sum", "get-sum", {"a": 2, "b": 3}),
    ):
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            seen[step] = exc.error.model_dump(mode="json", exclude_none=True)
        else:
            seen[step] = result.model_dump(mode="json", exclude_none=True)["content"]
    return seen


def closed(rx: OTLPReceiver) -> bool:
    names = {m["name"] for m in rx.metrics()}
    return sc.EVENT_PROXY_CLOSE in {r["event_name"] for r in rx.logs()} and (
        sc.METRIC_POLICY_DECISIONS in names
    )


def points(rx: OTLPReceiver, metric: str) -> dict[tuple[tuple[str, Any], ...], float]:
    exports = [m for m in rx.metrics() if m["name"] == metric]
    assert exports, metric
    return {tuple(sorted(p["attributes"].items())): p["value"] for p in exports[-1]["data_points"]}


def viewer(store: Path, *args: str) -> list[dict[str, Any]]:
    argv = [sys.executable, "-m", "helmet_otel", *args, "--store", str(store), "--format", "ndjson"]
    with RawProcess(argv, env=clean_env()) as process:
        assert process.wait(timeout=30) == 0, process.stderr.data()
        process.stdout.join(5)
        return [orjson.loads(line) for line in process.stdout.data().splitlines()]


async def test_enforce_blocks_hides_logs_and_records(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(mode="enforce"))
    store = tmp_path / "store.db"
    with OTLPReceiver() as rx:
        env = proxy_env(rx.endpoint, {"HELMET_METRICS_INTERVAL": "60"})
        seen = await drive(
            everything_server(), env, scenario, stderr_path=tmp_path / "stderr",
            options=("--store", str(store), "--policy", str(policy)),
        )  # fmt: skip
        # the client: the denied calls get exactly the policy error, the others are unchanged
        assert "get-env" not in seen["tools"] and "echo" in seen["tools"]
        assert seen["echo"] == [{"type": "text", "text": "Echo: hello"}]
        assert seen["password"] == denied("no-passwords")
        assert seen["get-env"] == denied("sec-001")
        assert seen["sum"] == [{"type": "text", "text": "The sum of 2 and 3 is 5."}]
        rx.wait_for(closed, timeout=30)
        spans = {s["name"]: s for s in rx.spans() if s["kind"] == "SERVER"}
        blocked = spans["tools/call get-env"]
        assert blocked["status"] == {"code": "ERROR", "message": "Tool access denied by policy"}
        assert {k: blocked["attributes"][k] for k in (sc.HELMET_POLICY_ID,
                sc.HELMET_POLICY_ACTION, sc.HELMET_POLICY_MODE)} == {
            sc.HELMET_POLICY_ID: "sec-001", sc.HELMET_POLICY_ACTION: "deny",
            sc.HELMET_POLICY_MODE: "enforce"}  # fmt: skip
        logged = spans["tools/call get-sum"]
        assert logged["attributes"][sc.HELMET_POLICY_ACTION] == "log"
        assert logged["status"]["code"] == "UNSET"
        # the default allow is no decision: nothing on the span
        allowed = [s for s in rx.spans() if s["name"] == "tools/call echo"
                   and s["kind"] == "SERVER" and s["status"]["code"] == "UNSET"]  # fmt: skip
        assert [sc.HELMET_POLICY_ID in s["attributes"] for s in allowed] == [False]
        errors = by_event(rx.logs(), sc.EVENT_ERROR)
        assert sorted((e["attributes"][sc.HELMET_POLICY_ID], e["body"]["data"]["policy_id"])
                      for e in errors) == [("no-passwords", "no-passwords"),
                                           ("sec-001", "sec-001")]  # fmt: skip
        server_spans = {s["span_id"]: s["name"] for s in rx.spans() if s["kind"] == "SERVER"}
        assert sorted(server_spans[e["span_id"]] for e in errors) == [
            "tools/call echo", "tools/call get-env"]  # fmt: skip
        assert points(rx, sc.METRIC_POLICY_DECISIONS) == {
            ((sc.GEN_AI_TOOL_NAME, "echo"), (sc.HELMET_POLICY_ACTION, "deny"),
             (sc.HELMET_POLICY_ID, "no-passwords"), (sc.HELMET_POLICY_MODE, "enforce")): 1,
            ((sc.GEN_AI_TOOL_NAME, "get-env"), (sc.HELMET_POLICY_ACTION, "deny"),
             (sc.HELMET_POLICY_ID, "sec-001"), (sc.HELMET_POLICY_MODE, "enforce")): 1,
            ((sc.GEN_AI_TOOL_NAME, "get-sum"), (sc.HELMET_POLICY_ACTION, "log"),
             (sc.HELMET_POLICY_ID, "audit-sum"), (sc.HELMET_POLICY_MODE, "enforce")): 1,
        }  # fmt: skip
        findings = by_event(rx.logs(), sc.EVENT_SECURITY)
        assert sorted((f["attributes"][sc.HELMET_SECURITY_TYPE],
                       f["attributes"][sc.HELMET_SECURITY_RULE],
                       f["attributes"][sc.HELMET_SECURITY_SEVERITY]) for f in findings) == [
            ("policy_block", "no-passwords", "medium"), ("policy_block", "sec-001", "medium")
        ]  # fmt: skip
        assert points(rx, sc.METRIC_SECURITY_EVENTS) == {
            ((sc.HELMET_SECURITY_SEVERITY, "medium"), (sc.HELMET_SECURITY_TYPE, "policy_block")): 2,
            # exported from the start, for the alert on the first drift
            ((sc.HELMET_SECURITY_SEVERITY, "high"), (sc.HELMET_SECURITY_TYPE, "tool_drift")): 0,
        }
    # the store: the blocks as errors and as findings
    stored = viewer(store, "logs", "--security")
    assert sorted(r["attributes"][sc.HELMET_SECURITY_RULE] for r in stored) == [
        "no-passwords", "sec-001"
    ]  # fmt: skip
    errors = viewer(store, "logs", "--event", "error")
    assert sorted(r["attributes"][sc.HELMET_POLICY_ID] for r in errors) == [
        "no-passwords", "sec-001"
    ]  # fmt: skip


async def test_shadow_mode_blocks_nothing_but_records(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(mode="shadow"))
    with OTLPReceiver() as rx:
        env = proxy_env(rx.endpoint)
        seen = await drive(
            everything_server(), env, scenario, stderr_path=tmp_path / "stderr",
            options=("--no-store", "--policy", str(policy)),
        )  # fmt: skip
        assert "get-env" in seen["tools"]  # shadow mode never changes a byte
        assert seen["password"] == [{"type": "text", "text": "Echo: my Password is 1234"}]
        assert seen["get-env"][0]["type"] == "text"
        rx.wait_for(closed, timeout=30)
        spans = {s["name"]: s for s in rx.spans() if s["kind"] == "SERVER"}
        shadowed = spans["tools/call get-env"]
        assert shadowed["status"]["code"] == "UNSET"
        assert shadowed["attributes"][sc.HELMET_POLICY_ACTION] == "deny"
        assert shadowed["attributes"][sc.HELMET_POLICY_MODE] == "shadow"
        assert by_event(rx.logs(), sc.EVENT_ERROR) == []
        findings = by_event(rx.logs(), sc.EVENT_SECURITY)
        assert sorted((f["attributes"][sc.HELMET_SECURITY_RULE],
                       f["attributes"][sc.HELMET_SECURITY_SEVERITY]) for f in findings) == [
            ("no-passwords", "low"), ("sec-001", "low")
        ]  # fmt: skip
        assert all("shadow mode" in f["body"] for f in findings)
        decisions = points(rx, sc.METRIC_POLICY_DECISIONS)
        assert sorted((dict(k)[sc.HELMET_POLICY_ID], dict(k)[sc.HELMET_POLICY_MODE], v)
                      for k, v in decisions.items()) == [
            ("audit-sum", "shadow", 1), ("no-passwords", "shadow", 1), ("sec-001", "shadow", 1)
        ]  # fmt: skip
