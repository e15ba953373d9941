"""`helmet-otel logs` run as a subprocess over a store fed through the real OTel SDK."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.store.conftest import Cli, run_cli
from tests.store.scenario import MARKER, everything_session, write_store

TABLE = """\
ID  TIME                     SERVER      SESSION   EVENT          DIR  RPC  METHOD / TOOL               LATENCY  STATUS      BODY
1   2026-11-18 11:06:40.000  everything  s-everyt  session_start
2   2026-11-18 11:06:40.010  everything  s-everyt  request        ->   0    initialize                                       {"protocolVersion":"2025-11-25","c…
3   2026-11-18 11:06:40.012  everything  s-everyt  response       <-   0    initialize                   2.5 ms  ok          {"protocolVersion":"2025-11-25","s…
4   2026-11-18 11:06:40.015  everything  s-everyt  notification   ->        notifications/initialized
5   2026-11-18 11:06:40.100  everything  s-everyt  request        ->   1    tools/call search                                {"name":"search","arguments":{"que…
6   2026-11-18 11:06:40.220  everything  s-everyt  response       <-   1    tools/call search          120.5 ms  ok          {"content":[{"type":"text","text":…
7   2026-11-18 11:06:40.300  everything  s-everyt  request        ->   2    tools/call broken                                {"name":"broken","arguments":{}}
8   2026-11-18 11:06:40.303  everything  s-everyt  response       <-   2    tools/call broken            3.2 ms  tool_error  {"content":[{"type":"text","text":…
9   2026-11-18 11:06:40.310  everything  s-everyt  server_stderr                                                             warning: cache miss for key=42
10  2026-11-18 11:06:40.400  everything  s-everyt  request        ->   3    prompts/get greet                                {"name":"greet","arguments":{"who"…
11  2026-11-18 11:06:40.401  everything  s-everyt  response       <-   3    prompts/get greet            1.0 ms  -32602      {"code":-32602,"message":"Unknown …
12  2026-11-18 11:06:40.401  everything  s-everyt  error          <-   3    prompts/get greet            1.0 ms  -32602      {"code":-32602,"message":"Unknown …
13  2026-11-18 11:06:41.500  everything  s-everyt  session_end
"""

SEARCH_NDJSON = (
    '{"time":"2026-11-18T11:06:40.100000000Z","time_unix_nano":1795000000100000000,'
    '"event":"helmet.request","session_id":"s-everything-0001","service":"everything",'
    '"severity_text":"INFO","severity_number":9,"trace_id":"0af7651916cd43dd8448eb211c80319c",'
    '"span_id":"2000000000000001","attributes":{"gen_ai.tool.name":"search",'
    '"helmet.direction":"client->server","helmet.message.kind":"request",'
    '"helmet.message.size":101,"helmet.session.id":"s-everything-0001",'
    '"jsonrpc.request.id":"1","mcp.method.name":"tools/call"},'
    '"body":{"name":"search","arguments":{"query":"weather in Paris","api_key":"[REDACTED:api_key]"}}}\n'
    '{"time":"2026-11-18T11:06:40.220500000Z","time_unix_nano":1795000000220500000,'
    '"event":"helmet.response","session_id":"s-everything-0001","service":"everything",'
    '"severity_text":"INFO","severity_number":9,"trace_id":"0af7651916cd43dd8448eb211c80319c",'
    '"span_id":"2000000000000001","attributes":{"gen_ai.tool.name":"search",'
    '"helmet.direction":"server->client","helmet.latency_ms":120.5,'
    '"helmet.message.kind":"response","helmet.message.size":201,'
    '"helmet.session.id":"s-everything-0001","jsonrpc.request.id":"1",'
    '"mcp.method.name":"tools/call"},'
    '"body":{"content":[{"type":"text","text":"Sunny, 21°C\\nlight wind"}],"isError":false}}\n'
)

CSV_WINDOW = """\
time,session_id,event,direction,method,target,request_id,latency_ms,status,error,size,severity,service,trace_id,span_id,body
2026-11-18T11:06:40.300000000Z,s-everything-0001,helmet.request,client->server,tools/call,broken,2,,,,102,INFO,everything,0af7651916cd43dd8448eb211c80319c,2000000000000002,"{""name"":""broken"",""arguments"":{}}"
2026-11-18T11:06:40.303250000Z,s-everything-0001,helmet.response,server->client,tools/call,broken,2,3.25,error,tool_error,202,ERROR,everything,0af7651916cd43dd8448eb211c80319c,2000000000000002,"{""content"":[{""type"":""text"",""text"":""boom""}],""isError"":true}"
2026-11-18T11:06:40.310000000Z,s-everything-0001,helmet.server_stderr,,,,,,,,,WARN,everything,0af7651916cd43dd8448eb211c80319c,1000000000000001,warning: cache miss for key=42
2026-11-18T11:06:40.400000000Z,s-everything-0001,helmet.request,client->server,prompts/get,greet,3,,,,103,INFO,everything,0af7651916cd43dd8448eb211c80319c,2000000000000003,"{""name"":""greet"",""arguments"":{""who"":""world""}}"
"""


def test_table_is_every_record_newest_last(cli: Cli) -> None:
    r = cli("logs", "--utc")
    assert (r.code, r.err) == (0, "")
    assert r.out == TABLE


def test_table_uses_local_time_without_utc(cli: Cli) -> None:
    r = cli("logs", "--limit", "1", TZ="Asia/Kolkata")
    assert r.code == 0
    assert r.out.splitlines()[1].startswith(
        "13  2026-11-18 16:36:41.500  everything  s-everyt  session_end"
    )


def test_table_colour_only_when_asked_or_on_a_tty(cli: Cli) -> None:
    plain = cli("logs", "--limit", "1")
    assert "\x1b[" not in plain.out
    coloured = cli("logs", "--limit", "1", "--color", "always")
    assert coloured.out.startswith("\x1b[1mID  TIME")
    assert "\x1b[35msession_end" in coloured.out


def test_ndjson_is_exact_and_filtered_by_tool(cli: Cli) -> None:
    r = cli("logs", "--tool", "search", "--format", "ndjson")
    assert (r.code, r.err) == (0, "")
    assert r.out == SEARCH_NDJSON


def test_json_is_an_array_of_the_ndjson_records(cli: Cli) -> None:
    nd = cli("logs", "--format", "ndjson")
    js = cli("logs", "--format", "json")
    assert js.code == nd.code == 0
    records = json.loads(js.out)
    assert records == [json.loads(line) for line in nd.out.splitlines()]
    assert [r["event"] for r in records] == [
        "helmet.session_start",
        "helmet.request",
        "helmet.response",
        "helmet.notification",
        "helmet.request",
        "helmet.response",
        "helmet.request",
        "helmet.response",
        "helmet.server_stderr",
        "helmet.request",
        "helmet.response",
        "helmet.error",
        "helmet.session_end",
    ]
    assert records[8]["body"] == "warning: cache miss for key=42"
    assert records[8]["severity_text"] == "WARN"
    assert records[0]["attributes"]["helmet.proxy.pid"] == 4242


def test_json_of_nothing_is_an_empty_array(cli: Cli) -> None:
    r = cli("logs", "--grep", "nonexistentword", "--format", "json")
    assert (r.code, r.out) == (0, "[]\n")


def test_csv_time_window(cli: Cli) -> None:
    r = cli(
        "logs",
        "--since",
        "2026-11-18T11:06:40.300Z",
        "--until",
        "2026-11-18T11:06:40.401Z",
        "--format",
        "csv",
    )
    assert (r.code, r.err) == (0, "")
    assert r.out == CSV_WINDOW
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [row["request_id"] for row in rows] == ["2", "2", "", "3"]


def test_filters_combine(cli: Cli) -> None:
    def ids(*args: str) -> list[tuple[str, str]]:
        r = cli("logs", *args, "--format", "ndjson")
        assert r.code == 0, r.err
        out: list[tuple[str, str]] = []
        for line in r.out.splitlines():
            rec = json.loads(line)
            out.append(
                (
                    rec["event"].removeprefix("helmet."),
                    rec["attributes"].get("jsonrpc.request.id", ""),
                )
            )
        return out

    assert ids("--errors") == [("response", "2"), ("response", "3"), ("error", "3")]
    assert ids("--method", "tools/call", "--direction", "s2c") == [
        ("response", "1"),
        ("response", "2"),
    ]
    assert ids("--event", "request", "--event", "notification") == [
        ("request", "0"),
        ("notification", ""),
        ("request", "1"),
        ("request", "2"),
        ("request", "3"),
    ]
    assert ids("--event", "helmet.session_start,session_end") == [
        ("session_start", ""),
        ("session_end", ""),
    ]
    assert ids("--direction", "client->server", "--limit", "2") == [
        ("request", "2"),
        ("request", "3"),
    ]
    assert ids("--session", "s-every", "--tool", "greet", "--errors") == [
        ("response", "3"),
        ("error", "3"),
    ]
    assert ids("--since", "2026-11-18T11:06:41Z") == [("session_end", "")]


def test_grep_is_full_text_over_bodies(cli: Cli) -> None:
    def grep(text: str) -> list[str]:
        r = cli("logs", "--grep", text, "--format", "ndjson")
        assert r.code == 0, r.err
        return [json.loads(line)["time"][11:23] for line in r.out.splitlines()]

    assert grep("wind") == ["11:06:40.220"]  # a word after a "\n" escape in the JSON text
    assert grep("LIGHT WIND") == ["11:06:40.220"]
    assert grep("unknown prom") == ["11:06:40.401", "11:06:40.401"]  # prefix of the last word
    assert grep("cache miss") == ["11:06:40.310"]  # a string body (stderr)
    assert grep("REDACTED") == ["11:06:40.100"]
    assert grep("paris weather") == []  # words in order


def test_output_file_gets_exactly_stdout_bytes(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "out.ndjson"
    r = cli("logs", "--tool", "search", "--format", "ndjson", "--output", str(target))
    assert (r.code, r.out, r.err) == (0, "", "")
    assert target.read_text(encoding="utf-8") == SEARCH_NDJSON


def test_ndjson_export_reimports_byte_for_byte(
    cli: Cli, everything_store: Path, tmp_path: Path
) -> None:
    export = tmp_path / "session.ndjson"
    assert (
        cli("logs", "--session", "s-everything", "--format", "ndjson", "-o", str(export)).code == 0
    )
    other = tmp_path / "other" / "store.db"
    imported = run_cli("logs", "--import", str(export), "--store", str(other))
    assert imported.code == 0, imported.err
    assert imported.err == f"helmet-otel: imported 13 records into {other}\n"
    again = run_cli("logs", "--format", "ndjson", "--store", str(other))
    assert again.out == export.read_text(encoding="utf-8")
    sessions = run_cli("sessions", "--format", "json", "--store", str(other))
    [session] = json.loads(sessions.out)
    assert (session["client_name"], session["requests"], session["errors"], session["status"]) == (
        "claude-code",
        4,
        2,
        "ended",
    )


def test_import_rejects_what_is_not_an_export(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"time_unix_nano": 1, "attributes": {}}\n{"time": "x"}\n', encoding="utf-8")
    r = run_cli("logs", "--import", str(bad), "--store", str(tmp_path / "s.db"))
    assert r.code == 1
    assert r.err == (
        f"helmet-otel logs: error: {bad}: record 2 is not a log record ('time_unix_nano' must "
        "be an integer); --import takes what `helmet-otel logs --format ndjson|json` wrote "
        "(records, or calls with --calls) or `helmet-otel trace --format json` wrote (spans)\n"
    )
    assert not (tmp_path / "s.db").exists()


def test_default_table_limit_is_the_newest_100(store_path: Path) -> None:
    sessions = [
        everything_session(f"s-{i:03d}", base_ns=1_795_000_000_000_000_000 + i * 10**10)
        for i in range(9)
    ]
    write_store(store_path, sessions, max_bytes=0, max_age_s=0).close()  # 117 records
    table = run_cli("logs", "--store", str(store_path))
    assert len(table.out.splitlines()) == 1 + 100
    assert table.out.splitlines()[-1].split()[4] == "s-008"
    everything = run_cli("logs", "--store", str(store_path), "--format", "ndjson")
    assert len(everything.out.splitlines()) == 117
    all_rows = run_cli("logs", "--store", str(store_path), "--limit", "0")
    assert len(all_rows.out.splitlines()) == 1 + 117


def test_session_prefix_matches_several_sessions(store_path: Path) -> None:
    sessions = [
        everything_session(sid, base_ns=1_795_000_000_000_000_000 + i * 10**10)
        for i, sid in enumerate(("abc-1", "abc-2", "abd-1"))
    ]
    write_store(store_path, sessions, max_bytes=0, max_age_s=0).close()
    r = run_cli(
        "logs",
        "--store",
        str(store_path),
        "--session",
        "abc",
        "--event",
        "session_start",
        "--format",
        "ndjson",
    )
    assert [json.loads(x)["session_id"] for x in r.out.splitlines()] == ["abc-1", "abc-2"]


def test_redaction_markers_are_stored_as_given(cli: Cli) -> None:
    r = cli("logs", "--grep", "api_key", "--format", "ndjson")
    [record] = [json.loads(line) for line in r.out.splitlines()]
    assert record["body"]["arguments"]["api_key"] == MARKER


def test_bad_usage_exits_2_without_traceback(cli: Cli) -> None:
    cases = {
        ("--since", "yesterday"): "argument --since: invalid duration or timestamp: 'yesterday'",
        ("--until", "5parsecs"): "argument --until: invalid duration or timestamp: '5parsecs'",
        ("--event", "requests"): "argument -e/--event: unknown event 'requests'",
        ("--direction", "up"): "argument -d/--direction: invalid direction 'up'",
        ("--limit", "-1"): "argument -n/--limit: invalid count '-1'",
        ("--format", "xml"): "argument --format: invalid choice: 'xml'",
        ("--follow", "--until", "1h"): "--until cannot be combined with --follow",
        (
            "--follow",
            "--format",
            "json",
        ): "--format json cannot be combined with --follow (use ndjson)",
        ("--grep", "?!"): "--grep '?!' has no words to search for",
    }
    for args, message in cases.items():
        r = cli("logs", *args)
        assert r.code == 2, args
        assert r.out == ""
        assert f"helmet-otel logs: error: {message}" in r.err, r.err
        assert "Traceback" not in r.err


def test_unknown_session_and_unreadable_store_exit_1(cli: Cli, tmp_path: Path) -> None:
    r = cli("logs", "--session", "nope")
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith("helmet-otel logs: error: no session matching 'nope' in ")
    missing = run_cli("logs", "--store", str(tmp_path / "none.db"))
    assert missing.code == 1
    assert (
        missing.err
        == f"helmet-otel logs: error: no store at {tmp_path / 'none.db'} (no proxy has written to it yet)\n"
    )
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    bad = run_cli("logs", "--store", str(garbage))
    assert bad.code == 1
    assert (
        bad.err
        == f"helmet-otel logs: error: cannot read the store at {garbage}: file is not a database\n"
    )
    unwritable = cli("logs", "--output", str(tmp_path / "no" / "such" / "dir" / "x"))
    assert unwritable.code == 1
    assert "helmet-otel logs: error: cannot write " in unwritable.err


def test_store_comes_from_helmet_store_env(everything_store: Path) -> None:
    r = run_cli(
        "logs", "--format", "csv", "--event", "session_end", HELMET_STORE=str(everything_store)
    )
    assert r.code == 0
    assert r.out.splitlines()[1].startswith(
        "2026-11-18T11:06:41.500000000Z,s-everything-0001,helmet.session_end"
    )


def test_help_has_examples() -> None:
    for command in ("logs", "sessions", "stats", "trace"):
        r = run_cli(command, "--help")
        assert r.code == 0
        assert "examples:\n  helmet-otel " + command in r.out
    assert "--grep TEXT" in run_cli("logs", "--help").out
