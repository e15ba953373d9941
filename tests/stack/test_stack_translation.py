"""The name translation rules the name contract relies on, and the static half of the contract:
every name a dashboard queries is the translation of a name in helmet_otel/semconv.py
(or one the backends add themselves)."""

from __future__ import annotations

from typing import Any

import pytest

from helmet_otel import semconv as sc
from tests.stack.stack_model import (
    INSTRUMENTS,
    NameUse,
    Produced,
    all_name_uses,
    expected_prometheus_series,
    is_produced,
    label_name,
    loki_index_resource_attributes,
    prometheus_metric_name,
    prometheus_promoted_resource_attributes,
    semconv_attribute_names,
    translate,
)

# Labels the backends add on their own (not from an attribute helmet sets).
PROMETHEUS_OWN_LABELS = {"le", "job", "instance"}
LOKI_OWN_LABELS = {"detected_level", "trace_id", "span_id", "severity_text", "severity_number"}
# Names the collector or the backends derive: event_name (the collector copies
# LogRecord.event_name), service_name & co. (resource attributes Prometheus promotes / Loki indexes).
DERIVED = {"event_name"}


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        (
            "mcp.server.operation.duration",
            "s",
            "histogram",
            "mcp_server_operation_duration_seconds",
        ),
        ("helmet.messages", "{message}", "counter", "helmet_messages_total"),
        ("helmet.sessions.active", "{session}", "updown", "helmet_sessions_active"),
        ("helmet.message.size", "By", "histogram", "helmet_message_size_bytes"),
        ("process.cpu.utilization", "1", "gauge", "process_cpu_utilization_ratio"),
        ("http.server.duration", "ms", "histogram", "http_server_duration_milliseconds"),
        ("net.io", "By/s", "gauge", "net_io_bytes_per_second"),
        ("requests.total", "{request}", "counter", "requests_total"),
        ("queue.size.bytes", "By", "gauge", "queue_size_bytes"),
        ("my..odd__name", "", "counter", "my_odd_name_total"),
        ("2xx.responses", "", "gauge", "_2xx_responses"),
    ],
)
def test_prometheus_metric_names(name: str, unit: str, kind: Any, expected: str) -> None:
    assert prometheus_metric_name(name, unit, kind) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("mcp.method.name", "mcp_method_name"),
        ("gen_ai.tool.name", "gen_ai_tool_name"),
        ("helmet.latency_ms", "helmet_latency_ms"),
        ("service.name", "service_name"),
        ("http.response.status-code", "http_response_status_code"),
        ("2xx", "key_2xx"),
        ("_private", "key_private"),
        ("__reserved", "__reserved"),
    ],
)
def test_label_names(key: str, expected: str) -> None:
    assert label_name(key) == expected


def _metric(
    name: str, kind: str, unit: str, points: list[dict[str, Any]], monotonic: bool | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "unit": unit,
        "type": kind,
        "is_monotonic": monotonic,
        "data_points": [{"attributes": p, "exemplars": []} for p in points],
        "resource": {
            "service.name": "demo",
            "service.instance.id": "i-1",
            "helmet.transport": "stdio",
            "telemetry.sdk.name": "opentelemetry",
        },
        "scope": {"name": "helmet_otel", "version": "0.1.0"},
    }


def test_translate_metrics_applies_prometheus_rules() -> None:
    produced = translate(
        [],
        [],
        [
            _metric(
                sc.METRIC_SERVER_OPERATION_DURATION,
                "histogram",
                "s",
                [{sc.MCP_METHOD_NAME: "tools/call", sc.GEN_AI_TOOL_NAME: "echo"}],
            ),
            _metric(
                sc.METRIC_ERRORS, "sum", "{error}", [{sc.ERROR_TYPE: "tool_error"}], monotonic=True
            ),
            _metric(sc.METRIC_SESSIONS_ACTIVE, "sum", "{session}", [{}], monotonic=False),
        ],
    )
    assert set(produced.prom_series) == {
        "mcp_server_operation_duration_seconds_bucket",
        "mcp_server_operation_duration_seconds_sum",
        "mcp_server_operation_duration_seconds_count",
        "helmet_errors_total",
        "helmet_sessions_active",
    }
    (bucket,) = produced.prom_series["mcp_server_operation_duration_seconds_bucket"]
    assert bucket == {
        "job": "demo",
        "instance": "i-1",
        "service_name": "demo",
        "helmet_transport": "stdio",
        "deployment_environment_name": "dev",  # added by the collector, promoted by Prometheus
        "mcp_method_name": "tools/call",
        "gen_ai_tool_name": "echo",
        "le": "+Inf",
    }
    (count,) = produced.prom_series["mcp_server_operation_duration_seconds_count"]
    assert "le" not in count
    assert "telemetry_sdk_name" not in count  # not promoted: only on target_info
    assert produced.prom_exemplar_labels == set()


def test_translate_logs_applies_loki_and_collector_rules() -> None:
    record = {
        "event_name": sc.EVENT_RESPONSE,
        "severity_number": 17,
        "severity_text": "ERROR",
        "body": {"error": {}},
        "attributes": {
            sc.HELMET_SESSION_ID: "s1",
            sc.HELMET_LATENCY_MS: 1.5,
            "helmet.nested": {"a": {"b": 1}},
        },
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "resource": {"service.name": "demo", "service.instance.id": "i-1"},
        "scope": {"name": "helmet_otel", "version": "0.1.0"},
    }
    produced = translate([], [record], [])
    ((stream, sm),) = produced.loki_records
    assert stream == {"service_name": "demo", "deployment_environment_name": "dev"}
    assert sm == {
        "service_instance_id": "i-1",  # not indexed: structured metadata
        "event_name": sc.EVENT_RESPONSE,  # copied by the collector's transform
        "helmet_session_id": "s1",
        "helmet_latency_ms": "1.5",
        "helmet_nested_a_b": "1",
        "scope_name": "helmet_otel",
        "scope_version": "0.1.0",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "severity_number": "17",
        "severity_text": "ERROR",
        "detected_level": "error",
    }
    no_trace = dict(record, trace_id="0" * 32, span_id="", event_name="")
    ((_, sm2),) = translate([], [no_trace], []).loki_records
    assert "trace_id" not in sm2 and "span_id" not in sm2 and "event_name" not in sm2


def test_backend_configs_promote_and_index_what_the_rules_assume() -> None:
    assert prometheus_promoted_resource_attributes() == (
        "service.name",
        "service.namespace",
        "service.version",
        "deployment.environment.name",
        "helmet.transport",
    )
    assert loki_index_resource_attributes() == (
        "service.name",
        "service.namespace",
        "deployment.environment.name",
    )


def test_every_dashboard_name_comes_from_semconv_or_a_backend() -> None:
    """The static half of the name contract: no name in a query is made up."""
    attributes = semconv_attribute_names()
    promoted = {label_name(k) for k in prometheus_promoted_resource_attributes()}
    indexed = {label_name(k) for k in loki_index_resource_attributes()}
    translated = {label_name(a) for a in attributes}
    series = expected_prometheus_series()
    for use in all_name_uses():
        if use.backend == "prometheus":
            if use.kind == "metric":
                assert use.name in series, use
            elif use.kind == "exemplar_label":
                assert use.name == "trace_id", use
            else:
                assert use.name in translated | promoted | PROMETHEUS_OWN_LABELS, use
        elif use.backend == "loki":
            if use.kind == "stream_label":
                assert use.name in indexed, use
            else:
                assert use.name in translated | indexed | LOKI_OWN_LABELS | DERIVED, use
        else:
            assert use.name in attributes | {sc.SERVICE_NAME}, use


def test_instrument_table_covers_every_metric_in_semconv() -> None:
    metrics = {v for k, v in vars(sc).items() if k.startswith("METRIC_")}
    assert set(INSTRUMENTS) == metrics


def test_is_produced_respects_equality_matchers() -> None:
    produced = Produced(
        prom_series={
            "m_count": [
                {"mcp_method_name": "tools/list"},
                {"mcp_method_name": "tools/call", "gen_ai_tool_name": "x"},
            ]
        },
        loki_records=[
            ({"service_name": "a"}, {"event_name": "helmet.request"}),
            ({"service_name": "a"}, {"event_name": "helmet.response", "helmet_latency_ms": "1"}),
        ],
    )
    on_calls = NameUse(
        "prometheus",
        "label",
        "gen_ai_tool_name",
        "t",
        frozenset({"m_count"}),
        (("mcp_method_name", "tools/call"),),
    )
    on_lists = NameUse(
        "prometheus",
        "label",
        "gen_ai_tool_name",
        "t",
        frozenset({"m_count"}),
        (("mcp_method_name", "tools/list"),),
    )
    assert is_produced(on_calls, produced) and not is_produced(on_lists, produced)
    latency = NameUse(
        "loki", "label", "helmet_latency_ms", "t", equals=(("event_name", "helmet.response"),)
    )
    wrong = NameUse(
        "loki", "label", "helmet_latency_ms", "t", equals=(("event_name", "helmet.request"),)
    )
    assert is_produced(latency, produced) and not is_produced(wrong, produced)
    assert not is_produced(NameUse("loki", "stream_label", "event_name", "t"), produced)
