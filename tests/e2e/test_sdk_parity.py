"""The official MCP Python SDK client sees the same thing through the proxy as without it.

Each scenario runs three times: connected to the server directly, through
`helmet-otel --no-store`, and through `helmet-otel --store PATH` (telemetry on); everything the
client observed (results, errors, progress, server-to-client requests, notifications) must be
equal. Servers: the bundled demo server (both protocol eras), a FastMCP server (both eras) and
the reference server-everything (which speaks the handshake era only).

What may legitimately differ between two runs is excluded explicitly, and nothing else:
- `notifications/progress` are compared per call through progress callbacks, not in the stream
  of notifications: after a cancellation a server may still send progress for the abandoned
  call, and how many arrive before the session ends is a matter of timing;
- with telemetry on, W3C trace context in the `_meta` of server-to-client requests: the proxy
  propagates trace context to the server on purpose, and a server that traces itself passes it
  on in the requests it sends back;
- server-everything asks for roots from a 350 ms timer as well as from `get-roots-list`, so it can
  ask once or twice and log "Roots updated" once or twice: for it, whether roots were asked for
  is compared instead of how often, and log messages are compared as a set.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from tests.e2e.helpers import (
    DEMO_SERVER,
    FASTMCP_SERVER,
    REPO_ROOT,
    everything_server,
    proxy_argv,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    # logging/setLevel and ping are deprecated from 2026-07-28 on, but legacy sessions use them.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

SCENARIO_TIMEOUT = 40.0
CANCEL_TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dump(value: object) -> Any:
    """JSON-able data for a result, an error or anything already JSON-able."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, MCPError):
        return {"error": value.error.model_dump(mode="json", by_alias=True, exclude_none=True)}
    return value


@dataclass
class Observed:
    """Everything one client saw during a scenario, as JSON-able data."""

    steps: dict[str, Any] = field(default_factory=dict)
    sampling: list[Any] = field(default_factory=list)
    elicitation: list[Any] = field(default_factory=list)
    roots_requests: int = 0
    notifications: list[Any] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def record(self, label: str, value: object) -> None:
        assert label not in self.steps, f"duplicate step {label}"
        self.steps[label] = dump(value)

    async def call(self, label: str, request: Awaitable[object]) -> None:
        """Record the result of `request`, or the JSON-RPC error it failed with."""
        try:
            self.record(label, await request)
        except MCPError as exc:
            self.record(label, exc)

    async def wait_for_log(self, predicate: Callable[[Any], bool]) -> None:
        with anyio.fail_after(CANCEL_TIMEOUT):
            while not any(
                n["method"] == "notifications/message" and predicate(n["params"]["data"])
                for n in self.notifications
            ):
                changed = self.changed
                await changed.wait()

    def comparable(self, *, roots_race: bool = False) -> dict[str, Any]:
        stream = [n for n in self.notifications if n["method"] != "notifications/progress"]
        logs = [n for n in stream if n["method"] == "notifications/message"]
        others = [n for n in stream if n["method"] != "notifications/message"]
        if roots_race:
            logs = list({json.dumps(n, sort_keys=True): n for n in logs}.values())
        return {
            "steps": self.steps,
            "sampling": self.sampling,
            "elicitation": self.elicitation,
            "roots_requests": self.roots_requests > 0 if roots_race else self.roots_requests,
            "log_messages": sorted(logs, key=lambda n: json.dumps(n, sort_keys=True)),
            "other_notifications": sorted(others, key=lambda n: json.dumps(n, sort_keys=True)),
        }

    # ---- the client's callbacks -------------------------------------------------------------

    async def on_sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.sampling.append(dump(params))
        last = params.messages[-1].content
        text = last.text if isinstance(last, types.TextContent) else "?"
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"model says: {text}"),
            model="helmet-test-model",
            stop_reason="endTurn",
        )

    async def on_elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        data = dump(params)
        self.elicitation.append(data)
        schema = data.get("requestedSchema", {})
        samples = {"string": "Ada", "boolean": True, "integer": 7, "number": 1.5}
        content: dict[str, Any] = {}
        for name, prop in schema.get("properties", {}).items():
            if "default" in prop:
                content[name] = prop["default"]
            elif name in schema.get("required", []):
                content[name] = samples[prop["type"]]
        return types.ElicitResult(action="accept", content=content)

    async def on_list_roots(self, context: ClientRequestContext) -> types.ListRootsResult:
        self.roots_requests += 1
        root = {"uri": "file:///workspace/project", "name": "project"}
        return types.ListRootsResult(roots=[types.Root.model_validate(root)])

    async def on_message(self, message: object) -> None:
        if isinstance(message, Exception):
            self.notifications.append({"method": "exception", "params": repr(message)})
        else:
            self.notifications.append(dump(message))
        self.changed.set()
        self.changed = anyio.Event()


@dataclass
class Progress:
    updates: list[Any] = field(default_factory=list)
    first: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.updates.append({"progress": progress, "total": total, "message": message})
        self.first.set()


async def call_with_progress(
    client: Client, obs: Observed, label: str, tool: str, arguments: dict[str, Any]
) -> None:
    progress = Progress()
    await obs.call(label, client.call_tool(tool, arguments, progress_callback=progress))
    obs.record(f"{label} progress", progress.updates)


async def cancel_after_first_progress(
    client: Client, obs: Observed, label: str, tool: str, arguments: dict[str, Any]
) -> None:
    """Start a long call, cancel it once it reports progress, record what the client saw."""
    progress = Progress()
    scope = anyio.CancelScope()
    outcome: list[object] = []

    async def call() -> None:
        with scope:
            outcome.append(await client.call_tool(tool, arguments, progress_callback=progress))

    with anyio.fail_after(CANCEL_TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await progress.first.wait()
            scope.cancel()
    obs.record(label, {"completed": bool(outcome), "first_progress": progress.updates[0]})


async def common_steps(client: Client, obs: Observed, *, legacy: bool) -> None:
    session = client.session
    handshake = session.initialize_result if legacy else session.discover_result
    obs.record("protocol version", client.protocol_version)
    obs.record("handshake", handshake)
    await obs.call("tools/list", client.list_tools())
    await obs.call("prompts/list", client.list_prompts())
    await obs.call("resources/list", client.list_resources())
    await obs.call("resources/templates/list", client.list_resource_templates())
    await obs.call("tools/call unknown", client.call_tool("no-such-tool", {}))
    if legacy:
        await obs.call("ping", session.send_ping())


# ---- scenarios ---------------------------------------------------------------------------------


async def demo_scenario(client: Client, obs: Observed, legacy: bool) -> None:
    await common_steps(client, obs, legacy=legacy)
    await obs.call("echo", client.call_tool("echo", {"text": "héllo 👋 世界"}))
    await obs.call("add ints", client.call_tool("add", {"a": 2, "b": 40}))
    await obs.call("add floats", client.call_tool("add", {"a": 0.1, "b": 0.2}))
    await obs.call("fail", client.call_tool("fail", {"message": "nope"}))
    await obs.call("stderr", client.call_tool("stderr", {"text": "a line for stderr"}))
    await call_with_progress(client, obs, "slow", "slow", {"seconds": 0.1, "steps": 4})
    if legacy:
        await obs.call("logging/setLevel", client.session.set_logging_level("warning"))
    await obs.call("log info", client.call_tool("log", {"level": "info", "data": "quiet"}))
    await obs.call("log error", client.call_tool("log", {"level": "error", "data": "loud"}))
    if legacy:
        await obs.call("logging/setLevel again", client.session.set_logging_level("debug"))
    await obs.call("sample", client.call_tool("sample", {"prompt": "Say hi", "maxTokens": 9}))
    await obs.call("prompts/get", client.get_prompt("greet", {"name": "Ada"}))
    await obs.call("prompts/get unknown", client.get_prompt("nope", {}))
    await obs.call("resources/read", client.read_resource("demo://readme"))
    await obs.call("resources/read unknown", client.read_resource("demo://nope"))
    await cancel_after_first_progress(
        client, obs, "slow cancelled", "slow", {"seconds": 60, "steps": 600}
    )
    # The server saw the cancellation: it logs instead of answering.
    await obs.wait_for_log(lambda data: str(data).endswith(" cancelled"))
    await obs.call("echo after cancel", client.call_tool("echo", {"text": "still here"}))


async def fastmcp_scenario(client: Client, obs: Observed, legacy: bool) -> None:
    await common_steps(client, obs, legacy=legacy)
    await obs.call("add", client.call_tool("add", {"a": 2, "b": 40}))
    await obs.call("echo", client.call_tool("echo", {"text": "héllo 👋"}))
    await obs.call("boom", client.call_tool("boom", {"reason": "testing"}))
    await call_with_progress(client, obs, "progress", "progress", {"steps": 3})
    await obs.call("confirm", client.call_tool("confirm", {"question": "Proceed?"}))
    await obs.call("prompts/get", client.get_prompt("review", {"code": "x = 1"}))
    await obs.call("resources/read", client.read_resource("fast://greeting"))
    await obs.call("resources/read template", client.read_resource("fast://items/42"))
    await cancel_after_first_progress(client, obs, "slow cancelled", "slow", {"seconds": 60})
    await obs.wait_for_log(lambda data: "slow was cancelled" in str(data))
    await obs.call("add after cancel", client.call_tool("add", {"a": 1, "b": 1}))


async def everything_scenario(client: Client, obs: Observed, legacy: bool) -> None:
    await common_steps(client, obs, legacy=legacy)
    # Roots first, so the server's own roots sync finds them already known.
    await obs.call("get-roots-list", client.call_tool("get-roots-list", {}))
    await obs.call("logging/setLevel", client.session.set_logging_level("debug"))
    await obs.call("echo", client.call_tool("echo", {"message": "héllo 👋"}))
    await obs.call("get-sum", client.call_tool("get-sum", {"a": 2, "b": 40}))
    await obs.call("get-tiny-image", client.call_tool("get-tiny-image", {}))
    await obs.call(
        "get-annotated-message",
        client.call_tool("get-annotated-message", {"messageType": "error", "includeImage": True}),
    )
    await obs.call(
        "get-structured-content",
        client.call_tool("get-structured-content", {"location": "New York"}),
    )
    await obs.call("get-resource-links", client.call_tool("get-resource-links", {"count": 3}))
    await obs.call("get-sum invalid", client.call_tool("get-sum", {"a": "two"}))
    await call_with_progress(
        client,
        obs,
        "trigger-long-running-operation",
        "trigger-long-running-operation",
        {"duration": 0.2, "steps": 4},
    )
    await obs.call(
        "trigger-sampling-request",
        client.call_tool("trigger-sampling-request", {"prompt": "Say hi", "maxTokens": 9}),
    )
    await obs.call(
        "trigger-elicitation-request", client.call_tool("trigger-elicitation-request", {})
    )
    await obs.call("prompts/get simple", client.get_prompt("simple-prompt", {}))
    await obs.call(
        "prompts/get args", client.get_prompt("args-prompt", {"city": "Paris", "state": "TX"})
    )
    await obs.call(
        "completion/complete",
        client.complete(
            types.PromptReference(type="ref/prompt", name="completable-prompt"),
            {"name": "department", "value": "E"},
        ),
    )
    features = "demo://resource/static/document/features.md"
    await obs.call("resources/read", client.read_resource(features))
    await obs.call("resources/subscribe", client.subscribe_resource(features))
    await obs.call("resources/unsubscribe", client.unsubscribe_resource(features))
    await cancel_after_first_progress(
        client,
        obs,
        "trigger-long-running-operation cancelled",
        "trigger-long-running-operation",
        {"duration": 0.5, "steps": 10},
    )
    await obs.call("ping after cancel", client.session.send_ping())


Scenario = Callable[[Client, Observed, bool], Awaitable[None]]


async def observe(
    argv: Sequence[str], scenario: Scenario, mode: str, stderr_path: Path
) -> tuple[Observed, str]:
    """Run `scenario` against the stdio server `argv`; return what was seen and its stderr."""
    obs = Observed()
    params = StdioServerParameters(command=argv[0], args=list(argv[1:]), cwd=REPO_ROOT)
    with stderr_path.open("w") as errlog:
        transport: AbstractAsyncContextManager[Any] = stdio_client(params, errlog=errlog)
        with anyio.fail_after(SCENARIO_TIMEOUT):
            async with Client(
                transport,
                mode=mode,  # pyright: ignore[reportArgumentType]
                cache=None,
                log_level="debug",
                sampling_callback=obs.on_sampling,
                elicitation_callback=obs.on_elicitation,
                list_roots_callback=obs.on_list_roots,
                message_handler=obs.on_message,
            ) as client:
                await scenario(client, obs, mode == "legacy" or client.protocol_version < "2026")
    return obs, await anyio.Path(stderr_path).read_text()


@dataclass
class Runs:
    direct: Observed
    traced: Observed
    direct_stderr: str
    proxied_stderr: str


async def compare(
    server: Sequence[str],
    scenario: Scenario,
    mode: str,
    tmp_path: Path,
    *,
    roots_race: bool = False,
) -> Runs:
    """Observe the scenario directly, through the proxy, and through the proxy with telemetry on."""
    direct, direct_err = await observe(server, scenario, mode, tmp_path / "direct.stderr")
    expected = direct.comparable(roots_race=roots_race)

    proxied, proxied_err = await observe(
        proxy_argv(server), scenario, mode, tmp_path / "proxied.stderr"
    )
    assert proxied.comparable(roots_race=roots_race) == expected

    # Telemetry on (the local store; no OTLP endpoint in the environment): the proxy writes
    # trace context into params._meta, and a server that traces itself passes it on.
    store = str(tmp_path / "store.db")
    traced, _ = await observe(
        proxy_argv(server, "--store", store, store=True),
        scenario,
        mode,
        tmp_path / "traced.stderr",
    )
    assert without_trace_context(traced.comparable(roots_race=roots_race)) == expected
    assert Path(store).is_file(), "telemetry was not on: no local store was written"
    return Runs(direct, traced, direct_err, proxied_err)


TRACE_CONTEXT_KEYS = ("traceparent", "tracestate", "baggage")


def without_trace_context(observed: dict[str, Any]) -> dict[str, Any]:
    """Drop W3C trace context from the `_meta` of server-to-client requests.

    With propagation on, a server that traces itself (the MCP Python SDK does) forwards the
    context the proxy gave it in its own requests to the client; that is the feature working.
    """
    observed = copy.deepcopy(observed)
    for key in ("sampling", "elicitation"):
        for params in observed[key]:
            meta = params.get("_meta")
            if meta is None:
                continue
            for name in TRACE_CONTEXT_KEYS:
                meta.pop(name, None)
            if not meta:
                del params["_meta"]
    return observed


@pytest.mark.parametrize(
    ("mode", "version"),
    [("legacy", "2025-11-25"), ("auto", "2026-07-28")],
    ids=["legacy", "modern"],
)
async def test_demo_server(mode: str, version: str, tmp_path: Path) -> None:
    runs = await compare(DEMO_SERVER, demo_scenario, mode, tmp_path)

    observed = runs.direct
    steps = observed.steps
    assert steps["protocol version"] == version
    assert steps["echo"]["content"] == [{"type": "text", "text": "héllo 👋 世界"}]
    assert steps["add ints"]["structuredContent"] == {"sum": 42}
    assert steps["fail"]["isError"] is True
    assert steps["tools/call unknown"]["error"]["code"] == -32602
    assert steps["slow progress"] == [
        {"progress": float(step), "total": 4.0, "message": f"step {step} of 4"}
        for step in range(1, 5)
    ]
    assert steps["sample"]["content"] == [{"type": "text", "text": "model says: Say hi"}]
    assert observed.sampling == [
        {
            "messages": [{"role": "user", "content": {"type": "text", "text": "Say hi"}}],
            "maxTokens": 9,
        }
    ]
    assert steps["slow cancelled"]["completed"] is False
    logged = [n["params"]["data"] for n in observed.notifications if "data" in n.get("params", {})]
    assert "loud" in logged
    assert ("quiet" in logged) is not (mode == "legacy")  # setLevel(warning) only exists in legacy
    # The server's stderr reaches the client's stderr through the proxy.
    assert runs.direct_stderr == "demo server ready\na line for stderr\n"
    proxied_lines = runs.proxied_stderr.splitlines()
    assert "demo server ready" in proxied_lines
    assert "a line for stderr" in proxied_lines


@pytest.mark.parametrize(
    ("mode", "version"),
    [("legacy", "2025-11-25"), ("auto", "2026-07-28")],
    ids=["legacy", "modern"],
)
async def test_fastmcp_server(mode: str, version: str, tmp_path: Path) -> None:
    runs = await compare(FASTMCP_SERVER, fastmcp_scenario, mode, tmp_path)

    observed = runs.direct
    steps = observed.steps
    assert steps["protocol version"] == version
    assert steps["add"]["structuredContent"] == {"result": 42}
    assert steps["boom"]["isError"] is True
    assert steps["progress progress"] == [
        {"progress": float(step), "total": 3.0, "message": f"step {step}"} for step in (1, 2, 3)
    ]
    assert steps["slow cancelled"]["completed"] is False
    if mode == "legacy":
        assert steps["confirm"]["content"] == [{"type": "text", "text": "answer: True"}]
        assert len(observed.elicitation) == 1
        # With telemetry on, the trace context the proxy sent reached the server, which
        # continued the trace in its own request back to the client.
        traceparent = runs.traced.elicitation[0]["_meta"]["traceparent"]
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-9a-f]", traceparent)
    else:  # no server-to-client requests in the modern era: FastMCP refuses to elicit
        assert steps["confirm"]["isError"] is True
        assert observed.elicitation == []


async def test_server_everything(tmp_path: Path) -> None:
    runs = await compare(
        everything_server(), everything_scenario, "auto", tmp_path, roots_race=True
    )

    observed = runs.direct
    steps = observed.steps
    assert steps["protocol version"] == "2025-11-25"  # server/discover is unknown: handshake
    assert steps["get-sum"]["content"] == [{"type": "text", "text": "The sum of 2 and 40 is 42."}]
    assert observed.roots_requests >= 1
    assert "file:///workspace/project" in steps["get-roots-list"]["content"][0]["text"]
    assert len(observed.sampling) == 1
    assert "model says:" in steps["trigger-sampling-request"]["content"][0]["text"]
    assert len(observed.elicitation) == 1
    assert steps["trigger-elicitation-request"]["content"][1]["text"].startswith("User inputs:")
    assert steps["trigger-long-running-operation progress"] == [
        {"progress": float(step), "total": 4.0, "message": None} for step in (1, 2, 3, 4)
    ]
    assert steps["trigger-long-running-operation cancelled"]["completed"] is False
    assert steps["ping after cancel"] == {}
