"""Loki, Tempo and Prometheus configs: the invariants of the reference's offline checklist."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.stack.stack_model import (
    COMPOSE_FILE,
    LOKI_CONFIG,
    PROMETHEUS_CONFIG,
    TEMPO_CONFIG,
    load_yaml,
    loki_index_resource_attributes,
)

# Bounded values only: one stream per service (and namespace, environment), never per process,
# session or request.
LOKI_INDEXABLE = {"service.name", "service.namespace", "deployment.environment.name"}

# prometheus.yml `otlp:` keys documented for Prometheus 3.14.
PROMETHEUS_OTLP_KEYS = {
    "promote_resource_attributes",
    "promote_all_resource_attributes",
    "ignore_resource_attributes",
    "translation_strategy",
    "keep_identifying_resource_attributes",
    "convert_histograms_to_nhcb",
    "promote_scope_metadata",
    "label_name_underscore_sanitization",
    "label_name_preserve_multiple_underscores",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def _mount_targets(compose: dict[str, Any], service: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in compose["services"][service]["volumes"]:
        source, target, *_ = entry.split(":")
        out[target] = source
    return out


# --- Loki ------------------------------------------------------------------------------------


def test_loki_uses_tsdb_and_schema_v13() -> None:
    config = load_yaml(LOKI_CONFIG)
    (period,) = config["schema_config"]["configs"]
    assert period["store"] == "tsdb" and period["schema"] == "v13"
    assert period["object_store"] == "filesystem"
    assert config["limits_config"]["allow_structured_metadata"] is True
    assert config["auth_enabled"] is False  # single tenant: the collector sends no X-Scope-OrgID


def test_loki_indexes_only_low_cardinality_resource_attributes() -> None:
    config = load_yaml(LOKI_CONFIG)
    otlp = config["limits_config"]["otlp_config"]
    assert otlp["resource_attributes"]["ignore_defaults"] is True
    indexed = set(loki_index_resource_attributes())
    assert indexed <= LOKI_INDEXABLE
    assert "service.name" in indexed
    for name in indexed:
        assert not name.endswith((".id", "_id")), name
    # log attributes are never promoted to index labels
    for rule in otlp.get("log_attributes", []):
        assert rule["action"] != "index_label"
    assert config["limits_config"].get("severity_text_as_label", False) is False


def test_loki_keeps_level_detection_and_volume_for_grafana() -> None:
    limits = load_yaml(LOKI_CONFIG)["limits_config"]
    assert limits["discover_log_levels"] is True
    assert limits["volume_enabled"] is True
    assert limits["retention_period"] == "168h"


def test_loki_data_lives_on_its_volume(compose: dict[str, Any]) -> None:
    config = load_yaml(LOKI_CONFIG)
    mounts = _mount_targets(compose, "loki")
    assert mounts["/loki"] == "loki-data"
    assert config["common"]["path_prefix"] == "/loki"
    for path in (
        config["common"]["storage"]["filesystem"]["chunks_directory"],
        config["common"]["storage"]["filesystem"]["rules_directory"],
        config["compactor"]["working_directory"],
    ):
        assert path.startswith("/loki/"), path
    assert config["server"]["http_listen_port"] == 3100


# --- Tempo -----------------------------------------------------------------------------------


def test_tempo_receives_otlp_on_all_interfaces() -> None:
    protocols = load_yaml(TEMPO_CONFIG)["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_tempo_config_has_no_blocks_tempo_3_removed() -> None:
    config = load_yaml(TEMPO_CONFIG)
    for removed in ("ingester", "compactor", "querier_frontend_worker"):
        assert removed not in config, removed
    processors = config["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert "local-blocks" not in processors  # TraceQL metrics are served by the live-store
    assert config["overrides"]["defaults"]["compaction"]["block_retention"] == "168h"


def test_tempo_metrics_generator_writes_to_prometheus(compose: dict[str, Any]) -> None:
    generator = load_yaml(TEMPO_CONFIG)["metrics_generator"]
    (remote,) = generator["storage"]["remote_write"]
    assert remote["url"] == "http://prometheus:9090/api/v1/write"
    assert remote["send_exemplars"] is True
    assert "--web.enable-remote-write-receiver" in compose["services"]["prometheus"]["command"]
    dims = generator["processor"]["span_metrics"]["dimensions"]
    assert dims == ["mcp.method.name", "gen_ai.tool.name"]


def test_tempo_data_lives_on_its_volume(compose: dict[str, Any]) -> None:
    config = load_yaml(TEMPO_CONFIG)
    assert _mount_targets(compose, "tempo")["/var/tempo"] == "tempo-data"
    trace = config["storage"]["trace"]
    assert trace["backend"] == "local"
    for path in (
        trace["wal"]["path"],
        trace["local"]["path"],
        config["metrics_generator"]["storage"]["path"],
    ):
        assert path.startswith("/var/tempo/"), path
    assert config["server"]["http_listen_port"] == 3200


# --- Prometheus ------------------------------------------------------------------------------


def test_prometheus_otlp_block_uses_documented_keys_and_the_translation_we_model() -> None:
    otlp = load_yaml(PROMETHEUS_CONFIG)["otlp"]
    assert set(otlp) <= PROMETHEUS_OTLP_KEYS
    # The dashboards and tests/stack/stack_model.py assume this strategy.
    assert otlp["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    promoted = otlp["promote_resource_attributes"]
    assert "service.name" in promoted
    assert len(promoted) == len(set(promoted))
    for name in promoted:
        assert not name.endswith(".id"), f"{name}: one series per process/session"


def test_prometheus_accepts_late_otlp_samples() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    window = config["storage"]["tsdb"]["out_of_order_time_window"]
    assert re.fullmatch(r"\d+m", window) and int(window[:-1]) >= 10


def test_prometheus_scrapes_only_services_that_exist(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    services = set(compose["services"])
    jobs = set()
    for job in config["scrape_configs"]:
        jobs.add(job["job_name"])
        for static in job["static_configs"]:
            for target in static["targets"]:
                host = target.split(":")[0]
                assert host == "localhost" or host in services, target
    assert jobs == {"prometheus", "otel-collector", "loki", "tempo"}
    assert _mount_targets(compose, "prometheus")["/prometheus"] == "prometheus-data"
