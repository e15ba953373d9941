"""Telemetry survives every way a session can end, never blocks the relay, and propagates
trace context to a server that traces itself."""

from __future__ import annotations

import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from mcp import Client

from helmet_otel import semconv as sc
from tests.e2e.helpers import DEMO_SERVER, SERVERS_DIR, RawProcess
from tests.otlp_receiver import OTLPReceiver, dead_endpoint
from tests.telemetry.helpers import INIT, by_event, drive, line, proxy_env

pytestmark = [pytest.mark.e2e]


def _call(i: int, name: str = "echo", **arguments: Any) -> bytes:
    return line({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                  "params": {"name": name, "arguments": arguments or {"text": f"m{i}"}}})  # fmt: skip


def _closed(rx: OTLPReceiver) -> bool:
    events = {r["event_name"] for r in rx.logs()}
    return {sc.EVENT_SESSION_END, sc.EVENT_PROXY_CLOSE} <= events


def _proxy(server: list[str] | tuple[str, ...], *options: str) -> list[str]:
    return [sys.executable, "-m", "helmet_otel", "--no-store", *options, *server]


@pytest.mark.parametrize(
    ("how", "status"),
    [("stdin", 0), ("sigterm", 128 + signal.SIGTERM), ("sigint", 128 + signal.SIGINT)],
)
def test_last_records_are_flushed_on_every_exit_path(how: str, status: int) -> None:
    with OTLPReceiver() as rx, RawProcess(_proxy(DEMO_SERVER), env=proxy_env(rx.endpoint)) as proxy:
        proxy.write(line(INIT) + _call(2))
        proxy.stdout.wait(lambda data: b'"id":2' in data, timeout=20)
        if how == "stdin":
            proxy.close_stdin()
        else:
            proxy.proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
        assert proxy.wait(timeout=20) == status
        rx.wait_for(_closed, timeout=20)
        end = by_event(rx.logs(), sc.EVENT_SESSION_END)[0]
        assert end["attributes"][sc.HELMET_EXIT_STATUS] == status
        expected_reason = {
            "stdin": "client closed the connection",
            "sigterm": "proxy received SIGTERM",
            "sigint": "proxy received SIGINT",
        }[how]
        assert end["attributes"][sc.HELMET_EXIT_REASON] == expected_reason
        root = [s for s in rx.spans() if s["name"] == "session"]
        assert len(root) == 1 and root[0]["status"]["code"] == "UNSET"


def test_a_killed_proxy_still_gets_a_complete_session_end() -> None:
    """SIGKILL leaves no time to say goodbye: the worker sees its input end and writes
    session_end from what it had been told (counts, era) rather than zeros."""
    with OTLPReceiver() as rx, RawProcess(_proxy(DEMO_SERVER), env=proxy_env(rx.endpoint)) as proxy:
        proxy.write(line(INIT) + _call(2))
        proxy.stdout.wait(lambda data: b'"id":2' in data, timeout=20)
        rx.wait_for(lambda r: len(by_event(r.logs(), sc.EVENT_RESPONSE)) == 2, timeout=20)
        proxy.proc.send_signal(signal.SIGKILL)
        assert proxy.wait(timeout=20) == -signal.SIGKILL
        rx.wait_for(_closed, timeout=20)
        end = by_event(rx.logs(), sc.EVENT_SESSION_END)[0]["attributes"]
        assert end[sc.HELMET_EXIT_REASON] == "proxy terminated without closing"
        assert end[sc.HELMET_SESSION_REQUESTS] == 2
        assert end[sc.HELMET_ERA] == "legacy"
        assert sc.HELMET_EXIT_STATUS not in end


def test_a_cancelled_request_is_not_answered_or_counted_as_an_error() -> None:
    cancel = line({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": 2, "reason": "user gave up"}})  # fmt: skip
    ping = line({"jsonrpc": "2.0", "id": 3, "method": "ping"})
    with OTLPReceiver() as rx, RawProcess(_proxy(DEMO_SERVER), env=proxy_env(rx.endpoint)) as proxy:
        proxy.write(line(INIT) + _call(2, "slow", seconds=30) + cancel + ping)
        proxy.stdout.wait(lambda data: b'"id":3' in data, timeout=20)
        proxy.close_stdin()
        assert proxy.wait(timeout=20) == 0
        messages = [orjson.loads(x) for x in proxy.stdout.data().splitlines()]
        assert [m["id"] for m in messages if "id" in m] == [1, 3]
        rx.wait_for(_closed, timeout=20)
        slow = next(
            s for s in rx.spans() if s["name"] == "tools/call slow" and s["kind"] == "SERVER"
        )
        assert slow["status"]["code"] == "UNSET" and sc.ERROR_TYPE not in slow["attributes"]
        assert [e["name"] for e in slow["events"]] == ["cancelled"]
        assert by_event(rx.logs(), sc.EVENT_ERROR) == []


def test_server_crash_ends_pending_spans_and_session_with_error() -> None:
    crash = ["sh", "-c", "read line; echo 'fatal: boom' >&2; exit 3"]
    with OTLPReceiver() as rx, RawProcess(_proxy(crash), env=proxy_env(rx.endpoint)) as proxy:
        proxy.write(_call(7))
        out = proxy.stdout.wait(lambda data: data.endswith(b"\n"), timeout=20)
        reply = orjson.loads(out)
        assert reply["id"] == 7
        assert reply["error"]["code"] == -32000
        assert "exited with status 3" in reply["error"]["message"]
        assert proxy.wait(timeout=20) == 3
        rx.wait_for(_closed, timeout=20)
        spans = rx.spans()
        server = next(s for s in spans if s["name"] == "tools/call echo" and s["kind"] == "SERVER")
        assert server["status"]["code"] == "ERROR"
        root = next(s for s in spans if s["name"] == "session")
        assert root["status"]["code"] == "ERROR"
        assert root["attributes"][sc.HELMET_EXIT_STATUS] == 3
        stderr = by_event(rx.logs(), sc.EVENT_SERVER_STDERR)
        assert [(r["body"], r["severity_text"]) for r in stderr] == [("fatal: boom", "FATAL")]


def test_a_busy_relay_sheds_whole_calls_and_counts_them() -> None:
    """With the busy limit at 0 the governor finds the relay busy whenever calls pass faster
    than 2,000/s (waves of 500 do) and traces one call in 64. Whatever it sheds, every traced
    call is complete (request and response records, a SERVER span that did not end in error),
    the rest is counted, and the metrics still count every call. One call in eight is to the
    `fail` tool, so that the error counts are weighted too."""
    calls = 0
    with OTLPReceiver() as rx:
        # (a long flush timeout: on a loaded machine the worker, at idle priority, may need
        # more than the default 5 s to drain, and what it cuts would be counted, not recorded)
        env = proxy_env(rx.endpoint, {"HELMET_RELAY_BUSY_LIMIT": "0", "HELMET_FLUSH_TIMEOUT": "15"})
        with RawProcess(_proxy(DEMO_SERVER), env=env) as proxy:
            proxy.write(line(INIT))
            proxy.stdout.wait(lambda data: b'"id":1' in data, timeout=20)
            # waves of calls until the relay says it sheds, then one more wave
            for wave in range(40):
                first = 2 + calls
                wave_calls = (
                    _call(i, "fail" if i % 8 == 0 else "echo") for i in range(first, first + 500)
                )
                proxy.write(b"".join(wave_calls))
                calls += 500
                answered = proxy.stdout.wait(
                    lambda data, n=calls: data.count(b"\n") > n, timeout=20
                ).count(b"\n")
                assert answered == calls + 1  # every call answered
                if b"shedding" in proxy.stderr.data() and wave > 0:
                    break
            assert b"shedding" in proxy.stderr.data()
            proxy.close_stdin()
            assert proxy.wait(timeout=20) == 0
        rx.wait_for(_closed, timeout=20)
        rx.wait_for(lambda r: _dropped(r, "relay_busy") is not None, timeout=20)
        assert _drop_reasons(rx) == {"relay_busy"}  # the shed calls, and nothing lost besides
        spans = rx.spans()
        servers = [s for s in spans if s["name"] == "tools/call echo" and s["kind"] == "SERVER"]
        clients = [s for s in spans if s["name"] == "tools/call echo" and s["kind"] == "CLIENT"]
        failed = [s for s in spans if s["name"] == "tools/call fail" and s["kind"] == "SERVER"]
        requests = by_event(rx.logs(), sc.EVENT_REQUEST)
        responses = by_event(rx.logs(), sc.EVENT_RESPONSE)
        traced = len(servers) + len(failed)
        assert servers and failed and traced < calls
        assert len(clients) == len(servers)
        assert len(requests) == len(responses) == traced + 1  # and the initialize call
        assert all(s["status"]["code"] == "UNSET" for s in servers + clients)
        assert {s["attributes"].get(sc.ERROR_TYPE) for s in failed} == {"tool_error"}
        assert by_event(rx.logs(), sc.EVENT_ERROR) == []
        assert _dropped(rx, "relay_busy") == 2 * (calls - traced)
        assert _dropped(rx, "relay_queue_full") == 0
        # each traced call stands for as many as the relay traced one in; the metrics count
        # it that many times, so rates stay right while records are shed
        weights = [s["attributes"].get(sc.HELMET_SAMPLE_WEIGHT, 1) for s in servers + failed]
        assert max(weights) == 64 and sum(weights) > traced
        tool_requests = [
            r for r in requests if r["attributes"].get(sc.MCP_METHOD_NAME) == "tools/call"
        ]
        assert sorted(r["attributes"].get(sc.HELMET_SAMPLE_WEIGHT, 1) for r in tool_requests) == (
            sorted(weights)
        )
        tools = {sc.MCP_METHOD_NAME: "tools/call"}
        requests_out = {**tools, sc.HELMET_DIRECTION: sc.DIRECTION_C2S}
        assert _total(
            rx, sc.METRIC_MESSAGES, {**requests_out, sc.HELMET_MESSAGE_KIND: "request"}
        ) == (sum(weights))
        assert _total(rx, sc.METRIC_MESSAGE_SIZE, requests_out, "count") == sum(weights)
        assert _total(rx, sc.METRIC_SERVER_OPERATION_DURATION, tools, "count") == sum(weights)
        fail_weights = [s["attributes"].get(sc.HELMET_SAMPLE_WEIGHT, 1) for s in failed]
        assert _total(rx, sc.METRIC_ERRORS, {**tools, sc.ERROR_TYPE: "tool_error"}) == (
            sum(fail_weights)
        )


def _total(
    rx: OTLPReceiver, metric: str, attributes: dict[str, str], field: str = "value"
) -> float:
    """The sum of ``field`` over the points of the last export of ``metric`` whose attributes
    include these."""
    exports = [m for m in rx.metrics() if m["name"] == metric]
    assert exports, metric
    points = [
        p[field]
        for p in exports[-1]["data_points"]
        if attributes.items() <= p["attributes"].items()
    ]
    assert points, (metric, attributes)
    return sum(points)


def _drop_reasons(rx: OTLPReceiver) -> set[str]:
    """The reasons the last export of ``helmet.telemetry.dropped`` counts anything for."""
    exports = [m for m in rx.metrics() if m["name"] == sc.METRIC_TELEMETRY_DROPPED]
    if not exports:
        return set()
    last = exports[-1]["data_points"]
    return {str(p["attributes"].get(sc.HELMET_TELEMETRY_REASON)) for p in last if p["value"]}


def _dropped(rx: OTLPReceiver, reason: str) -> float | None:
    """The last value of ``helmet.telemetry.dropped`` for ``reason``."""
    values = [
        p["value"]
        for m in rx.metrics()
        if m["name"] == sc.METRIC_TELEMETRY_DROPPED
        for p in m["data_points"]
        if p["attributes"].get(sc.HELMET_TELEMETRY_REASON) == reason
    ]
    return values[-1] if values else None


@pytest.mark.parametrize("collector", ["dead", "slow"])
def test_unusable_collector_changes_nothing_for_the_client(collector: str) -> None:
    """A dead collector, or one that answers after 10 s: every call is answered, the proxy
    exits with the server within its bounded flush time, and the loss is reported once."""
    calls = 200
    with OTLPReceiver(delay=10.0) as slow:
        endpoint = dead_endpoint() if collector == "dead" else slow.endpoint
        small_queues = {
            "HELMET_FLUSH_TIMEOUT": "1",
            "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "32",
            "OTEL_BLRP_MAX_QUEUE_SIZE": "64", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "32",
        }  # fmt: skip
        env = proxy_env(endpoint, small_queues)
        with RawProcess(_proxy(DEMO_SERVER), env=env) as proxy:
            proxy.write(line(INIT) + b"".join(_call(i) for i in range(2, calls + 2)))
            last = f'"id":{calls + 1}'.encode()
            out = proxy.stdout.wait(lambda data: last in data, timeout=20)
            assert out.count(b"\n") == calls + 1
            proxy.close_stdin()
            assert proxy.wait(timeout=15) == 0
            err = proxy.stderr.wait(lambda data: True, timeout=1).decode()
    assert err.count("telemetry records are being dropped") == 1
    assert "Traceback" not in err


def test_long_session_rolls_over_into_linked_traces(tmp_path: Path) -> None:
    with OTLPReceiver() as rx:
        with RawProcess(
            _proxy(DEMO_SERVER, "--trace-max-requests", "3"), env=proxy_env(rx.endpoint)
        ) as proxy:
            proxy.write(line(INIT) + b"".join(_call(i) for i in range(2, 9)))
            proxy.stdout.wait(lambda data: b'"id":8' in data, timeout=20)
            proxy.close_stdin()
            assert proxy.wait(timeout=20) == 0
        rx.wait_for(_closed, timeout=20)
        roots = sorted(
            (s for s in rx.spans() if s["name"] == "session"),
            key=lambda s: s["attributes"][sc.HELMET_TRACE_SEGMENT],
        )
        assert [r["attributes"][sc.HELMET_TRACE_SEGMENT] for r in roots] == [0, 1, 2]
        assert len({r["trace_id"] for r in roots}) == 3
        for previous, current in itertools.pairwise(roots):
            assert [(link["trace_id"], link["span_id"]) for link in current["links"]] == [
                (previous["trace_id"], previous["span_id"])
            ]
        servers_per_trace = [
            sum(
                1 for s in rx.spans() if s["trace_id"] == root["trace_id"] and s["kind"] == "SERVER"
            )
            for root in roots
        ]
        assert servers_per_trace == [3, 3, 2]  # initialize + 7 calls, 3 requests per trace


def test_grpc_protocol() -> None:
    with OTLPReceiver(protocol="grpc") as rx:
        env = proxy_env(rx.endpoint, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        with RawProcess(_proxy(DEMO_SERVER), env=env) as proxy:
            proxy.write(line(INIT) + _call(2))
            proxy.stdout.wait(lambda data: b'"id":2' in data, timeout=20)
            proxy.close_stdin()
            assert proxy.wait(timeout=20) == 0
        rx.wait_for(_closed, timeout=20)
        names = {(s["name"], s["kind"]) for s in rx.spans()}
        assert {("tools/call echo", "SERVER"), ("tools/call echo", "CLIENT")} <= names


@pytest.mark.anyio
async def test_server_spans_nest_under_our_client_span(tmp_path: Path) -> None:
    """An MCP SDK 2.x server exporting its own spans lands inside the session trace."""

    async def scenario(client: Client) -> Any:
        return await client.call_tool("shout", {"text": "hi"})

    server = (sys.executable, str(SERVERS_DIR / "traced_server.py"))
    with OTLPReceiver() as rx:
        env = proxy_env(rx.endpoint)
        # The server exports to the same receiver: it needs the endpoint too.
        result = await drive(
            server, env, scenario, options=("--no-store", "--pass-otel-env"),
            stderr_path=tmp_path / "err",
        )  # fmt: skip
        assert result.content[0].text == "HI"
        rx.wait_for(_closed, timeout=20)
        rx.wait_for(lambda r: any(s["name"] == "shout.work" for s in r.spans()), timeout=20)
        spans = rx.spans()
        ours = [s for s in spans if s["name"] == "tools/call shout" and s["kind"] == "CLIENT"
                and s["resource"]["service.name"] != "traced-server"]  # fmt: skip
        assert len(ours) == 1
        theirs = [s for s in spans if s["resource"].get("service.name") == "traced-server"
                  and s["kind"] == "SERVER" and s["attributes"].get("mcp.method.name") == "tools/call"]  # fmt: skip
        assert len(theirs) == 1
        assert theirs[0]["trace_id"] == ours[0]["trace_id"]
        assert theirs[0]["parent_span_id"] == ours[0]["span_id"]


def test_large_message_is_recorded_truncated_and_relayed_whole() -> None:
    text = "x" * (5 * 1024 * 1024) + " password=hunter2-is-secret"
    request = _call(2, text=text)
    with OTLPReceiver() as rx, RawProcess(_proxy(DEMO_SERVER), env=proxy_env(rx.endpoint)) as proxy:
        proxy.write(request)
        out = proxy.stdout.wait(lambda data: data.endswith(b"\n"), timeout=30)
        assert orjson.loads(out)["result"]["content"][0]["text"] == text
        proxy.close_stdin()
        assert proxy.wait(timeout=20) == 0
        rx.wait_for(_closed, timeout=20)
        record = next(r for r in by_event(rx.logs(), sc.EVENT_REQUEST))
        assert record["attributes"][sc.HELMET_MESSAGE_SIZE] == len(request)
        assert record["body"]["_truncated"] is True
        assert record["body"]["_original_size"] == len(request)
        assert len(record["body"]["_preview"]) <= 65536
        for body in rx.raw_bodies:
            assert b"hunter2" not in body


def _worker_threads(proxy_pid: int) -> list[int]:
    children = Path(f"/proc/{proxy_pid}/task/{proxy_pid}/children").read_text().split()
    for child in map(int, children):
        if b"helmet_otel.telemetry.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
            return [int(tid) for tid in os.listdir(f"/proc/{child}/task")]
    raise AssertionError("no telemetry worker")


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
@pytest.mark.parametrize(("sched", "policy"), [("", "SCHED_IDLE"), ("normal", "SCHED_OTHER")])
def test_the_worker_yields_the_cpu_to_the_traffic(sched: str, policy: str) -> None:
    """Every thread of the worker (exporters and store writers too) runs at SCHED_IDLE and
    nice 19, unless HELMET_WORKER_SCHED=normal asks for nice alone."""
    with OTLPReceiver() as rx:
        env = proxy_env(rx.endpoint, {"HELMET_WORKER_SCHED": sched} if sched else None)
        with RawProcess(_proxy(DEMO_SERVER), env=env) as proxy:
            proxy.write(line(INIT))
            proxy.stdout.wait(lambda data: b'"id":1' in data, timeout=20)
            # exported: the worker has started its threads
            rx.wait_for(lambda r: bool(by_event(r.logs(), sc.EVENT_REQUEST)), timeout=20)
            threads = _worker_threads(proxy.proc.pid)
            assert len(threads) >= 4  # main, reader, and the export threads
            assert {os.sched_getscheduler(tid) for tid in threads} == {getattr(os, policy)}
            assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in threads} == {19}
            proxy.close_stdin()
            assert proxy.wait(timeout=20) == 0
