"""collector-config/config.yaml: structurally what otelcol-contrib 0.159 accepts and what the
backends need. There is no collector binary or combined config schema to run offline, so these
are the checks the collector itself makes at start-up plus the stack's own invariants."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import tests.stack.stack_model as model
from tests.stack.stack_model import (
    COLLECTOR_CONFIG,
    COMPOSE_FILE,
    collector_copies_event_name,
    load_yaml,
)

KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")

# Component types removed from the contrib distribution or renamed (they load, with a
# deprecation warning, or fail): see the reference, section 1.2 / 1.3.
REMOVED_OR_DEPRECATED: dict[str, set[str]] = {
    "exporters": {
        "loki",
        "otlphttp",
        "otlp",
        "logging",
        "prometheusremotewrite",
        "loadbalancing",
        "jaeger",
    },
    "connectors": {"spanmetrics"},
    "processors": set(),
    "receivers": set(),
    "extensions": set(),
}

# What the contrib distribution ships, for the types used here.
KNOWN_TYPES: dict[str, set[str]] = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "resource", "transform", "attributes", "filter", "redaction"},
    "exporters": {"otlp_grpc", "otlp_http", "debug"},
    "extensions": {"health_check", "file_storage"},
    "connectors": set(),
}

SIGNAL_EXPORTER = {
    "traces": ("otlp_grpc", "tempo:4317"),
    "logs": ("otlp_http", "http://loki:3100/otlp"),
    "metrics": ("otlp_http", "http://prometheus:9090/api/v1/otlp"),
}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return load_yaml(COLLECTOR_CONFIG)


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def _pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    return config["service"]["pipelines"]


def test_every_component_a_pipeline_references_is_defined(config: dict[str, Any]) -> None:
    for name, pipeline in _pipelines(config).items():
        assert _type(name) in ("traces", "metrics", "logs"), name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config.get(kind, {}), f"{name}: {kind} {component} undefined"
        assert pipeline["receivers"] and pipeline["exporters"], name
    for extension in config["service"]["extensions"]:
        assert extension in config["extensions"], extension


def test_every_defined_component_is_used(config: dict[str, Any]) -> None:
    used = {
        component
        for pipeline in _pipelines(config).values()
        for kind in ("receivers", "processors", "exporters")
        for component in pipeline.get(kind, [])
    }
    defined = {c for kind in ("receivers", "processors", "exporters") for c in config.get(kind, {})}
    # debug is kept defined on purpose, for troubleshooting (README.md says how).
    assert defined - used == {"debug"}
    assert set(config["extensions"]) == set(config["service"]["extensions"])


def test_component_types_exist_and_none_is_removed_or_deprecated(config: dict[str, Any]) -> None:
    for kind in KINDS:
        for component in config.get(kind, {}) or {}:
            assert _type(component) not in REMOVED_OR_DEPRECATED[kind], f"{kind}: {component}"
            assert _type(component) in KNOWN_TYPES[kind], f"{kind}: {component}"


def test_memory_limiter_is_first_in_every_pipeline(config: dict[str, Any]) -> None:
    for name, pipeline in _pipelines(config).items():
        assert pipeline["processors"][0] == "memory_limiter", name
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"] == "1s"
    assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 90


def test_each_signal_goes_to_its_backend_with_the_right_path(config: dict[str, Any]) -> None:
    compose_services = set(load_yaml(COMPOSE_FILE)["services"])
    for name, pipeline in _pipelines(config).items():
        exporter_type, endpoint = SIGNAL_EXPORTER[_type(name)]
        assert len(pipeline["exporters"]) == 1, name
        (exporter,) = pipeline["exporters"]
        assert _type(exporter) == exporter_type, name
        assert config["exporters"][exporter]["endpoint"] == endpoint, name
        host = re.sub(r"^\w+://", "", endpoint).split(":")[0]
        assert host in compose_services, f"{name}: {host} is not a compose service"
    # otlp_http appends /v1/<signal>: the endpoints must stop at the OTLP base path.
    for exporter in config["exporters"].values():
        assert not str(exporter.get("endpoint", "")).endswith(("/v1/logs", "/v1/metrics"))


def test_exporters_queue_persistently_and_retry(config: dict[str, Any]) -> None:
    storages = {e for e in config["service"]["extensions"] if _type(e) == "file_storage"}
    for name, exporter in config["exporters"].items():
        if _type(name) == "debug":
            continue
        queue = exporter["sending_queue"]
        assert queue["enabled"] is True and queue["storage"] in storages, name
        assert "batch" in queue, f"{name}: batch in the exporter, not a batch processor"
        retry = exporter["retry_on_failure"]
        assert retry["enabled"] is True, name
        assert retry["max_elapsed_time"] == "15m", name  # outlasts a backend restart
        assert exporter["tls"]["insecure"] is True, name  # plain traffic inside the compose net
    # Batching happens in each exporter's sending_queue, after the persistent queue took the
    # data. A batch processor would hold data in memory in front of it (lost if the collector
    # dies) and answer the sender before the export is queued.
    assert not any(_type(p) == "batch" for p in config["processors"])


def test_receivers_and_health_check_listen_on_all_interfaces(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    health = config["extensions"]["health_check"]
    assert health["endpoint"] == "0.0.0.0:13133"
    assert "check_collector_pipeline" not in health  # documented as broken


def test_file_storage_directory_is_creatable(config: dict[str, Any]) -> None:
    storage = config["extensions"]["file_storage/queue"]
    assert storage["directory"] == "/var/lib/otelcol/file_storage"
    assert storage["create_directory"] is True
    assert storage["compaction"]["directory"] == storage["directory"]


def test_logs_pipeline_copies_the_event_name_for_loki(config: dict[str, Any]) -> None:
    assert collector_copies_event_name()
    (logs,) = [p for n, p in _pipelines(config).items() if _type(n) == "logs"]
    transforms = [p for p in logs["processors"] if _type(p) == "transform"]
    assert transforms == ["transform/loki"]
    # flat OTTL statements need context-prefixed paths (log., resource., ...)
    for statement in config["processors"]["transform/loki"]["log_statements"]:
        for path in re.findall(r"\b([a-z_]+)\.(?:attributes|event_name|body)\b", statement):
            assert path in ("log", "resource", "scope"), statement


def test_the_event_name_check_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_yaml(COLLECTOR_CONFIG)
    config["service"]["pipelines"]["logs"]["processors"].remove("transform/loki")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(model, "COLLECTOR_CONFIG", path)
    model.collector_copies_event_name.cache_clear()
    try:
        assert model.collector_copies_event_name() is False
    finally:
        monkeypatch.undo()
        model.collector_copies_event_name.cache_clear()


def test_collector_adds_the_environment_as_a_resource_attribute(config: dict[str, Any]) -> None:
    (attribute,) = config["processors"]["resource/env"]["attributes"]
    assert attribute == {
        "key": "deployment.environment.name",
        "value": "${env:HELMET_ENV:-dev}",
        "action": "insert",
    }
    for pipeline in _pipelines(config).values():
        assert pipeline["processors"][1] == "resource/env"


def test_internal_metrics_are_exposed_for_prometheus(config: dict[str, Any]) -> None:
    (reader,) = config["service"]["telemetry"]["metrics"]["readers"]
    assert reader["pull"]["exporter"]["prometheus"] == {"host": "0.0.0.0", "port": 8888}
    assert "address" not in config["service"]["telemetry"]["metrics"]  # removed setting
