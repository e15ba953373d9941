"""What the stack tests share: the files of the bundled stack, the backends' name translation
rules, every query the dashboards and datasource links run, and the names those queries use.

Nothing here talks to a backend (there is none on the test machines): the rules are small
re-implementations of what Prometheus' and Loki's OTLP endpoints do (metric names gain their
unit and ``_total`` suffixes, dots become underscores; Loki promotes resource attributes to
labels and keeps the rest as structured metadata: see ``docs/grafana.md``), and the queries are
parsed with the
real grammars (``promql-parser`` from PyPI, ``@grafana/lezer-logql`` / ``@grafana/lezer-traceql``
/ ``@prometheus-io/lezer-promql`` from npm, run with node by ``js/parse_queries.mjs``).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import promql_parser
import yaml

from helmet_otel import semconv as sc

REPO = Path(__file__).resolve().parents[2]
STACK_TESTS = Path(__file__).resolve().parent
JS_DIR = STACK_TESTS / "js"
COMPOSE_FILE = REPO / "docker-compose.yml"
COLLECTOR_CONFIG = REPO / "collector-config" / "config.yaml"
LOKI_CONFIG = REPO / "observability" / "loki" / "config.yaml"
TEMPO_CONFIG = REPO / "observability" / "tempo" / "config.yaml"
PROMETHEUS_CONFIG = REPO / "observability" / "prometheus" / "prometheus.yml"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = REPO / "grafana" / "provisioning" / "dashboards" / "helmet.yaml"
DASHBOARDS_DIR = REPO / "grafana" / "dashboards"
ALERTS_DIR = REPO / "grafana" / "provisioning" / "alerting"

STACK_YAML_FILES: tuple[Path, ...] = (
    COMPOSE_FILE,
    *sorted((REPO / "collector-config").rglob("*.yaml")),
    *sorted((REPO / "observability").rglob("*.yaml")),
    *sorted((REPO / "observability").rglob("*.yml")),
    *sorted((REPO / "grafana" / "provisioning").rglob("*.yaml")),
)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def unescape_provisioning(value: Any) -> Any:
    """Grafana expands ``$VAR``/``${VAR}`` in provisioning files; ``$$`` is a literal ``$``."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [unescape_provisioning(v) for v in value]
    if isinstance(value, dict):
        return {k: unescape_provisioning(v) for k, v in value.items()}
    return value


def datasources() -> list[dict[str, Any]]:
    return unescape_provisioning(load_yaml(DATASOURCES))["datasources"]


# =============================================================================================
# Name translation rules
# =============================================================================================

# otlptranslator unit_namer.go: the main units and the "per" units.
_UNIT_WORDS: dict[str, str] = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNIT_WORDS: dict[str, str] = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}

MetricKind = Literal["histogram", "exponential_histogram", "counter", "updown", "gauge"]


def _unit_tokens(unit: str) -> list[str]:
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()  # annotations like {session} add nothing
    if not unit:
        return []
    main, _, per = unit.partition("/")
    tokens: list[str] = []
    main_word = _UNIT_WORDS.get(main, main)
    main_word = re.sub(r"[^a-zA-Z0-9:]+", "_", main_word).strip("_")
    if main_word:
        tokens.append(main_word)
    if per:
        per_word = _PER_UNIT_WORDS.get(per, per)
        per_word = re.sub(r"[^a-zA-Z0-9:]+", "_", per_word).strip("_")
        if per_word:
            tokens.append(f"per_{per_word}")
    return tokens


def prometheus_metric_name(name: str, unit: str, kind: MetricKind) -> str:
    """Prometheus' OTLP receiver with ``translation_strategy: UnderscoreEscapingWithSuffixes``."""
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]+", name) if t]
    for unit_token in _unit_tokens(unit):
        parts = unit_token.split("_")
        if unit_token not in tokens and not (len(parts) > 1 and tokens[-len(parts) :] == parts):
            tokens.extend(parts)
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if kind == "gauge" and unit == "1":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    if out and out[0].isdigit():
        out = "_" + out
    return out


def prometheus_series_names(name: str, unit: str, kind: MetricKind) -> tuple[str, ...]:
    """The series names one OTLP metric becomes (classic histograms: _bucket, _sum, _count)."""
    base = prometheus_metric_name(name, unit, kind)
    if kind == "histogram":
        return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
    return (base,)


def label_name(key: str) -> str:
    """otlptranslator LabelNamer, used by both Prometheus and Loki for attribute keys."""
    out = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    if out and out[0].isdigit():
        out = "key_" + out
    elif out.startswith("_") and not out.startswith("__"):
        out = "key" + out
    return out


def metric_kind(metric: Mapping[str, Any]) -> MetricKind:
    """The kind of a metric as flattened by ``tests/otlp_receiver.py``."""
    mtype = metric["type"]
    if mtype == "histogram":
        return "histogram"
    if mtype == "exponential_histogram":
        return "exponential_histogram"
    if mtype == "sum":
        return "counter" if metric["is_monotonic"] else "updown"
    if mtype == "gauge":
        return "gauge"
    raise AssertionError(f"unexpected metric type {mtype!r} for {metric['name']}")


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


# --- backend configuration the rules depend on ---------------------------------------------


@functools.cache
def prometheus_promoted_resource_attributes() -> tuple[str, ...]:
    config = load_yaml(PROMETHEUS_CONFIG)
    return tuple(config.get("otlp", {}).get("promote_resource_attributes", []))


@functools.cache
def loki_index_resource_attributes() -> tuple[str, ...]:
    """The resource attributes Loki turns into index (stream) labels, from its config."""
    config = load_yaml(LOKI_CONFIG)
    resource = config["limits_config"]["otlp_config"]["resource_attributes"]
    assert resource.get("ignore_defaults") is True, "the model below assumes ignore_defaults"
    out: list[str] = []
    for rule in resource.get("attributes_config", []):
        if rule["action"] == "index_label":
            out.extend(rule["attributes"])
    return tuple(out)


@functools.cache
def loki_detects_levels() -> bool:
    return bool(load_yaml(LOKI_CONFIG)["limits_config"].get("discover_log_levels", True))


@functools.cache
def collector_copies_event_name() -> bool:
    """Whether every logs pipeline copies LogRecord.event_name into the attribute event_name."""
    config = load_yaml(COLLECTOR_CONFIG)
    processors = config.get("processors", {})
    copy = re.compile(r'^set\(log\.attributes\["event_name"\],\s*log\.event_name\)')
    pipelines = [p for n, p in config["service"]["pipelines"].items() if n.split("/")[0] == "logs"]
    assert pipelines, "no logs pipeline"
    for pipeline in pipelines:
        found = False
        for proc in pipeline.get("processors", []):
            if proc.split("/")[0] != "transform":
                continue
            for stmt in processors[proc].get("log_statements", []):
                text = stmt if isinstance(stmt, str) else " ".join(stmt.get("statements", []))
                if copy.search(text.strip()):
                    found = True
        if not found:
            return False
    return True


def collector_resource_inserts() -> dict[str, str]:
    """Resource attributes the collector adds (``resource`` processors, insert/upsert)."""
    config = load_yaml(COLLECTOR_CONFIG)
    out: dict[str, str] = {}
    for name, proc in config.get("processors", {}).items():
        if name.split("/")[0] != "resource":
            continue
        for attr in proc.get("attributes", []):
            if attr.get("action") in ("insert", "upsert"):
                # ${env:NAME:-default}: what the collector sees when NAME is not set
                value = re.sub(r"\$\{env:\w+:-([^}]*)\}", r"\1", str(attr.get("value")))
                out[attr["key"]] = value
    return out


# --- what each backend ends up with, given what the proxy exported --------------------------


@dataclass
class Produced:
    """The names the backends would hold for one capture of OTLP data."""

    # Prometheus: series name -> label sets (one per data point, exemplar labels aside)
    prom_series: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    prom_exemplar_labels: set[str] = field(default_factory=set)
    # Loki: one (stream labels, structured metadata) pair per log record
    loki_records: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    # Tempo: attribute keys per span and per resource, plus span names
    span_attributes: list[dict[str, Any]] = field(default_factory=list)
    resource_attributes: list[dict[str, Any]] = field(default_factory=list)
    span_names: set[str] = field(default_factory=set)

    def prom_label_names(self) -> set[str]:
        return {k for sets in self.prom_series.values() for s in sets for k in s}

    def loki_stream_label_names(self) -> set[str]:
        return {k for stream, _ in self.loki_records for k in stream}

    def loki_label_names(self) -> set[str]:
        return {k for stream, sm in self.loki_records for k in (*stream, *sm)}


def translate(
    spans: Sequence[Mapping[str, Any]],
    logs: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]],
) -> Produced:
    """Apply the collector, Prometheus, Loki and Tempo rules to flattened OTLP data."""
    inserts = collector_resource_inserts()
    promoted = prometheus_promoted_resource_attributes()
    indexed = loki_index_resource_attributes()
    out = Produced()

    def with_collector(resource: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(resource)
        for key, value in inserts.items():
            merged.setdefault(key, value)
        return merged

    for metric in metrics:
        resource = with_collector(metric["resource"])
        kind = metric_kind(metric)
        base: dict[str, str] = {}
        service = resource.get("service.name")
        namespace = resource.get("service.namespace")
        if service is not None:
            base["job"] = f"{namespace}/{service}" if namespace else str(service)
        if "service.instance.id" in resource:
            base["instance"] = str(resource["service.instance.id"])
        for key in promoted:
            if key in resource:
                base[label_name(key)] = _stringify(resource[key])
        names = prometheus_series_names(metric["name"], metric["unit"], kind)
        for point in metric["data_points"]:
            labels = dict(base)
            for key, value in point["attributes"].items():
                labels[label_name(key)] = _stringify(value)
            for series in names:
                series_labels = dict(labels)
                if series.endswith("_bucket") and kind == "histogram":
                    series_labels["le"] = "+Inf"
                out.prom_series.setdefault(series, []).append(series_labels)
            for exemplar in point.get("exemplars", []):
                if exemplar.get("trace_id"):
                    out.prom_exemplar_labels.update({"trace_id", "span_id"})
                for key in exemplar.get("attributes", {}):
                    out.prom_exemplar_labels.add(label_name(key))

    copies_event_name = collector_copies_event_name()
    detects_levels = loki_detects_levels()
    for record in logs:
        resource = with_collector(record["resource"])
        stream: dict[str, str] = {}
        sm: dict[str, str] = {}
        for key, value in resource.items():
            target = stream if key in indexed else sm
            target[label_name(key)] = _stringify(value)
        attributes = dict(record["attributes"])
        if copies_event_name and record.get("event_name") and "event_name" not in attributes:
            attributes["event_name"] = record["event_name"]
        for key, value in attributes.items():
            if isinstance(value, dict):
                for sub_key, sub_value in _flatten_map(key, value):
                    sm[label_name(sub_key)] = _stringify(sub_value)
            else:
                sm[label_name(key)] = _stringify(value)
        scope = record.get("scope") or {}
        if scope.get("name"):
            sm["scope_name"] = scope["name"]
        if scope.get("version"):
            sm["scope_version"] = scope["version"]
        if record.get("trace_id") and set(record["trace_id"]) != {"0"}:
            sm["trace_id"] = record["trace_id"]
        if record.get("span_id") and set(record["span_id"]) != {"0"}:
            sm["span_id"] = record["span_id"]
        if record.get("severity_number"):
            sm["severity_number"] = str(record["severity_number"])
            if detects_levels:
                sm["detected_level"] = _detected_level(int(record["severity_number"]))
        if record.get("severity_text"):
            sm["severity_text"] = record["severity_text"]
        out.loki_records.append((stream, sm))

    for span in spans:
        out.span_attributes.append(dict(span["attributes"]))
        out.resource_attributes.append(with_collector(span["resource"]))
        out.span_names.add(span["name"])
    return out


def _flatten_map(prefix: str, value: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, sub in value.items():
        name = f"{prefix}_{key}"
        if isinstance(sub, dict):
            yield from _flatten_map(name, sub)
        else:
            yield name, sub


def _detected_level(severity_number: int) -> str:
    # Loki field_detection.go: OTLP severity ranges to level names.
    if severity_number <= 4:
        return "trace"
    if severity_number <= 8:
        return "debug"
    if severity_number <= 12:
        return "info"
    if severity_number <= 16:
        return "warn"
    if severity_number <= 20:
        return "error"
    return "critical"


# =============================================================================================
# Grafana: dashboards, variables, interpolation
# =============================================================================================

GRAFANA_MACROS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__auto": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "60000",
}

VAR_SAMPLE_PREFIX = "grafanavar_"
"""Variables are replaced by ``grafanavar_<name>``; matchers on such values are not literals."""

# Grafana's variable syntaxes: $name, ${name}, ${name:format}, ${name.path}, [[name]], [[name:fmt]]
VARIABLE_REF = re.compile(
    r"\$(?P<plain>\w+)|\$\{(?P<braced>\w+)(?:\.[^}:]*)?(?::(?P<fmt>[^}]+))?\}|\[\[(?P<old>\w+)(?::\w+)?\]\]"
)


def variable_refs(text: str) -> set[str]:
    """Names of the dashboard variables a string refers to (Grafana's builtins excluded)."""
    out: set[str] = set()
    for match in VARIABLE_REF.finditer(text):
        name = match.group("plain") or match.group("braced") or match.group("old")
        if name and not name.startswith("__"):
            out.add(name)
    return out


def interpolate(text: str, extra: Mapping[str, str] | None = None) -> str:
    """Replace Grafana macros and variables by values that keep the query's syntax valid."""
    extra = extra or {}

    def repl(match: re.Match[str]) -> str:
        name = match.group("plain") or match.group("braced") or match.group("old")
        assert name is not None
        if name in extra:
            return extra[name]
        if name in GRAFANA_MACROS:
            return GRAFANA_MACROS[name]
        if name.startswith("__"):
            raise AssertionError(f"no sample value for Grafana builtin ${name} in {text!r}")
        return VAR_SAMPLE_PREFIX + name

    return VARIABLE_REF.sub(repl, text)


def iter_panels(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def iter_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from iter_strings(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_strings(item, f"{path}.{key}")


Lang = Literal["promql", "logql", "traceql"]


@dataclass(frozen=True)
class Query:
    """One query a dashboard or a datasource link runs."""

    lang: Lang
    raw: str  # as written (Grafana variables and macros unexpanded)
    expr: str  # after interpolation: what the parsers get
    where: str
    legend: str = ""
    synthetic: bool = False  # built from a variable definition, not written by hand


DS_LANG: dict[str, Lang] = {"prometheus": "promql", "loki": "logql", "tempo": "traceql"}


def datasource_types() -> dict[str, str]:
    return {ds["uid"]: ds["type"] for ds in datasources()}


def _ds_uid(ref: Any) -> str | None:
    if isinstance(ref, dict):
        return ref.get("uid")
    if isinstance(ref, str):
        return ref
    return None


@dataclass(frozen=True)
class TraceIdLookup:
    """A Tempo target that shows one trace by id (queryType traceId)."""

    raw: str
    where: str


def dashboard_queries(path: Path) -> tuple[list[Query], list[TraceIdLookup]]:
    """Every query of one dashboard: panel targets and variable definitions."""
    dash = load_json(path)
    types = datasource_types()
    queries: list[Query] = []
    lookups: list[TraceIdLookup] = []
    for panel in iter_panels(dash.get("panels", [])):
        if panel.get("type") == "row":
            continue
        panel_ds = _ds_uid(panel.get("datasource"))
        for target in panel.get("targets", []):
            uid = _ds_uid(target.get("datasource")) or panel_ds
            where = f"{path.name} panel {panel['id']} {panel.get('title')!r} target {target.get('refId')}"
            assert uid in types, f"{where}: unknown datasource {uid!r}"
            ds_type = types[uid]
            if ds_type == "tempo":
                query_type = target.get("queryType", "traceql")
                if query_type == "traceId":
                    lookups.append(TraceIdLookup(target["query"], where))
                    continue
                assert query_type == "traceql", f"{where}: unsupported Tempo queryType {query_type}"
                raw = target["query"]
            else:
                raw = target["expr"]
            queries.append(
                Query(
                    DS_LANG[ds_type], raw, interpolate(raw), where, target.get("legendFormat", "")
                )
            )
    for variable in dash.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        where = f"{path.name} variable {variable['name']!r}"
        uid = _ds_uid(variable.get("datasource"))
        assert uid in types, f"{where}: unknown datasource {uid!r}"
        query = variable["query"]
        raw, synthetic = variable_query_expression(types[uid], query, where)
        queries.append(
            Query(DS_LANG[types[uid]], raw, interpolate(synthetic), where, synthetic=True)
        )
    return queries, lookups


_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<selector>.+),\s*)?(?P<label>\w+)\s*\)\s*$", re.S
)


def variable_query_expression(ds_type: str, query: Any, where: str) -> tuple[str, str]:
    """A query variable as (what is written, an equivalent query in the datasource's language).

    Prometheus ``label_values(sel, label)`` -> ``count by (label) (sel)``; Loki label values of
    a stream label -> a stream selector on it; Tempo attribute values -> a TraceQL filter on the
    attribute. The equivalent query lets one parser and one name extractor cover variables too.
    """
    if ds_type == "prometheus":
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"{where}: only label_values(...) variables are supported, got {text!r}"
        selector = match.group("selector") or '{__name__=~".+"}'
        return text, f"count by ({match.group('label')}) ({selector})"
    if ds_type == "loki":
        assert isinstance(query, dict) and query.get("type") == 1, f"{where}: want label values"
        assert not query.get("stream"), f"{where}: stream-filtered label values are not modelled"
        return json.dumps(query), f'count_over_time({{{query["label"]}=~".+"}} [1m])'
    if ds_type == "tempo":
        assert isinstance(query, dict) and query.get("type") == 1, f"{where}: want label values"
        return json.dumps(query), f"{{ .{query['label']} != nil }}"
    raise AssertionError(f"{where}: unsupported variable datasource type {ds_type}")


def link_queries() -> list[Query]:
    """Queries the datasource links run (trace -> logs, trace -> metrics)."""
    out: list[Query] = []
    for ds in datasources():
        json_data = ds.get("jsonData", {})
        t2l = json_data.get("tracesToLogsV2")
        if t2l and t2l.get("customQuery"):
            tags = ", ".join(
                f'{t.get("value") or label_name(t["key"])}="{VAR_SAMPLE_PREFIX}tag"'
                for t in t2l["tags"]
            )
            raw = t2l["query"]
            expr = interpolate(raw, {"__tags": tags, "__trace": f"{VAR_SAMPLE_PREFIX}trace_id"})
            out.append(Query("logql", raw, expr, f"datasource {ds['uid']} tracesToLogsV2"))
        t2m = json_data.get("tracesToMetrics")
        if t2m:
            tags = ", ".join(
                f'{t.get("value") or label_name(t["key"])}="{VAR_SAMPLE_PREFIX}tag"'
                for t in t2m.get("tags", [])
            )
            for q in t2m.get("queries", []):
                raw = q["query"]
                expr = interpolate(raw, {"__tags": tags})
                out.append(
                    Query(
                        "promql", raw, expr, f"datasource {ds['uid']} tracesToMetrics {q['name']!r}"
                    )
                )
    return out


def alert_files() -> list[Path]:
    return sorted(ALERTS_DIR.glob("*.yaml"))


def alert_rules() -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """(file, group, rule) of every provisioned alert rule."""
    return [
        (path, group, rule)
        for path in alert_files()
        for group in unescape_provisioning(load_yaml(path)).get("groups", [])
        for rule in group.get("rules", [])
    ]


def alert_queries() -> list[Query]:
    """The datasource queries of the provisioned alert rules (their expressions are not)."""
    types = datasource_types()
    out: list[Query] = []
    for path, _group, rule in alert_rules():
        for item in rule["data"]:
            uid = item["datasourceUid"]
            if uid == "__expr__":
                continue
            where = f"alerts {path.name} rule {rule['uid']} {item['refId']}"
            assert uid in types, f"{where}: unknown datasource {uid!r}"
            raw = item["model"]["expr"]
            out.append(Query(DS_LANG[types[uid]], raw, interpolate(raw), where))
    return out


def all_queries() -> tuple[list[Query], list[TraceIdLookup]]:
    queries = link_queries() + alert_queries()
    lookups: list[TraceIdLookup] = []
    for path in dashboard_files():
        q, lk = dashboard_queries(path)
        queries.extend(q)
        lookups.extend(lk)
    return queries, lookups


# =============================================================================================
# Parsing
# =============================================================================================


@dataclass(frozen=True)
class Node:
    type: str
    start: int
    end: int
    parent: int


@dataclass(frozen=True)
class LezerResult:
    ok: bool
    errors: tuple[str, ...]
    top: str
    nodes: tuple[Node, ...]


def node_binary() -> str:
    found = shutil.which("node")
    assert found, "node is needed to run the LogQL/TraceQL grammars (see .ci/run)"
    return found


def lezer_parse(requests: Sequence[tuple[Lang, str]]) -> list[LezerResult]:
    return list(_lezer_parse_cached(tuple(requests)))


@functools.cache
def _lezer_parse_cached(requests: tuple[tuple[Lang, str], ...]) -> tuple[LezerResult, ...]:
    missing = [
        pkg
        for pkg in ("@grafana/lezer-logql", "@grafana/lezer-traceql", "@prometheus-io/lezer-promql")
        if not (JS_DIR / "node_modules" / pkg / "package.json").is_file()
    ]
    assert not missing, f"{missing} not installed: run `npm ci --prefix {JS_DIR}`"
    payload = json.dumps([{"lang": lang, "query": q} for lang, q in requests])
    proc = subprocess.run(
        [node_binary(), str(JS_DIR / "parse_queries.mjs")],
        input=payload,
        capture_output=True,
        text=True,
        cwd=JS_DIR,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == len(requests)
    return tuple(
        LezerResult(
            ok=r["ok"],
            errors=tuple(e["near"] for e in r["errors"]),
            top=r["top"],
            nodes=tuple(Node(n["type"], n["from"], n["to"], n["parent"]) for n in r["nodes"]),
        )
        for r in results
    )


# =============================================================================================
# The names a query uses
# =============================================================================================

Backend = Literal["prometheus", "loki", "tempo"]
UseKind = Literal[
    "metric",  # a Prometheus series name
    "label",  # a Prometheus label / a Loki label of any kind
    "stream_label",  # a Loki index label (only these may appear in a stream selector)
    "exemplar_label",  # a Prometheus exemplar label
    "span_attribute",
    "resource_attribute",
    "attribute",  # TraceQL unscoped: span or resource
]


@dataclass(frozen=True)
class NameUse:
    backend: Backend
    kind: UseKind
    name: str
    where: str
    # The series/records the name must appear on: metric names (Prometheus) and literal
    # equality matchers in effect where the name is used (e.g. event_name="helmet.response").
    metrics: frozenset[str] = frozenset()
    equals: tuple[tuple[str, str], ...] = ()


def _is_literal(value: str) -> bool:
    return VAR_SAMPLE_PREFIX not in value


def _legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


def promql_names(query: Query) -> list[NameUse]:
    expr = promql_parser.parse(query.expr)
    uses: list[NameUse] = []

    def selector_metric(node: Any) -> str:
        if node.name:
            return str(node.name)
        for m in node.matchers.matchers:
            if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal:
                return str(m.value)
        raise AssertionError(f"{query.where}: a selector without a metric name: {query.raw}")

    def metrics_under(node: Any) -> frozenset[str]:
        found: set[str] = set()

        def visit(n: Any) -> None:
            if isinstance(n, promql_parser.VectorSelector):
                found.add(selector_metric(n))

        promql_parser.walk(node, pre_visit=visit)
        return frozenset(found)

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            metric = selector_metric(node)
            uses.append(NameUse("prometheus", "metric", metric, query.where))
            matchers = list(node.matchers.matchers)
            for group in node.matchers.or_matchers:
                matchers.extend(group)
            equals = tuple(
                sorted(
                    (m.name, str(m.value))
                    for m in matchers
                    if m.op == promql_parser.MatchOp.Equal
                    and m.name != "__name__"
                    and _is_literal(str(m.value))
                    and str(m.value) != ""
                )
            )
            for m in matchers:
                if m.name == "__name__":
                    continue
                uses.append(
                    NameUse("prometheus", "label", m.name, query.where, frozenset({metric}), equals)
                )
        elif isinstance(node, promql_parser.AggregateExpr):
            if node.modifier is not None:
                metrics = metrics_under(node.expr)
                for label in node.modifier.labels:
                    uses.append(NameUse("prometheus", "label", label, query.where, metrics))
        elif isinstance(node, promql_parser.BinaryExpr):
            modifier = node.modifier
            if modifier is not None:
                metrics = metrics_under(node)
                labels = list(modifier.matching.labels) if modifier.matching else []
                labels += list(modifier.group_labels or [])
                for label in labels:
                    uses.append(NameUse("prometheus", "label", label, query.where, metrics))

    promql_parser.walk(expr, pre_visit=visit)
    all_metrics = frozenset(u.name for u in uses if u.kind == "metric")
    for label in _legend_labels(query.legend):
        uses.append(NameUse("prometheus", "label", label, query.where, all_metrics))
    return uses


def _ancestors(nodes: Sequence[Node], index: int) -> Iterator[Node]:
    parent = nodes[index].parent
    while parent >= 0:
        yield nodes[parent]
        parent = nodes[parent].parent


def logql_names(query: Query, parsed: LezerResult) -> list[NameUse]:
    text = query.expr
    nodes = parsed.nodes
    equals: list[tuple[str, str]] = []
    idents: list[tuple[str, bool]] = []
    for i, node in enumerate(nodes):
        if node.type == "Matcher":
            kids = [n for n in nodes if n.parent == i]
            if [k.type for k in kids] == ["Identifier", "Eq", "String"]:
                value = (
                    json.loads(text[kids[2].start : kids[2].end])
                    if text[kids[2].start] == '"'
                    else text[kids[2].start + 1 : kids[2].end - 1]
                )
                if _is_literal(value) and value:
                    equals.append((text[kids[0].start : kids[0].end], value))
        if node.type == "Identifier":
            in_selector = any(a.type == "Selector" for a in _ancestors(nodes, i))
            idents.append((text[node.start : node.end], in_selector))
        if node.type in (
            "LabelFormatExpr",
            "JsonExpressionParser",
            "LabelExtractionExpression",
            "LineFormatExpr",
        ):
            raise AssertionError(
                f"{query.where}: label-creating stages are not modelled: {query.raw}"
            )
    eq = tuple(sorted(set(equals)))
    uses = [
        NameUse("loki", "stream_label" if in_selector else "label", name, query.where, equals=eq)
        for name, in_selector in idents
    ]
    uses += [
        NameUse("loki", "label", label, query.where, equals=eq)
        for label in _legend_labels(query.legend)
    ]
    return uses


_TRACEQL_SCOPES: dict[str, UseKind] = {"Span": "span_attribute", "Resource": "resource_attribute"}


def traceql_names(query: Query, parsed: LezerResult) -> list[NameUse]:
    text = query.expr
    nodes = parsed.nodes
    uses: list[NameUse] = []
    for i, node in enumerate(nodes):
        if node.type != "AttributeField":
            continue
        kids = [n for n in nodes if n.parent == i]
        ident = [k for k in kids if k.type == "Identifier"]
        assert len(ident) == 1, f"{query.where}: odd attribute field in {query.raw}"
        scopes = [k.type for k in kids if k.type != "Identifier"]
        if not scopes:
            kind: UseKind = "attribute"
        else:
            assert scopes[0] in _TRACEQL_SCOPES, f"{query.where}: scope {scopes[0]} not modelled"
            kind = _TRACEQL_SCOPES[scopes[0]]
        name = text[ident[0].start : ident[0].end].lstrip(".")
        uses.append(NameUse("tempo", kind, name, query.where))
    return uses


def names_used(queries: Sequence[Query]) -> list[NameUse]:
    """Every name the given queries use, found by parsing them."""
    lezer_requests = [(q.lang, q.expr) for q in queries if q.lang in ("logql", "traceql")]
    parsed = iter(lezer_parse(lezer_requests))
    uses: list[NameUse] = []
    for q in queries:
        if q.lang == "promql":
            uses.extend(promql_names(q))
        elif q.lang == "logql":
            result = next(parsed)
            assert result.ok, f"{q.where}: LogQL does not parse: {result.errors}"
            uses.extend(logql_names(q, result))
        else:
            result = next(parsed)
            assert result.ok, f"{q.where}: TraceQL does not parse: {result.errors}"
            uses.extend(traceql_names(q, result))
    return uses


def datasource_link_names() -> list[NameUse]:
    """Names the datasource links use outside queries (tag maps, derived fields, exemplars)."""
    uses: list[NameUse] = []
    for ds in datasources():
        where = f"datasource {ds['uid']}"
        json_data = ds.get("jsonData", {})
        for key in ("tracesToLogsV2", "tracesToMetrics"):
            for tag in json_data.get(key, {}).get("tags", []):
                uses.append(NameUse("tempo", "attribute", tag["key"], f"{where} {key} tag"))
                mapped = tag.get("value") or label_name(tag["key"])
                if key == "tracesToLogsV2":
                    uses.append(NameUse("loki", "stream_label", mapped, f"{where} {key} tag"))
                else:
                    uses.append(NameUse("prometheus", "label", mapped, f"{where} {key} tag"))
        for derived in json_data.get("derivedFields", []):
            if derived.get("matcherType") == "label":
                uses.append(
                    NameUse("loki", "label", derived["matcherRegex"], f"{where} derivedFields")
                )
        for dest in json_data.get("exemplarTraceIdDestinations", []):
            uses.append(NameUse("prometheus", "exemplar_label", dest["name"], f"{where} exemplars"))
    return uses


def all_name_uses() -> list[NameUse]:
    queries, _ = all_queries()
    return names_used(queries) + datasource_link_names()


# --- checking uses against what was produced -------------------------------------------------


def _matches(labels: Mapping[str, str], equals: Sequence[tuple[str, str]]) -> bool:
    return all(labels.get(k) == v for k, v in equals)


def is_produced(use: NameUse, produced: Produced) -> bool:
    if use.backend == "prometheus":
        if use.kind == "metric":
            return use.name in produced.prom_series
        if use.kind == "exemplar_label":
            return use.name in produced.prom_exemplar_labels
        metrics = use.metrics or frozenset(produced.prom_series)
        return any(
            use.name in labels and _matches(labels, use.equals)
            for metric in metrics
            for labels in produced.prom_series.get(metric, [])
        )
    if use.backend == "loki":
        for stream, sm in produced.loki_records:
            merged = {**sm, **stream}
            if not _matches(merged, use.equals):
                continue
            if use.kind == "stream_label" and use.name in stream:
                return True
            if use.kind == "label" and use.name in merged:
                return True
        return False
    if use.kind == "span_attribute":
        return any(use.name in attrs for attrs in produced.span_attributes)
    if use.kind == "resource_attribute":
        return any(use.name in attrs for attrs in produced.resource_attributes)
    return any(use.name in attrs for attrs in produced.span_attributes) or any(
        use.name in attrs for attrs in produced.resource_attributes
    )


# =============================================================================================
# helmet's instruments and names (kinds and units are not in semconv.py, only the names)
# =============================================================================================

INSTRUMENTS: dict[str, tuple[str, MetricKind]] = {
    sc.METRIC_SERVER_OPERATION_DURATION: ("s", "histogram"),
    sc.METRIC_CLIENT_OPERATION_DURATION: ("s", "histogram"),
    sc.METRIC_SERVER_SESSION_DURATION: ("s", "histogram"),
    sc.METRIC_SESSIONS_ACTIVE: ("{session}", "updown"),
    sc.METRIC_MESSAGES: ("{message}", "counter"),
    sc.METRIC_MESSAGE_SIZE: ("By", "histogram"),
    sc.METRIC_ERRORS: ("{error}", "counter"),
    sc.METRIC_POLICY_DECISIONS: ("{decision}", "counter"),
    sc.METRIC_TELEMETRY_DROPPED: ("{record}", "counter"),
    sc.METRIC_SECURITY_EVENTS: ("{event}", "counter"),
    sc.METRIC_PROCESS_CPU_TIME: ("s", "counter"),
    sc.METRIC_PROCESS_MEMORY_USAGE: ("By", "updown"),
    sc.METRIC_PROCESS_THREAD_COUNT: ("{thread}", "updown"),
    sc.METRIC_PROCESS_FD_COUNT: ("{file_descriptor}", "updown"),
}


def semconv_attribute_names() -> set[str]:
    """Every dotted name semconv.py defines (attributes, plus event and metric names)."""
    return {
        value
        for key, value in vars(sc).items()
        if key.isupper() and isinstance(value, str) and "." in value
    }


def expected_prometheus_series() -> dict[str, str]:
    """Prometheus series name -> the helmet instrument it comes from."""
    return {
        series: name
        for name, (unit, kind) in INSTRUMENTS.items()
        for series in prometheus_series_names(name, unit, kind)
    }
