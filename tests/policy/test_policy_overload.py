"""Under overload, while the governor sheds calls, every block and every finding is still
recorded (and its call traced), and the decision metric counts each exactly once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from helmet_otel import semconv as sc
from tests.e2e.helpers import DEMO_SERVER, RawProcess
from tests.otlp_receiver import OTLPReceiver
from tests.telemetry.helpers import INIT, by_event, line, proxy_env

pytestmark = [pytest.mark.e2e]

# a flood is an unusual rate by definition: that detector is not what these tests are about
POLICY = """\
[[rule]]
id = "no-add"
tools = ["add"]
action = "deny"
[detectors]
unusual_rate = false
"""


def _call(i: int, every: int = 10) -> bytes:
    if i % every == 0:  # denied
        name, arguments = "add", {"a": 1, "b": 2}
    elif i % every == every // 2:  # a sensitive argument: a finding, the call goes through
        name, arguments = "echo", {"text": f"../../etc/hosts {i}"}
    else:
        name, arguments = "echo", {"text": f"m{i}"}
    return line({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                 "params": {"name": name, "arguments": arguments}})  # fmt: skip


def _closed(rx: OTLPReceiver) -> bool:
    return sc.EVENT_PROXY_CLOSE in {r["event_name"] for r in rx.logs()} and any(
        m["name"] == sc.METRIC_POLICY_DECISIONS for m in rx.metrics()
    )


def _metric_total(rx: OTLPReceiver, metric: str) -> dict[tuple[tuple[str, Any], ...], float]:
    exports = [m for m in rx.metrics() if m["name"] == metric]
    assert exports, metric
    return {tuple(sorted(p["attributes"].items())): p["value"] for p in exports[-1]["data_points"]}


def test_blocks_and_findings_are_never_shed(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    calls = 0
    with OTLPReceiver() as rx:
        env = proxy_env(rx.endpoint, {"HELMET_RELAY_BUSY_LIMIT": "0"})
        argv = [sys.executable, "-m", "helmet_otel", "--no-store", "--policy", str(policy),
                *DEMO_SERVER]  # fmt: skip
        with RawProcess(argv, env=env) as proxy:
            proxy.write(line(INIT))
            proxy.stdout.wait(lambda data: b'"id":1' in data, timeout=20)
            for wave in range(40):  # waves of calls until the relay sheds, then one more
                first = 2 + calls
                proxy.write(b"".join(_call(i) for i in range(first, first + 500)))
                calls += 500
                answered = proxy.stdout.wait(
                    lambda data, n=calls: data.count(b"\n") > n, timeout=30
                ).count(b"\n")
                assert answered == calls + 1
                if b"shedding" in proxy.stderr.data() and wave > 0:
                    break
            assert b"shedding" in proxy.stderr.data(), "the governor never shed (is the host idle?)"
            proxy.close_stdin()
            assert proxy.wait(timeout=30) == 0
        ids = range(2, 2 + calls)
        denied = [i for i in ids if i % 10 == 0]
        sensitive = [i for i in ids if i % 10 == 5]
        rx.wait_for(_closed, timeout=30)
        logs = rx.logs()
        # calls were shed...
        traced_echo = [r for r in by_event(logs, sc.EVENT_REQUEST)
                       if r["attributes"].get(sc.GEN_AI_TOOL_NAME) == "echo"]  # fmt: skip
        assert len(traced_echo) < calls - len(denied)
        # ... but not one block or finding
        errors = by_event(logs, sc.EVENT_ERROR)
        assert sorted(int(e["attributes"][sc.JSONRPC_REQUEST_ID]) for e in errors) == denied
        assert {e["attributes"][sc.HELMET_POLICY_ID] for e in errors} == {"no-add"}
        findings = by_event(logs, sc.EVENT_SECURITY)
        kinds = sorted((f["attributes"][sc.HELMET_SECURITY_TYPE], f["attributes"][
            sc.GEN_AI_TOOL_NAME]) for f in findings)  # fmt: skip
        assert kinds == sorted(
            [("policy_block", "add")] * len(denied)
            + [("sensitive_argument", "echo")] * len(sensitive)
        )
        blocked_spans = [s for s in rx.spans() if s["name"] == "tools/call add"
                         and s["kind"] == "SERVER"]  # fmt: skip
        assert len(blocked_spans) == len(denied)
        assert all(s["attributes"][sc.HELMET_POLICY_ID] == "no-add" for s in blocked_spans)
        assert all(sc.HELMET_SAMPLE_WEIGHT not in s["attributes"] for s in blocked_spans)
        assert _metric_total(rx, sc.METRIC_POLICY_DECISIONS) == {
            ((sc.GEN_AI_TOOL_NAME, "add"), (sc.HELMET_POLICY_ACTION, "deny"),
             (sc.HELMET_POLICY_ID, "no-add"), (sc.HELMET_POLICY_MODE, "enforce")): len(denied)
        }  # fmt: skip
        events = _metric_total(rx, sc.METRIC_SECURITY_EVENTS)
        assert events == {
            ((sc.HELMET_SECURITY_SEVERITY, "medium"), (sc.HELMET_SECURITY_TYPE, "policy_block")):
                len(denied),
            ((sc.HELMET_SECURITY_SEVERITY, "medium"),
             (sc.HELMET_SECURITY_TYPE, "sensitive_argument")): len(sensitive),
            ((sc.HELMET_SECURITY_SEVERITY, "high"), (sc.HELMET_SECURITY_TYPE, "tool_drift")): 0,
        }  # fmt: skip


def test_a_stalled_collector_sheds_ordinary_records_but_no_decision_or_finding(
    tmp_path: Path,
) -> None:
    """The worker's OTLP queues drop their oldest records when full: a flood of ordinary calls
    into a collector that has stopped answering loses records, never a block or a finding."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    calls = 400
    small_queues = {
        "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
        "OTEL_BLRP_MAX_QUEUE_SIZE": "64", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "16",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "60",  # the stalled export waits; it does not fail
    }  # fmt: skip
    with OTLPReceiver() as rx:
        rx.hold()
        argv = [sys.executable, "-m", "helmet_otel", "--no-store", "--policy", str(policy),
                *DEMO_SERVER]  # fmt: skip
        with RawProcess(argv, env=proxy_env(rx.endpoint, small_queues)) as proxy:
            proxy.write(line(INIT))
            proxy.stdout.wait(lambda data: b'"id":1' in data, timeout=20)
            # both export threads are stuck in their first export (initialize's records)
            rx.wait_for(lambda r: {s for s, _ in r.requests} >= {"logs", "traces"}, timeout=20)
            proxy.write(b"".join(_call(i, every=50) for i in range(2, 2 + calls)))
            proxy.stdout.wait(lambda data: data.count(b"\n") == calls + 1, timeout=30)
            rx.release()
            proxy.close_stdin()
            assert proxy.wait(timeout=30) == 0
        rx.wait_for(_closed, timeout=30)
        logs = rx.logs()
        ids = range(2, 2 + calls)
        denied = [i for i in ids if i % 50 == 0]
        sensitive = [i for i in ids if i % 50 == 25]
        dropped = _metric_total(rx, sc.METRIC_TELEMETRY_DROPPED)
        reasons = {dict(k)[sc.HELMET_TELEMETRY_REASON]: v for k, v in dropped.items() if v}
        # the flood overflowed both queues (ordinary records were lost) ...
        assert reasons.keys() == {"otlp_logs_queue_full", "otlp_spans_queue_full"}, reasons
        requests = by_event(logs, sc.EVENT_REQUEST)
        assert len(requests) < calls
        # ... but every decision and finding arrived, with its call's records and span
        decided = [r for r in requests if sc.HELMET_POLICY_ID in r["attributes"]]
        assert sorted(int(r["attributes"][sc.JSONRPC_REQUEST_ID]) for r in decided) == denied
        errors = by_event(logs, sc.EVENT_ERROR)
        assert sorted(int(e["attributes"][sc.JSONRPC_REQUEST_ID]) for e in errors) == denied
        findings = by_event(logs, sc.EVENT_SECURITY)
        assert sorted(f["attributes"][sc.HELMET_SECURITY_TYPE] for f in findings) == sorted(
            ["policy_block"] * len(denied) + ["sensitive_argument"] * len(sensitive)
        )
        blocked_spans = [s for s in rx.spans() if s["name"] == "tools/call add"
                         and s["kind"] == "SERVER"]  # fmt: skip
        assert len(blocked_spans) == len(denied)
