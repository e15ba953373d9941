"""Trace-context propagation on the wire, --capture without losing protocol facts, and which
sinks and service name the configuration selects."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import orjson
import pytest

from helmet_otel import semconv as sc
from tests.e2e.helpers import DEMO_SERVER, RECORDING_UPSTREAM, RawProcess
from tests.otlp_receiver import OTLPReceiver
from tests.telemetry.helpers import INIT, by_event, line, proxy_env

pytestmark = [pytest.mark.e2e]

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _traced_call(i: int, text: str = "hi") -> bytes:
    meta = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "progressToken": 7}
    return line({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                  "params": {"name": "echo", "arguments": {"text": text}, "_meta": meta}})  # fmt: skip


def _closed(rx: OTLPReceiver) -> bool:
    return sc.EVENT_PROXY_CLOSE in {r["event_name"] for r in rx.logs()}


def _run_recording(tmp_path: Path, rx: OTLPReceiver, lines: list[bytes], *options: str) -> bytes:
    """Send ``lines`` through the proxy to the recording upstream; return what it received."""
    record = tmp_path / "received"
    argv = [sys.executable, "-m", "helmet_otel", "--no-store", *options,
            *RECORDING_UPSTREAM, str(record)]  # fmt: skip
    with RawProcess(argv, env=proxy_env(rx.endpoint)) as proxy:
        proxy.write(b"".join(lines))
        proxy.stdout.wait(lambda data: data.count(b"\n") == len(lines), timeout=30)
        proxy.close_stdin()
        assert proxy.wait(timeout=20) == 0
    rx.wait_for(_closed, timeout=20)
    return record.read_bytes()


def test_forwarded_request_carries_our_client_span_and_links_the_clients(tmp_path: Path) -> None:
    with OTLPReceiver() as rx:
        received = _run_recording(tmp_path, rx, [_traced_call(5)])
        forwarded = orjson.loads(received)
        client = next(s for s in rx.spans() if s["kind"] == "CLIENT")
        server = next(s for s in rx.spans() if s["kind"] == "SERVER")
        meta = forwarded["params"]["_meta"]
        assert meta == {"traceparent": f"00-{client['trace_id']}-{client['span_id']}-01",
                        "progressToken": 7}  # fmt: skip
        assert forwarded["params"]["arguments"] == {"text": "hi"}
        assert client["parent_span_id"] == server["span_id"]
        assert [(link["trace_id"], link["span_id"]) for link in server["links"]] == [
            (CLIENT_TRACE, CLIENT_SPAN)
        ]


def test_propagation_changes_nothing_but_the_traceparent_it_adds(tmp_path: Path) -> None:
    """With propagation on (the default) every byte the client wrote still arrives: numbers
    beyond float precision or spelled oddly, escapes, whitespace and key order included."""
    lines = [
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":'
        b'{"v":18446744073709551616,"w":12345678901234567890123,"f":0.1000000000000000055511151'
        b'231257827,"g":1.50,"h":1E5,"t":"caf\\u00e9 \\ud83d\\ude00"}}}\n',
        b'{ "jsonrpc" : "2.0" , "id" : "a" , "method" : "tools/list" }\r\n',
        b'{"method":"ping","id":3,"jsonrpc":"2.0","params":{"_meta":{"progressToken":1}}}\n',
    ]
    with OTLPReceiver() as rx:
        received = _run_recording(tmp_path, rx, lines)
    clients = {s["span_id"]: s for s in rx.spans() if s["kind"] == "CLIENT"}
    ours = re.compile(rb'"traceparent":"00-([0-9a-f]{32})-([0-9a-f]{16})-01"')
    found = [m.group(2).decode() for m in ours.finditer(received)]
    assert len(found) == 3 and set(found) <= set(clients)  # each carries its own CLIENT span
    tp = b'"traceparent":"TP"'
    expected = [
        lines[0].replace(b'"params":{', b'"params":{"_meta":{' + tp + b"},", 1),
        lines[1].replace(b" }\r\n", b' ,"params":{"_meta":{' + tp + b"}}}\r\n"),
        lines[2].replace(b'"_meta":{', b'"_meta":{' + tp + b",", 1),
    ]
    assert ours.sub(tp, received) == b"".join(expected)


@pytest.mark.parametrize("case", ["no-propagate", "over-1-MiB"])
def test_requests_pass_byte_for_byte_when_propagation_does_not_apply(
    tmp_path: Path, case: str
) -> None:
    request = _traced_call(5, "x" * (2 * 1024 * 1024) if case == "over-1-MiB" else "hi")
    options = ("--no-propagate",) if case == "no-propagate" else ()
    with OTLPReceiver() as rx:
        assert _run_recording(tmp_path, rx, [request], *options) == request
        server = next(s for s in rx.spans() if s["kind"] == "SERVER")
        assert [link["span_id"] for link in server["links"]] == [CLIENT_SPAN]


def test_capture_none_records_no_bodies_but_keeps_protocol_facts() -> None:
    log_call = line({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "log", "arguments": {"level": "error", "data": "oops"}}})  # fmt: skip
    argv = [sys.executable, "-m", "helmet_otel", "--no-store", "--capture", "none", *DEMO_SERVER]
    with OTLPReceiver() as rx, RawProcess(argv, env=proxy_env(rx.endpoint)) as proxy:
        proxy.write(line(INIT) + log_call)
        proxy.stdout.wait(lambda data: b'"id":2' in data, timeout=20)
        proxy.close_stdin()
        assert proxy.wait(timeout=20) == 0
        rx.wait_for(_closed, timeout=20)
        messages = [r for r in rx.logs() if r["event_name"] in
                    (sc.EVENT_REQUEST, sc.EVENT_RESPONSE, sc.EVENT_NOTIFICATION)]  # fmt: skip
        assert len(messages) == 5  # 2 requests, 2 responses, 1 notifications/message
        assert all(r["body"] is None for r in messages)
        note = next(r for r in by_event(rx.logs(), sc.EVENT_NOTIFICATION))
        assert note["attributes"][sc.HELMET_LOG_LEVEL] == "error"
        assert note["severity_text"] == "ERROR"
        call = next(
            s for s in rx.spans() if s["name"] == "tools/call log" and s["kind"] == "SERVER"
        )
        assert call["attributes"][sc.MCP_PROTOCOL_VERSION] == "2025-11-25"
        init = next(r for r in by_event(rx.logs(), sc.EVENT_REQUEST)
                    if r["attributes"][sc.MCP_METHOD_NAME] == "initialize")  # fmt: skip
        assert init["attributes"][sc.HELMET_CLIENT_NAME] == "raw"


@pytest.mark.parametrize(
    ("options", "env", "service"),
    [
        (("--name", "flag-name"), {"OTEL_SERVICE_NAME": "env-name"}, "flag-name"),
        ((), {"OTEL_SERVICE_NAME": "env-name"}, "env-name"),
        ((), {}, "demo_server"),
    ],
)
def test_service_name_precedence(
    options: tuple[str, ...], env: dict[str, str], service: str
) -> None:
    argv = [sys.executable, "-m", "helmet_otel", "--no-store", *options, *DEMO_SERVER]
    with OTLPReceiver() as rx, RawProcess(argv, env=proxy_env(rx.endpoint, env)) as proxy:
        proxy.write(line(INIT))
        proxy.stdout.wait(lambda data: b'"id":1' in data, timeout=20)
        proxy.close_stdin()
        assert proxy.wait(timeout=20) == 0
        rx.wait_for(_closed, timeout=20)
        assert {s["resource"]["service.name"] for s in rx.spans()} == {service}


@pytest.mark.parametrize("explicit_endpoint", [False, True])
def test_otel_sdk_disabled_turns_off_otlp_but_not_the_store(
    tmp_path: Path, explicit_endpoint: bool
) -> None:
    store = tmp_path / "store.db"
    with OTLPReceiver() as rx:
        options = ["--store", str(store)]
        if explicit_endpoint:  # a flag wins over OTEL_SDK_DISABLED from the environment
            options += ["--otlp-endpoint", rx.endpoint]
        argv = [sys.executable, "-m", "helmet_otel", *options, *DEMO_SERVER]
        env = proxy_env(rx.endpoint, {"OTEL_SDK_DISABLED": "true"})
        with RawProcess(argv, env=env) as proxy:
            proxy.write(line(INIT))
            proxy.stdout.wait(lambda data: b'"id":1' in data, timeout=20)
            proxy.close_stdin()
            assert proxy.wait(timeout=20) == 0
        if explicit_endpoint:
            rx.wait_for(_closed, timeout=20)
        else:
            assert rx.raw_bodies == []  # the proxy has exited and flushed: nothing was sent
    with RawProcess(
        [sys.executable, "-m", "helmet_otel", "logs", "--store", str(store),
         "--event", "proxy_close", "--format", "ndjson"],
        env=env,
    ) as viewer:  # fmt: skip
        assert viewer.wait(timeout=20) == 0
        out = viewer.stdout.wait(lambda data: data.endswith(b"\n"), timeout=5)
    assert [orjson.loads(line)["event"] for line in out.splitlines()] == [sc.EVENT_PROXY_CLOSE]


def _echo_session(env: dict[str, str], calls: int = 2) -> OTLPReceiver:
    """``calls`` tools/call echo through the proxy to the demo server, then a clean close."""
    argv = [sys.executable, "-m", "helmet_otel", "--no-store", *DEMO_SERVER]
    call = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    requests = [line({**call, "id": 10 + i}) for i in range(calls)]
    rx = OTLPReceiver()
    with rx, RawProcess(argv, env=proxy_env(rx.endpoint, env)) as proxy:
        proxy.write(line(INIT) + b"".join(requests))
        proxy.stdout.wait(lambda data: data.count(b"\n") == 1 + calls, timeout=20)
        proxy.close_stdin()
        assert proxy.wait(timeout=20) == 0
        rx.wait_for(_closed, timeout=20)
    return rx


def test_sampler_always_off_exports_no_spans_but_every_log_record() -> None:
    rx = _echo_session({"OTEL_TRACES_SAMPLER": "always_off"})
    assert rx.spans() == []
    responses = by_event(rx.logs(), sc.EVENT_RESPONSE)
    assert len(responses) == 3  # initialize and the two calls
    assert all(r["trace_id"] and r["span_id"] for r in responses)  # still correlatable
    assert all(r["flags"] & 1 == 0 for r in responses)  # ...and marked as not sampled


@pytest.mark.parametrize(("preference", "monotonic"), [("cumulative", "CUMULATIVE"),
                                                       ("delta", "DELTA")])  # fmt: skip
def test_metrics_temporality_follows_the_otlp_preference(preference: str, monotonic: str) -> None:
    rx = _echo_session({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": preference})
    metrics = {m["name"]: m for m in rx.metrics()}
    assert metrics[sc.METRIC_MESSAGES]["temporality"] == monotonic
    assert metrics[sc.METRIC_SERVER_OPERATION_DURATION]["temporality"] == monotonic
    # an up-down counter stays cumulative whatever the preference (OTel specification)
    assert metrics[sc.METRIC_SESSIONS_ACTIVE]["temporality"] == "CUMULATIVE"
    points = metrics[sc.METRIC_SERVER_OPERATION_DURATION]["data_points"]
    echo = [p for p in points if p["attributes"].get(sc.GEN_AI_TOOL_NAME) == "echo"]
    assert sum(p["count"] for p in echo) == 2
