"""docker-compose.yml: valid against the Compose Specification schema and wired correctly.

The schema is the compose-spec JSON schema vendored from the `check-jsonschema` 0.39.0 wheel
(`check_jsonschema/builtin_schemas/vendor/compose-spec.json`, Apache-2.0, license beside it).
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

import jsonschema
import pytest

from tests.stack.stack_model import (
    COLLECTOR_CONFIG,
    COMPOSE_FILE,
    DASHBOARD_PROVIDERS,
    REPO,
    STACK_TESTS,
    load_yaml,
)

SCHEMA = STACK_TESTS / "schemas" / "compose-spec.json"
SERVICES = {"otelcol-init", "otel-collector", "loki", "tempo", "prometheus", "grafana"}
# An exact version (x.y.z, optionally v-prefixed, optionally with a suffix) or a digest.
PINNED = re.compile(r"^[\w./-]+(:v?\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every short-syntax volume entry."""
    out: list[tuple[str, str]] = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        source, target, *_ = entry.split(":")
        out.append((source, target))
    return out


def test_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    errors = sorted(_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_schema_rejects_what_compose_rejects(compose: dict[str, Any]) -> None:
    validator = _validator()
    broken = json.loads(json.dumps(compose))
    broken["services"]["loki"]["restart_policy"] = "always"  # no such key
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(compose))
    broken["services"]["grafana"]["depends_on"]["loki"]["condition"] = "service_ready"
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(compose))
    broken["volumes"]["loki-data"] = {"driver_opts": "not-a-map"}
    assert not validator.is_valid(broken)


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    assert "version" not in compose  # obsolete in the Compose Specification


def test_every_image_is_pinned_to_an_exact_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        assert PINNED.match(image) and (":" in image or "@" in image), f"{name}: {image}"
        assert not image.endswith(":latest"), f"{name}: {image}"
    assert PINNED.match("grafana/loki:3.7") is None  # a moving minor tag
    assert PINNED.match("grafana/loki:latest") is None


def test_pinned_versions_are_the_reviewed_ones(compose: dict[str, Any]) -> None:
    images = {name: s["image"] for name, s in compose["services"].items()}
    assert images == {
        "otelcol-init": "busybox:1.37.0",
        "otel-collector": "otel/opentelemetry-collector-contrib:0.159.0",
        "loki": "grafana/loki:3.7.6",
        "tempo": "grafana/tempo:3.0.3",
        "prometheus": "prom/prometheus:v3.14.0",
        "grafana": "grafana/grafana:13.2.0",
    }


def test_every_bind_mount_source_exists(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        for source, target in _volumes(service):
            if source.startswith((".", "/")):
                path = (REPO / source).resolve()
                assert path.exists(), f"{name}: bind source {source} is missing"
                assert REPO in path.parents, f"{name}: {source} is outside the repository"
                checked += 1
            assert PurePosixPath(target).is_absolute(), f"{name}: {target}"
    assert checked == 6


def test_every_named_volume_is_declared_and_used(compose: dict[str, Any]) -> None:
    used = {
        source
        for service in compose["services"].values()
        for source, _ in _volumes(service)
        if not source.startswith((".", "/"))
    }
    assert used == set(compose["volumes"])


def test_every_depends_on_target_exists_and_has_what_its_condition_needs(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert "restart" not in services[target], f"{target} must run once"
            else:
                assert condition == "service_started"


def test_ports_are_bound_to_localhost_only(compose: dict[str, Any]) -> None:
    published: list[str] = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
            published.append(port)
    assert sorted(published) == sorted(
        [
            "127.0.0.1:4317:4317",
            "127.0.0.1:4318:4318",
            "127.0.0.1:13133:13133",
            "127.0.0.1:3100:3100",
            "127.0.0.1:3200:3200",
            "127.0.0.1:9090:9090",
            "127.0.0.1:3000:3000",
        ]
    )


def test_healthchecks_use_what_each_image_has(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # Loki and Tempo images are distroless: only their own binaries' -health flags work.
    assert services["loki"]["healthcheck"]["test"] == ["CMD", "/usr/bin/loki", "-health"]
    assert services["tempo"]["healthcheck"]["test"] == ["CMD", "/tempo", "-health"]
    # Prometheus (busybox base) and Grafana (alpine) have wget.
    assert "/-/ready" in " ".join(services["prometheus"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(services["grafana"]["healthcheck"]["test"])
    # The collector image is FROM scratch: no shell, no probe binary.
    assert "healthcheck" not in services["otel-collector"]


def test_restart_policy_on_long_running_services(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "otelcol-init":
            assert "restart" not in service
        else:
            assert service["restart"] == "unless-stopped", name


def test_collector_queue_volume_matches_file_storage_and_is_chowned(
    compose: dict[str, Any],
) -> None:
    collector = load_yaml(COLLECTOR_CONFIG)
    directory = collector["extensions"]["file_storage/queue"]["directory"]
    services = compose["services"]
    mounts = dict((t, s) for s, t in _volumes(services["otel-collector"]))
    assert mounts[directory] == "otelcol-queue"
    init = services["otelcol-init"]
    assert dict((t, s) for s, t in _volumes(init)) == {directory: "otelcol-queue"}
    assert init["command"] == ["chown", "-R", "10001:10001", directory]
    assert (
        services["otel-collector"]["depends_on"]["otelcol-init"]["condition"]
        == "service_completed_successfully"
    )


def test_collector_reads_the_mounted_config(compose: dict[str, Any]) -> None:
    service = compose["services"]["otel-collector"]
    mounts = dict((t, s) for s, t in _volumes(service))
    (config_arg,) = [a for a in service["command"] if a.startswith("--config=")]
    assert mounts[config_arg.removeprefix("--config=")] == "./collector-config/config.yaml"
    assert service["environment"]["GOMEMLIMIT"] == "400MiB" and service["mem_limit"] == "512m"


def test_backends_read_their_mounted_configs(compose: dict[str, Any]) -> None:
    expected = {
        "loki": ("-config.file=", "./observability/loki/config.yaml"),
        "tempo": ("-config.file=", "./observability/tempo/config.yaml"),
        "prometheus": ("--config.file=", "./observability/prometheus/prometheus.yml"),
    }
    for name, (flag, source) in expected.items():
        service = compose["services"][name]
        mounts = dict((t, s) for s, t in _volumes(service))
        (arg,) = [a for a in service["command"] if a.startswith(flag)]
        assert mounts[arg.removeprefix(flag)] == source, name


def test_prometheus_command_enables_the_receivers() -> None:
    command = load_yaml(COMPOSE_FILE)["services"]["prometheus"]["command"]
    for flag in (
        "--web.enable-otlp-receiver",
        "--web.enable-remote-write-receiver",
        "--enable-feature=exemplar-storage",
        "--storage.tsdb.path=/prometheus",
    ):
        assert flag in command
    assert "--enable-feature=native-histograms" not in command  # a no-op since 3.8


def test_grafana_is_read_only_for_anonymous_users_and_opens_the_overview(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = dict((t, s) for s, t in _volumes(grafana))
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    # The dashboard provider reads the directory the dashboards are mounted at ...
    providers = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    (provider,) = providers
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    # ... and the home dashboard is one of those files.
    home = PurePosixPath(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home.parent) == provider["options"]["path"]
    assert (REPO / "grafana" / "dashboards" / home.name).is_file()
    assert home.name == "mcp-overview.json"
