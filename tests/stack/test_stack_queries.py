"""Every PromQL, LogQL and TraceQL query of the dashboards and the datasource links parses with
a real parser for its language, after Grafana's variables and macros are substituted."""

from __future__ import annotations

import re

import promql_parser
import pytest

from tests.stack.stack_model import (
    Query,
    all_name_uses,
    all_queries,
    interpolate,
    lezer_parse,
    variable_refs,
)

QUERIES, TRACE_LOOKUPS = all_queries()


def _ids(queries: list[Query]) -> list[str]:
    return [q.where for q in queries]


def test_queries_were_found_in_every_dashboard_and_link() -> None:
    by_lang = {
        lang: [q for q in QUERIES if q.lang == lang] for lang in ("promql", "logql", "traceql")
    }
    # Exact counts: a query lost by the extraction (or a panel dropped) shows up here.
    assert {lang: len(qs) for lang, qs in by_lang.items()} == {
        "promql": 54,
        "logql": 22,
        "traceql": 4,
    }
    sources = {q.where.split(" ")[0] for q in QUERIES}
    assert sources == {
        "alerts",
        "datasource",
        "mcp-overview.json",
        "mcp-logs.json",
        "mcp-session.json",
        "mcp-security.json",
    }
    assert len(TRACE_LOOKUPS) == 1


def test_interpolation_leaves_no_grafana_syntax() -> None:
    for q in QUERIES:
        assert "$" not in q.expr and "[[" not in q.expr, q.where
    assert interpolate("rate(x[$__rate_interval]) offset $__range") == "rate(x[1m]) offset 1h"
    assert interpolate('{a=~"${service:regex}"} |~ "$search"') == (
        '{a=~"grafanavar_service"} |~ "grafanavar_search"'
    )
    with pytest.raises(AssertionError, match="no sample value"):
        interpolate("${__unknown_builtin}")


@pytest.mark.parametrize(
    "query",
    [q for q in QUERIES if q.lang == "promql"],
    ids=_ids([q for q in QUERIES if q.lang == "promql"]),
)
def test_promql_parses_with_promql_parser(query: Query) -> None:
    promql_parser.parse(query.expr)


def test_promql_parser_rejects_broken_queries() -> None:
    for broken in ("sum(rate(x[1m])", "rate(x[1m]) by (a)", 'x{a="b"', "histogram_quantile(0.9 x)"):
        with pytest.raises(ValueError):
            promql_parser.parse(broken)


def test_every_query_parses_with_the_lezer_grammars() -> None:
    """LogQL and TraceQL with Grafana's own grammars; PromQL a second time with the grammar
    Prometheus' UI uses (it tracks the 3.x language, promql-parser the 2.x one)."""
    results = lezer_parse([(q.lang, q.expr) for q in QUERIES])
    failures = [
        f"{q.where}: {r.errors} in {q.expr}"
        for q, r in zip(QUERIES, results, strict=True)
        if not r.ok
    ]
    assert not failures, "\n".join(failures)
    expected_top = {"promql": "PromQL", "logql": "LogQL", "traceql": "TraceQL"}
    for q, r in zip(QUERIES, results, strict=True):
        assert r.top == expected_top[q.lang], q.where


def test_trace_id_lookups_name_a_variable_or_an_id() -> None:
    for lookup in TRACE_LOOKUPS:
        raw = lookup.raw.strip()
        assert re.fullmatch(r"\$\w+|\$\{\w+\}|[0-9a-f]{32}", raw), lookup.where
        assert variable_refs(raw) == {"trace"}


def test_promql_and_logql_names_are_underscore_forms() -> None:
    """Prometheus and Loki only ever see translated names; a dotted name there never matches
    (TraceQL keeps the dots)."""
    uses = all_name_uses()
    for use in uses:
        if use.backend in ("prometheus", "loki"):
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", use.name), use
        else:
            assert "." in use.name, use  # every attribute helmet emits is namespaced


def test_histogram_quantiles_aggregate_by_le() -> None:
    for q in QUERIES:
        if q.lang != "promql" or "histogram_quantile" not in q.expr:
            continue
        for inner in re.findall(r"histogram_quantile\(\s*[\d.]+\s*,\s*sum by \(([^)]*)\)", q.expr):
            assert "le" in [x.strip() for x in inner.split(",")], q.where
        assert "_bucket" in q.expr, q.where


def test_rate_windows_use_rate_interval_or_range() -> None:
    """$__interval can be shorter than two scrapes/pushes; rate() then returns nothing."""
    for q in QUERIES:
        if q.lang != "promql" or q.where.startswith("datasource"):
            continue
        for window in re.findall(r"\[(\$?[\w]+)\]", q.raw):
            if q.where.startswith("alerts"):  # no time picker: fixed windows of 5+ pushes
                assert re.fullmatch(r"(\d+)m", window) and int(window[:-1]) >= 5, q.where
                continue
            assert window in ("$__rate_interval", "$__range", "7d"), f"{q.where}: [{window}]"
