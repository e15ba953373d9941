"""Every file of the bundled stack parses, with no duplicate keys (PyYAML and json would
otherwise keep the last one silently)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack.stack_model import REPO, STACK_YAML_FILES, dashboard_files


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)  # pyright: ignore[reportUnknownMemberType]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _no_duplicate_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    duplicates = {k for k in keys if keys.count(k) > 1}
    assert not duplicates, f"duplicate keys {sorted(duplicates)}"
    return dict(pairs)


def test_the_stack_has_the_expected_files() -> None:
    names = {str(p.relative_to(REPO)) for p in STACK_YAML_FILES}
    assert names == {
        "docker-compose.yml",
        "collector-config/config.yaml",
        "observability/loki/config.yaml",
        "observability/tempo/config.yaml",
        "observability/prometheus/prometheus.yml",
        "grafana/provisioning/datasources/datasources.yaml",
        "grafana/provisioning/dashboards/helmet.yaml",
        "grafana/provisioning/alerting/helmet-alerts.yaml",
    }
    assert [p.name for p in dashboard_files()] == [
        "mcp-logs.json",
        "mcp-overview.json",
        "mcp-security.json",
        "mcp-session.json",
    ]


@pytest.mark.parametrize("path", STACK_YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses_without_duplicate_keys(path: Path) -> None:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    assert isinstance(data, dict) and data


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_json_parses_without_duplicate_keys(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_pairs)
    assert isinstance(data, dict) and data["panels"]


def test_the_duplicate_key_check_can_fail() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        yaml.load("a: 1\nb: 2\na: 3\n", Loader=_UniqueKeyLoader)
    with pytest.raises(AssertionError, match="duplicate keys"):
        json.loads('{"a": 1, "a": 2}', object_pairs_hook=_no_duplicate_pairs)
