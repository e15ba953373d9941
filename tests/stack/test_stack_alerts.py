"""The provisioned Grafana alert rules (grafana/provisioning/alerting), offline: the file is the
shape Grafana's file provisioning reads, every reference resolves (datasources, expressions,
the dashboard panel each rule links to), and the three alerts the security issue asks for
query what they should. Their queries are parsed with the dashboards' and are part of the name
contract (`tests/stack/test_stack_queries.py`, `test_name_contract.py`)."""

from __future__ import annotations

import re
from typing import Any

import promql_parser

from tests.stack.stack_model import (
    DASHBOARD_PROVIDERS,
    alert_files,
    alert_rules,
    dashboard_files,
    datasource_types,
    iter_panels,
    load_json,
    load_yaml,
)

DURATION = re.compile(r"^(\d+[smhd])+$")
STATES_NO_DATA = {"OK", "NoData", "Alerting", "KeepLast"}
STATES_ERROR = {"OK", "Error", "Alerting", "KeepLast"}
EXPRESSION_TYPES = {"reduce", "threshold", "math", "resample", "classic_conditions"}
EVALUATORS = {"gt", "lt", "within_range", "outside_range", "gte", "lte", "eq", "ne"}


def _panels_by_dashboard() -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for path in dashboard_files():
        dashboard = load_json(path)
        found[dashboard["uid"]] = {p["id"] for p in iter_panels(dashboard["panels"])}
    return found


def _rule(uid: str) -> dict[str, Any]:
    (rule,) = [r for _, _, r in alert_rules() if r["uid"] == uid]
    return rule


def test_one_alerting_file_in_the_provisioning_format() -> None:
    (path,) = alert_files()
    document = load_yaml(path)
    assert document["apiVersion"] == 1
    assert set(document) == {"apiVersion", "groups"}
    (folder,) = {p["folder"] for p in load_yaml(DASHBOARD_PROVIDERS)["providers"]}
    for group in document["groups"]:
        assert set(group) == {"orgId", "name", "folder", "interval", "rules"}
        assert group["orgId"] == 1 and group["folder"] == folder  # beside the dashboards
        assert DURATION.match(group["interval"]), group["name"]


def test_every_rule_resolves() -> None:
    types = datasource_types()
    panels = _panels_by_dashboard()
    rules = alert_rules()
    uids = [rule["uid"] for _, _, rule in rules]
    assert len(uids) == len(set(uids)) == 3
    for _path, _group, rule in rules:
        where = rule["uid"]
        assert re.fullmatch(r"[a-z0-9-]{1,40}", rule["uid"]), where
        assert DURATION.match(rule["for"]), where
        assert rule["noDataState"] in STATES_NO_DATA and rule["execErrState"] in STATES_ERROR
        assert rule["isPaused"] is False
        ref_ids = [item["refId"] for item in rule["data"]]
        assert len(ref_ids) == len(set(ref_ids)) and rule["condition"] in ref_ids, where
        for item in rule["data"]:
            model = item["model"]
            assert model["refId"] == item["refId"], where
            if item["datasourceUid"] == "__expr__":
                assert model["type"] in EXPRESSION_TYPES, where
                assert model["expression"] in ref_ids and model["expression"] != item["refId"]
                for condition in model.get("conditions", []):
                    evaluator = condition["evaluator"]
                    assert evaluator["type"] in EVALUATORS, where
                    assert all(isinstance(p, int | float) for p in evaluator["params"]), where
            else:
                assert types[item["datasourceUid"]] == "prometheus", where
                time_range = item["relativeTimeRange"]
                assert time_range["from"] > time_range["to"] >= 0, where
                assert model["instant"] is True, where
                promql_parser.parse(model["expr"])
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], where
        assert "$" not in annotations["summary"] + annotations["description"], where
        dashboard = annotations["__dashboardUid__"]
        assert int(annotations["__panelId__"]) in panels[dashboard], where
        assert rule["labels"]["severity"] in ("warning", "critical"), where


def _query(uid: str) -> str:
    (query,) = [i["model"]["expr"] for i in _rule(uid)["data"] if i["datasourceUid"] != "__expr__"]
    return query


def _threshold(uid: str) -> tuple[str, float]:
    rule = _rule(uid)
    (item,) = [i for i in rule["data"] if i["refId"] == rule["condition"]]
    (condition,) = item["model"]["conditions"]
    (value,) = condition["evaluator"]["params"]
    return condition["evaluator"]["type"], value


def test_the_three_alerts_query_blocks_auth_failures_and_drift() -> None:
    blocks = _query("helmet-policy-block-burst")
    assert "helmet_policy_decisions_total{" in blocks
    assert 'helmet_policy_action="deny"' in blocks and 'helmet_policy_mode="enforce"' in blocks
    assert _threshold("helmet-policy-block-burst") == ("gt", 10)
    auth = _query("helmet-auth-failures")
    assert 'helmet_security_events_total{helmet_security_type="auth_failure"}' in auth
    assert _threshold("helmet-auth-failures") == ("gt", 5)
    drift = _query("helmet-tool-drift")
    assert 'helmet_security_events_total{helmet_security_type="tool_drift"}' in drift
    assert _threshold("helmet-tool-drift") == ("gt", 0)  # any drift
    for uid in ("helmet-policy-block-burst", "helmet-auth-failures", "helmet-tool-drift"):
        assert _query(uid).startswith("sum by (service_name) (increase("), uid
