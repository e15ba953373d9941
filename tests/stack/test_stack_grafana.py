"""Grafana provisioning and dashboards: references resolve, variables are defined, panels fit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from helmet_otel import semconv as sc
from helmet_otel.config import ProxyOptions
from tests.stack.stack_model import (
    COMPOSE_FILE,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    dashboard_files,
    datasources,
    iter_panels,
    iter_strings,
    lezer_parse,
    load_json,
    load_yaml,
    variable_refs,
)

DASHBOARDS = dashboard_files()
LOGS_OPTIONS = {
    "showTime": True,
    "showLabels": False,
    "showCommonLabels": False,
    "showLogContextToggle": True,
    "wrapLogMessage": True,
    "prettifyLogMessage": False,
    "enableLogDetails": True,
    "dedupStrategy": "none",
    "enableInfiniteScrolling": True,
}
# Titles the issue asks for, per dashboard (a panel removed or renamed by accident fails here).
REQUIRED_PANELS = {
    "helmet-mcp-overview": {
        "Active sessions",
        "Requests/s by method",
        "Error rate",
        "Tool latency p50 / p95 / p99",
        "Slowest tools (p95 over the time range)",
        "Top errors",
        "Telemetry dropped",
        "Telemetry dropped/s by reason",
    },
    "helmet-mcp-logs": {"MCP log stream", "Log records by event", "Sessions in the time range"},
    "helmet-mcp-session": {
        "Traces of this session",
        "Trace",
        "Log records of this session, in order",
        "Requests",
        "Errors",
        "p95 latency",
    },
    "helmet-mcp-security": {
        "Policy blocks",
        "Blocks by policy and tool",
        "Errors/s by error.type",
        "Auth failures",
        "Auth failures/s",
        "Tools first seen in this time range",
        "Tool call rate vs. its 7-day average",
        "Tool drift",
        "High-severity findings",
    },
}
REQUIRED_VARIABLES = {
    "helmet-mcp-overview": ["service", "method", "tool"],
    "helmet-mcp-logs": ["service", "session", "event", "method", "tool", "direction", "search"],
    "helmet-mcp-session": ["service", "session", "trace"],
    "helmet-mcp-security": ["service", "tool"],
}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return {d["uid"]: d for d in (load_json(p) for p in DASHBOARDS)}


# --- provisioning ----------------------------------------------------------------------------


def test_datasource_uids_are_unique_and_fixed() -> None:
    sources = datasources()
    uids = [ds["uid"] for ds in sources]
    assert len(uids) == len(set(uids))
    assert {ds["uid"]: ds["type"] for ds in sources} == {
        "prometheus": "prometheus",
        "loki": "loki",
        "tempo": "tempo",
    }
    assert [ds["uid"] for ds in sources if ds.get("isDefault")] == ["prometheus"]


def test_datasource_urls_point_at_compose_services() -> None:
    services = load_yaml(COMPOSE_FILE)["services"]
    expected = {
        "prometheus": "http://prometheus:9090",
        "loki": "http://loki:3100",
        "tempo": "http://tempo:3200",
    }
    for ds in datasources():
        assert ds["url"] == expected[ds["uid"]]
        assert urlsplit(ds["url"]).hostname in services


def test_every_datasource_reference_in_provisioning_resolves() -> None:
    sources = datasources()
    uids = {ds["uid"] for ds in sources}
    refs: list[str] = []
    for ds in sources:
        data = ds.get("jsonData", {})
        refs += [d["datasourceUid"] for d in data.get("derivedFields", [])]
        refs += [d["datasourceUid"] for d in data.get("exemplarTraceIdDestinations", [])]
        for key in ("tracesToLogsV2", "tracesToMetrics", "serviceMap"):
            if key in data:
                refs.append(data[key]["datasourceUid"])
    assert sorted(refs) == ["loki", "prometheus", "prometheus", "tempo", "tempo"]
    assert set(refs) <= uids


def test_links_between_signals_are_wired() -> None:
    by_uid = {ds["uid"]: ds["jsonData"] for ds in datasources()}
    # trace -> logs: a custom query on the trace_id structured metadata, not a line filter
    t2l = by_uid["tempo"]["tracesToLogsV2"]
    assert t2l["customQuery"] is True
    assert t2l["query"] == '{${__tags}} | trace_id="${__trace.traceId}"'
    assert {t["key"]: t["value"] for t in t2l["tags"]} == {"service.name": "service_name"}
    # log line -> trace: the trace_id label of the record
    (derived,) = by_uid["loki"]["derivedFields"]
    assert derived["matcherType"] == "label" and derived["matcherRegex"] == "trace_id"
    assert derived["url"] == "${__value.raw}" and derived["datasourceUid"] == "tempo"
    # metric exemplar -> trace
    (exemplar,) = by_uid["prometheus"]["exemplarTraceIdDestinations"]
    assert exemplar == {
        "name": "trace_id",
        "datasourceUid": "tempo",
        "urlDisplayLabel": "View trace",
    }


def test_prometheus_time_interval_is_helmets_push_interval() -> None:
    """Grafana's $__rate_interval is at least 4x the datasource's timeInterval. helmet-otel
    pushes metrics every --metrics-interval seconds: a shorter timeInterval gives rate()
    windows that hold a single sample, and the panels stay empty with default settings."""
    (prometheus,) = [ds for ds in datasources() if ds["uid"] == "prometheus"]
    interval = prometheus["jsonData"]["timeInterval"]
    assert re.fullmatch(r"\d+s", interval), interval
    assert int(interval[:-1]) == ProxyOptions().metrics_interval == 60


def test_provisioning_dollars_are_escaped() -> None:
    """Grafana expands $X and ${X} in provisioning files from its environment: every literal
    dollar must be written $$."""
    for path in (DATASOURCES, DASHBOARD_PROVIDERS):
        for where, value in iter_strings(load_yaml(path)):
            assert "$" not in value.replace("$$", ""), f"{path.name}{where}: {value}"
    assert "$${__trace.traceId}" in DATASOURCES.read_text(encoding="utf-8")


def test_dashboard_provider_is_a_file_provider_into_one_folder() -> None:
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert provider["folderUid"] == "helmet-mcp"
    assert provider["options"]["foldersFromFilesStructure"] is False


# --- dashboards ------------------------------------------------------------------------------


def test_dashboard_uids_are_unique_and_named(dashboards: dict[str, dict[str, Any]]) -> None:
    assert len(dashboards) == len(DASHBOARDS)
    assert set(dashboards) == set(REQUIRED_PANELS)
    titles = [d["title"] for d in dashboards.values()]
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_model_is_provisionable(path: Path) -> None:
    dash = load_json(path)
    assert dash["schemaVersion"] in (41, 42)
    assert "id" not in dash or dash["id"] is None
    assert "__inputs" not in dash and "__requires" not in dash
    text = path.read_text(encoding="utf-8")
    assert "${DS_" not in text
    assert "helmet-otel" in dash["tags"]
    assert dash["time"]["to"] == "now"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_unique_ids_and_fit_the_grid(path: Path) -> None:
    dash = load_json(path)
    panels = list(iter_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0, panel["id"]
        assert pos["x"] + pos["w"] <= 24, f"panel {panel['id']} {panel.get('title')!r} is too wide"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["id"])
                assert other == panel["id"], f"panels {other} and {panel['id']} overlap"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_datasource_a_dashboard_uses_is_provisioned(path: Path) -> None:
    dash = load_json(path)
    types = {ds["uid"]: ds["type"] for ds in datasources()}
    refs: list[Any] = []
    for panel in iter_panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        refs.append(panel["datasource"])
        refs += [t.get("datasource", panel["datasource"]) for t in panel.get("targets", [])]
        assert panel.get("targets"), f"panel {panel['id']} has no query"
    refs += [v["datasource"] for v in dash["templating"]["list"] if v["type"] == "query"]
    for ref in refs:
        assert isinstance(ref, dict), f"{ref!r}: reference datasources by {{type, uid}}"
        assert types.get(ref["uid"]) == ref["type"], ref


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_variable_used_is_defined(path: Path) -> None:
    dash = load_json(path)
    defined = [v["name"] for v in dash["templating"]["list"]]
    assert len(defined) == len(set(defined))
    used: set[str] = set()
    for where, text in iter_strings(
        {"panels": dash["panels"], "templating": dash["templating"], "links": dash["links"]}
    ):
        refs = variable_refs(text)
        assert refs <= set(defined), f"{path.name}{where}: undefined {sorted(refs - set(defined))}"
        used |= refs
    assert set(defined) <= used, f"unused variables {sorted(set(defined) - used)}"


def test_dashboards_have_the_required_panels_and_variables(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for uid, titles in REQUIRED_PANELS.items():
        present = {p.get("title") for p in iter_panels(dashboards[uid]["panels"])}
        assert titles <= present, f"{uid}: missing {sorted(titles - present)}"
        names = [v["name"] for v in dashboards[uid]["templating"]["list"]]
        assert names == REQUIRED_VARIABLES[uid], uid


def test_the_overview_is_the_home_dashboard(dashboards: dict[str, dict[str, Any]]) -> None:
    env = load_yaml(COMPOSE_FILE)["services"]["grafana"]["environment"]
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).name
    assert load_json(DASHBOARDS[0].parent / home)["uid"] == "helmet-mcp-overview"


def test_logs_panels_have_the_viewer_options(dashboards: dict[str, dict[str, Any]]) -> None:
    found = 0
    for dash in dashboards.values():
        for panel in iter_panels(dash["panels"]):
            if panel["type"] != "logs":
                continue
            found += 1
            options = panel["options"]
            for key, value in LOGS_OPTIONS.items():
                assert options.get(key) == value, f"{panel['title']}: {key}"
            assert options["sortOrder"] in ("Descending", "Ascending")
            assert panel["datasource"]["uid"] == "loki"
    assert found == 4
    stream = next(
        p for p in iter_panels(dashboards["helmet-mcp-logs"]["panels"]) if p["type"] == "logs"
    )
    assert stream["options"]["sortOrder"] == "Descending"
    assert dashboards["helmet-mcp-logs"]["refresh"] == "10s"  # the live stream


def test_event_and_direction_choices_are_the_names_helmet_emits(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    variables = {v["name"]: v for v in dashboards["helmet-mcp-logs"]["templating"]["list"]}
    event = variables["event"]
    assert event["query"].split(",") == list(sc.ALL_EVENTS)
    assert [o["value"] for o in event["options"]] == ["$__all", *sc.ALL_EVENTS]
    direction = variables["direction"]
    assert direction["query"].split(",") == [sc.DIRECTION_C2S, sc.DIRECTION_S2C]
    assert [o["value"] for o in direction["options"]] == [
        "$__all",
        sc.DIRECTION_C2S,
        sc.DIRECTION_S2C,
    ]


def test_literal_values_in_queries_are_values_helmet_emits(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """event_name / helmet_direction literals must be real event names and directions."""
    events = set(sc.ALL_EVENTS)
    directions = {sc.DIRECTION_C2S, sc.DIRECTION_S2C}
    seen_events: set[str] = set()
    for dash in dashboards.values():
        for _, text in iter_strings(dash["panels"]):
            for name, value in re.findall(r'\b(event_name|helmet_direction)="([^"$]*)"', text):
                assert value in (events if name == "event_name" else directions), value
                if name == "event_name":
                    seen_events.add(value)
    assert seen_events == {
        sc.EVENT_REQUEST,
        sc.EVENT_RESPONSE,
        sc.EVENT_ERROR,
        sc.EVENT_SESSION_END,
        sc.EVENT_SERVER_STDERR,
        sc.EVENT_SECURITY,
    }


def _variable_matches_empty(variable: dict[str, Any]) -> bool:
    if variable["type"] == "textbox":
        return True
    if variable.get("includeAll"):
        return re.fullmatch(variable.get("allValue") or ".*", "") is not None
    return False


def test_free_text_search_is_regex_escaped(dashboards: dict[str, dict[str, Any]]) -> None:
    """The search box is text, not a regex: `(` must not break the query. Grafana's
    ``:regex`` format escapes it, inside a raw (backtick) LogQL string where escapes stay."""
    uses = 0
    for dash in dashboards.values():
        for panel in iter_panels(dash["panels"]):
            for target in panel.get("targets", []):
                expr = str(target.get("expr", ""))
                if "search" in variable_refs(expr):
                    uses += 1
                    assert "|~ `(?i)${search:regex}`" in expr, (panel["title"], expr)
    assert uses >= 3


def test_loki_stream_selectors_always_have_a_non_empty_matcher(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """Loki rejects a selector whose matchers all match the empty string ({a=~".*"}): every
    selector needs a matcher that cannot, whatever value its variables take (All included)."""
    checked = 0
    for dash in dashboards.values():
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        for panel in iter_panels(dash["panels"]):
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("uid") != "loki":
                    continue
                expr = target["expr"]
                for selector in re.findall(r"(?<!\$)\{([^{}]*)\}", expr):
                    matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector)
                    assert matchers, f"{panel['title']}: {selector}"
                    safe = False
                    for _, op, value in matchers:
                        refs = variable_refs(value)
                        if op in ("!=", "!~"):
                            continue
                        if refs:
                            safe |= not any(_variable_matches_empty(variables[r]) for r in refs)
                        else:
                            pattern = value if op == "=~" else re.escape(value)
                            safe |= re.fullmatch(pattern, "") is None
                    assert safe, f"{dash['uid']} {panel['title']!r}: {selector}"
                    checked += 1
    assert checked >= 15


def test_data_links_to_dashboards_resolve(dashboards: dict[str, dict[str, Any]]) -> None:
    """Links like /d/helmet-mcp-session/...?var-session=... name a dashboard and its variables."""
    checked = 0
    for dash in dashboards.values():
        for _, text in iter_strings(dash["panels"]):
            if not text.startswith("/d/"):
                continue
            parts = urlsplit(text)
            uid = parts.path.split("/")[2]
            assert uid in dashboards, text
            target_vars = {v["name"] for v in dashboards[uid]["templating"]["list"]}
            params = [k for k, _ in parse_qsl(parts.query.replace("${", "").replace("}", ""))]
            for key in params:
                if key.startswith("var-"):
                    assert key.removeprefix("var-") in target_vars, text
            for ref in re.findall(r"\$\{(\w+):queryparam\}", text):
                assert ref in target_vars, text
            checked += 1
    assert checked == 3


def test_trace_panel_shows_the_trace_variable(dashboards: dict[str, dict[str, Any]]) -> None:
    session = dashboards["helmet-mcp-session"]
    (panel,) = [p for p in iter_panels(session["panels"]) if p["type"] == "traces"]
    (target,) = panel["targets"]
    assert target["queryType"] == "traceId" and target["query"] == "$trace"
    trace_var = next(v for v in session["templating"]["list"] if v["name"] == "trace")
    assert trace_var["type"] == "textbox"


def test_lezer_grammars_report_errors() -> None:
    """The parse check must be able to fail: broken queries produce error nodes."""
    results = lezer_parse(
        [
            ("logql", '{service_name="x"} | '),
            ("logql", '{service_name="x"}'),
            ("traceql", "{ span.mcp.method.name = }"),
            ("traceql", '{ span.mcp.method.name = "tools/call" }'),
            ("promql", "sum by (le (rate(x[1m]))"),
            ("promql", "sum by (le) (rate(x[1m]))"),
        ]
    )
    assert [r.ok for r in results] == [False, True, False, True, False, True]
