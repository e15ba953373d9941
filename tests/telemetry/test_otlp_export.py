"""Telemetry end to end: the MCP SDK client -> helmet-otel -> a real server, exported over OTLP
to a real receiver that decodes the protobuf wire format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from helmet_otel import semconv as sc
from tests.e2e.helpers import DEMO_SERVER
from tests.otlp_receiver import OTLPReceiver
from tests.telemetry.helpers import by_event, drive, proxy_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


async def _scenario(client: Client) -> dict[str, Any]:
    await client.list_tools()
    echoed = await client.call_tool("echo", {"text": "hello", "api_key": SECRET})
    auth = await client.call_tool("echo", {"text": f"{BEARER} {SECRET}"})
    failed = await client.call_tool("fail", {})
    with pytest.raises(MCPError) as unknown:
        await client.call_tool("no-such-tool", {})
    prompt = await client.get_prompt("greet", {"name": "Ada"})
    await client.read_resource("demo://readme")
    return {
        "echo": echoed,
        "auth": auth,
        "failed": failed,
        "unknown": unknown.value,
        "prompt": prompt,
    }


def _finished(rx: OTLPReceiver) -> bool:
    events = {r["event_name"] for r in rx.logs()}
    names = {m["name"] for m in rx.metrics()}
    return sc.EVENT_PROXY_CLOSE in events and sc.METRIC_SERVER_OPERATION_DURATION in names


@pytest.fixture
async def exported(tmp_path: Path) -> tuple[OTLPReceiver, dict[str, Any]]:
    with OTLPReceiver() as rx:
        results = await drive(
            DEMO_SERVER, proxy_env(rx.endpoint), _scenario, stderr_path=tmp_path / "err"
        )
        rx.wait_for(_finished, timeout=20)
        yield rx, results


def _span(spans: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name and s["kind"] == kind]
    assert len(found) == 1, (name, kind, [(s["name"], s["kind"]) for s in spans])
    return found[0]


async def test_one_trace_per_session_with_server_and_client_spans(exported: Any) -> None:
    rx, results = exported
    assert results["echo"].content[0].text == "hello"
    spans = rx.spans()
    assert {s["trace_id"] for s in spans} == {spans[0]["trace_id"]}
    root = _span(spans, "session", "INTERNAL")
    assert root["parent_span_id"] == ""
    session_id = root["attributes"][sc.HELMET_SESSION_ID]
    assert root["attributes"][sc.HELMET_EXIT_STATUS] == 0
    assert root["attributes"][sc.MCP_PROTOCOL_VERSION] == "2025-11-25"
    assert root["attributes"][sc.HELMET_CLIENT_NAME]
    assert root["attributes"][sc.HELMET_SERVER_INFO_NAME] == "helmet-demo"
    assert root["resource"]["service.name"] == "demo_server"
    expected = ["initialize", "tools/list", "tools/call echo", "tools/call echo",
                "tools/call fail", "tools/call no-such-tool", "prompts/get greet", "resources/read"]  # fmt: skip
    servers = sorted(
        (s for s in spans if s["kind"] == "SERVER"), key=lambda s: s["start_time_unix_nano"]
    )
    assert [s["name"] for s in servers] == expected
    for server in servers:
        assert server["parent_span_id"] == root["span_id"]
        clients = [s for s in spans if s["parent_span_id"] == server["span_id"]]
        assert [(c["name"], c["kind"]) for c in clients] == [(server["name"], "CLIENT")]
        assert server["attributes"][sc.HELMET_SESSION_ID] == session_id
        assert server["attributes"][sc.NETWORK_TRANSPORT] == "pipe"
        assert sc.MCP_SESSION_ID not in server["attributes"]  # stdio has no protocol session id
        assert server["scope"]["name"] == sc.SCOPE_NAME


async def test_semconv_attributes_and_error_classification(exported: Any) -> None:
    rx, _ = exported
    spans = rx.spans()
    echo = next(s for s in spans if s["name"] == "tools/call echo" and s["kind"] == "SERVER")
    assert {k: v for k, v in echo["attributes"].items() if k != sc.HELMET_SESSION_ID} == {
        sc.MCP_METHOD_NAME: "tools/call",
        sc.GEN_AI_TOOL_NAME: "echo",
        sc.GEN_AI_OPERATION_NAME: "execute_tool",
        sc.JSONRPC_REQUEST_ID: echo["attributes"][sc.JSONRPC_REQUEST_ID],
        sc.MCP_PROTOCOL_VERSION: "2025-11-25",
        sc.NETWORK_TRANSPORT: "pipe",
    }
    assert echo["status"]["code"] == "UNSET"
    for kind in ("SERVER", "CLIENT"):
        failed = _span(spans, "tools/call fail", kind)
        assert failed["attributes"][sc.ERROR_TYPE] == "tool_error"
        assert failed["status"]["code"] == "ERROR"
    # -32602 (unknown tool): the caller's mistake, not a server error -- but a client error.
    unknown_server = _span(spans, "tools/call no-such-tool", "SERVER")
    assert unknown_server["status"]["code"] == "UNSET"
    assert sc.ERROR_TYPE not in unknown_server["attributes"]
    assert unknown_server["attributes"][sc.RPC_RESPONSE_STATUS_CODE] == "-32602"
    unknown_client = _span(spans, "tools/call no-such-tool", "CLIENT")
    assert unknown_client["status"]["code"] == "ERROR"
    assert unknown_client["attributes"][sc.ERROR_TYPE] == "-32602"
    assert unknown_client["attributes"][sc.RPC_RESPONSE_STATUS_CODE] == "-32602"
    prompt = _span(spans, "prompts/get greet", "SERVER")
    assert prompt["attributes"][sc.GEN_AI_PROMPT_NAME] == "greet"
    assert sc.GEN_AI_OPERATION_NAME not in prompt["attributes"]


async def test_log_records_cover_the_taxonomy(exported: Any) -> None:
    rx, _ = exported
    logs = rx.logs()
    spans = rx.spans()
    events = {r["event_name"] for r in logs}
    for event in (sc.EVENT_SESSION_START, sc.EVENT_SESSION_END, sc.EVENT_PROXY_CLOSE,
                  sc.EVENT_REQUEST, sc.EVENT_RESPONSE, sc.EVENT_NOTIFICATION, sc.EVENT_ERROR,
                  sc.EVENT_INITIALIZATION, sc.EVENT_CONFIGURATION, sc.EVENT_PERFORMANCE,
                  sc.EVENT_SERVER_STDERR):  # fmt: skip
        assert event in events, event
    session_id = by_event(logs, sc.EVENT_SESSION_START)[0]["attributes"][sc.HELMET_SESSION_ID]
    assert all(r["attributes"][sc.HELMET_SESSION_ID] == session_id for r in logs)
    trace_id = spans[0]["trace_id"]
    assert all(r["trace_id"] == trace_id for r in logs)
    servers = {s["span_id"]: s for s in spans if s["kind"] == "SERVER"}
    requests = by_event(logs, sc.EVENT_REQUEST)
    responses = by_event(logs, sc.EVENT_RESPONSE)
    assert len(requests) == len(responses) == len(servers) == 8
    for record in requests + responses:
        span = servers[record["span_id"]]
        assert record["attributes"][sc.MCP_METHOD_NAME] == span["attributes"][sc.MCP_METHOD_NAME]
        assert (
            record["attributes"][sc.JSONRPC_REQUEST_ID] == span["attributes"][sc.JSONRPC_REQUEST_ID]
        )
    for record in requests:
        assert record["attributes"][sc.HELMET_DIRECTION] == sc.DIRECTION_C2S
        assert record["severity_text"] == "INFO"
    for record in responses:
        assert record["attributes"][sc.HELMET_DIRECTION] == sc.DIRECTION_S2C
        assert record["attributes"][sc.HELMET_LATENCY_MS] > 0
    echo_request = next(r for r in requests if r["attributes"].get(sc.GEN_AI_TOOL_NAME) == "echo")
    assert echo_request["body"]["name"] == "echo"
    assert echo_request["body"]["arguments"]["text"] == "hello"
    assert echo_request["body"]["arguments"]["api_key"].startswith("[REDACTED")
    failed = next(r for r in responses if r["attributes"].get(sc.GEN_AI_TOOL_NAME) == "fail")
    assert failed["severity_text"] == "ERROR"
    assert failed["attributes"][sc.ERROR_TYPE] == "tool_error"
    stderr = by_event(logs, sc.EVENT_SERVER_STDERR)
    assert [r["body"] for r in stderr] == ["demo server ready"]
    assert stderr[0]["severity_text"] == "WARN"
    end = by_event(logs, sc.EVENT_SESSION_END)[0]
    assert end["attributes"][sc.HELMET_SESSION_REQUESTS] == 8
    assert end["attributes"][sc.HELMET_EXIT_STATUS] == 0
    assert end["attributes"][sc.HELMET_EXIT_REASON] == "client closed the connection"


async def test_metrics_names_units_and_buckets(exported: Any) -> None:
    rx, _ = exported
    metrics = {m["name"]: m for m in rx.metrics()}
    for name, unit, kind in (
        (sc.METRIC_SERVER_OPERATION_DURATION, "s", "histogram"),
        (sc.METRIC_CLIENT_OPERATION_DURATION, "s", "histogram"),
        (sc.METRIC_SERVER_SESSION_DURATION, "s", "histogram"),
        (sc.METRIC_SESSIONS_ACTIVE, "{session}", "sum"),
        (sc.METRIC_MESSAGES, "{message}", "sum"),
        (sc.METRIC_MESSAGE_SIZE, "By", "histogram"),
        (sc.METRIC_ERRORS, "{error}", "sum"),
    ):
        assert metrics[name]["unit"] == unit, name
        assert metrics[name]["type"] == kind, name
    duration = metrics[sc.METRIC_SERVER_OPERATION_DURATION]
    for point in duration["data_points"]:
        assert point["explicit_bounds"] == list(sc.DURATION_BUCKETS)
        assert sc.JSONRPC_REQUEST_ID not in point["attributes"]
        assert sc.HELMET_SESSION_ID not in point["attributes"]
    calls = [p for p in duration["data_points"]
             if p["attributes"].get(sc.GEN_AI_TOOL_NAME) == "echo"]  # fmt: skip
    assert sum(p["count"] for p in calls) == 2
    errors = metrics[sc.METRIC_ERRORS]["data_points"]
    assert {(p["attributes"][sc.ERROR_TYPE], p["value"]) for p in errors} >= {("tool_error", 1)}


async def test_resource_reads_carry_the_uri_on_request_and_response(exported: Any) -> None:
    rx, _ = exported
    reads = [r for r in rx.logs() if r["attributes"].get(sc.MCP_METHOD_NAME) == "resources/read"]
    assert sorted(r["event_name"] for r in reads) == [sc.EVENT_REQUEST, sc.EVENT_RESPONSE]
    assert {r["attributes"][sc.MCP_RESOURCE_URI] for r in reads} == {"demo://readme"}
    span = _span(rx.spans(), "resources/read", "SERVER")
    assert span["attributes"][sc.MCP_RESOURCE_URI] == "demo://readme"


async def test_duration_exemplars_point_at_the_request_spans(exported: Any) -> None:
    rx, _ = exported
    metrics = {m["name"]: m for m in rx.metrics()}
    spans = {(s["trace_id"], s["span_id"]): s for s in rx.spans()}
    for name, kind in ((sc.METRIC_SERVER_OPERATION_DURATION, "SERVER"),
                       (sc.METRIC_CLIENT_OPERATION_DURATION, "CLIENT")):  # fmt: skip
        for point in metrics[name]["data_points"]:
            assert point["exemplars"], point["attributes"]
            for exemplar in point["exemplars"]:
                span = spans[(exemplar["trace_id"], exemplar["span_id"])]
                assert span["kind"] == kind
                assert (
                    span["attributes"][sc.MCP_METHOD_NAME]
                    == point["attributes"][sc.MCP_METHOD_NAME]
                )
                duration = (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e9
                assert exemplar["value"] == pytest.approx(duration)


async def test_no_secret_in_any_exported_byte(exported: Any) -> None:
    rx, results = exported
    assert SECRET in results["auth"].content[0].text  # the secret did travel both ways...
    token = BEARER.split()[1].encode()
    for body in rx.raw_bodies:  # ...but never into telemetry, in any signal
        assert SECRET.encode() not in body
        assert token not in body
