"""Issue 13: the viewer a person debugging an agent needs (servers, calls, show, fitted
tables, pager, filters that say what they did, less noise). Subprocess runs over stores fed
through the real OTel SDK (``tests.store.scenario``)."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helmet_otel import semconv as sc
from tests.store.conftest import cli_argv, cli_env, run_cli
from tests.store.scenario import MS, Rec, everything_session, write_store

BASE = 1_795_000_000_000_000_000


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two servers behind one client: everything (two sessions) and GitHub (one, newest)."""
    path = tmp_path_factory.mktemp("two") / "store.db"
    sessions = [
        everything_session("s-every-1", base_ns=BASE),
        everything_session("s-every-2", base_ns=BASE + 10 * 10**9),
        everything_session("g-hub-1", base_ns=BASE + 20 * 10**9, service="GitHub"),
    ]
    write_store(path, sessions, max_bytes=0, max_age_s=0).close()
    return path


def _cli(store: Path, *args: str, **env: str) -> tuple[int, str, str]:
    r = run_cli(*args, "--store", str(store), **env)
    return r.code, r.out, r.err


def test_server_dimension_on_every_command(two_servers: Path) -> None:
    code, out, _ = _cli(two_servers, "logs", "--server", "git*", "--format", "ndjson")
    assert code == 0
    assert {json.loads(x)["service"] for x in out.splitlines()} == {"GitHub"}
    code, out, _ = _cli(two_servers, "logs", "--server", "EVERYTHING", "-e", "request")
    assert out.splitlines()[0].split()[:4] == ["ID", "TIME", "SERVER", "SESSION"]
    assert {line.split()[3] for line in out.splitlines()[1:]} == {"everything"}
    _, out, _ = _cli(two_servers, "sessions", "--server", "every*", "--format", "json")
    # newest first
    assert [s["session_id"] for s in json.loads(out)] == ["s-every-2", "s-every-1"]
    _, out, _ = _cli(two_servers, "stats", "--server", "github", "--format", "json")
    assert sum(r["calls"] for r in json.loads(out)["rows"]) == 4
    # last names the newest session, of the server when --server says
    _, out, _ = _cli(two_servers, "trace", "last", "--server", "every*", "--format", "json")
    assert json.loads(out)["session_id"] == "s-every-2"
    _, out, _ = _cli(two_servers, "logs", "-s", "last~1", "--format", "ndjson")
    assert {json.loads(x)["session_id"] for x in out.splitlines()} == {"s-every-2"}
    _, out, _ = _cli(two_servers, "stats", "--session", "last", "--format", "json")
    assert sum(r["calls"] for r in json.loads(out)["rows"]) == 4


def test_calls_join_request_and_answer(two_servers: Path) -> None:
    code, out, err = _cli(two_servers, "logs", "--calls", "-s", "s-every-1", "--format", "json")
    assert (code, err) == (0, "")
    calls = json.loads(out)
    assert [
        (c["request_id"], c["method"], c["target"], c["status"], c["latency_ms"], c["error"])
        for c in calls
    ] == [
        ("0", "initialize", None, "ok", 2.5, None),
        ("1", "tools/call", "search", "ok", 120.5, None),
        ("2", "tools/call", "broken", "error", 3.25, "boom"),
        ("3", "prompts/get", "greet", "error", 1.0, "Unknown prompt: greet"),
    ]
    assert calls[1]["arguments"] == {"query": "weather in Paris", "api_key": "[REDACTED:api_key]"}
    assert calls[1]["request"]["event"] == sc.EVENT_REQUEST
    assert calls[1]["response"]["span_id"] == "2000000000000001"
    # --errors: the failed calls, each with its error and the arguments that caused it
    _, out, _ = _cli(two_servers, "logs", "--calls", "--errors", "-s", "s-every-1")
    lines = out.splitlines()
    assert lines[0].split() == [
        "TIME", "SERVER", "SESSION", "RPC", "METHOD", "/", "TOOL", "LATENCY", "STATUS",
        "ERROR", "ARGUMENTS",
    ]  # fmt: skip
    assert [x.strip() for x in lines[2:4]] == ["error: boom", "arguments: {}"]
    assert [x.strip() for x in lines[5:7]] == [
        "error: Unknown prompt: greet",
        'arguments: {"who":"world"}',
    ]


def test_an_unanswered_call_is_pending_while_the_session_runs(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    live = everything_session(
        "s-live", base_ns=time.time_ns() - 5 * 10**9, pid=1, host=socket.gethostname(),
        end=False,
    )  # fmt: skip
    live.records.append(
        Rec(
            live.records[-1].ts + MS,
            sc.EVENT_REQUEST,
            {
                sc.HELMET_SESSION_ID: "s-live",
                sc.HELMET_DIRECTION: sc.DIRECTION_C2S,
                sc.HELMET_MESSAGE_KIND: "request",
                sc.MCP_METHOD_NAME: "tools/call",
                sc.GEN_AI_TOOL_NAME: "slow",
                sc.JSONRPC_REQUEST_ID: "9",
            },
            {"name": "slow", "arguments": {"seconds": 60}},
        )
    )
    write_store(store, [live], max_bytes=0, max_age_s=0).close()
    _, out, _ = _cli(store, "logs", "--calls", "--format", "json", "-t", "slow")
    assert [(c["request_id"], c["status"], c["response"]) for c in json.loads(out)] == [
        ("9", "pending", None)
    ]
    _, out, _ = _cli(store, "logs", "--calls", "-t", "slow")
    assert "pending " in out.splitlines()[1]
    _, out, _ = _cli(store, "sessions", "--active", "--format", "json")
    [session] = json.loads(out)
    assert [(p["request_id"], p["method"], p["target"]) for p in session["pending"]] == [
        ("9", "tools/call", "slow")
    ]
    assert 4000 < session["pending"][0]["age_ms"] < 600_000
    _, out, _ = _cli(store, "sessions", "--active")
    assert "pending  id 9  tools/call slow" in out
    _, out, _ = _cli(store, "trace", "last", "--format", "json")
    assert [(p["name"], p["status"]) for p in json.loads(out)["pending"]] == [
        ("tools/call slow", "OPEN")
    ]


def test_show_prints_a_record_and_its_answer(two_servers: Path) -> None:
    _, out, _ = _cli(two_servers, "logs", "-s", "s-every-1", "-t", "search", "-e", "request")
    record_id = out.splitlines()[1].split()[0]
    code, out, _ = _cli(two_servers, "show", record_id, "--format", "json")
    doc = json.loads(out)
    assert code == 0
    assert doc["record"]["body"]["arguments"]["query"] == "weather in Paris"
    assert doc["related"]["event"] == sc.EVENT_RESPONSE
    assert doc["related"]["id"] == int(record_id) + 1
    # a span id from an export or a trace names the call
    code, out, _ = _cli(two_servers, "show", "2000000000000001")
    assert code == 0
    assert "--- the response ---" in out
    assert '      "text": "Sunny, 21°C\\nlight wind"' in out  # pretty-printed body
    assert _cli(two_servers, "show", "999999")[0] == 1
    assert _cli(two_servers, "show", "nope")[0] == 2


@pytest.mark.parametrize(
    "args",
    [
        ("logs",),
        ("logs", "--calls"),
        ("logs", "--calls", "--errors"),
        ("sessions",),
        ("stats",),
        ("stats", "--by", "tool"),
    ],
)
def test_tables_fit_80_columns(two_servers: Path, args: tuple[str, ...]) -> None:
    code, out, _ = _cli(two_servers, *args, COLUMNS="80")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    wide = _cli(two_servers, *args, "--wide", COLUMNS="80")[1]
    assert max(len(line) for line in wide.splitlines()) > 80 or args[0] == "sessions"


def test_filters_are_globs_any_case_and_say_when_nothing_matches(two_servers: Path) -> None:
    _, out, _ = _cli(two_servers, "logs", "-t", "SEARCH", "--format", "ndjson")
    assert len(out.splitlines()) == 6  # request and response in each of three sessions
    _, out, _ = _cli(two_servers, "logs", "-m", "Tools/*", "--format", "ndjson")
    assert {json.loads(x)["attributes"]["mcp.method.name"] for x in out.splitlines()} == {
        "tools/call"
    }
    code, out, err = _cli(two_servers, "logs", "-t", "serch")
    assert (code, err) == (0, "helmet-otel: no records match: no tool matches 'serch' "
                              "(did you mean: search?)\n")  # fmt: skip
    code, _, err = _cli(two_servers, "logs", "--server", "githb")
    assert "no server matches 'githb' (did you mean: GitHub?)" in err
    code, _, err = _cli(two_servers, "logs", "--since", "2026-11-19", "--until", "2026-11-18")
    assert code == 2 and "is not before --until" in err
    code, _, err = _cli(two_servers, "logs", "-s", "")
    assert code == 2 and "--session needs a session id" in err


def test_regex_finds_and_highlights(two_servers: Path) -> None:
    _, out, _ = _cli(two_servers, "logs", "--regex", r"Sunny, \d+", "--format", "ndjson")
    assert len(out.splitlines()) == 3
    _, out, _ = _cli(two_servers, "logs", "--regex", r"Sunny, \d+", "--color", "always")
    assert "\x1b[7mSunny, 21\x1b[27m" in out
    _, out, _ = _cli(two_servers, "logs", "--grep", "cache miss", "--color", "always")
    assert "\x1b[7mcache\x1b[27m \x1b[7mmiss\x1b[27m" in out
    assert _cli(two_servers, "logs", "--regex", "(")[0] == 2


def test_bookkeeping_events_only_with_all_or_event(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    session = everything_session("s-noise")
    session.records.append(
        Rec(BASE + 5 * MS, sc.EVENT_PERFORMANCE, {sc.HELMET_SESSION_ID: "s-noise"}, {"x": 1})
    )
    write_store(store, [session], max_bytes=0, max_age_s=0).close()
    table = _cli(store, "logs")[1]
    assert "performance" not in table
    assert "performance" in _cli(store, "logs", "--all")[1]
    assert "performance" in _cli(store, "logs", "-e", "performance")[1]
    assert len(_cli(store, "logs", "--format", "ndjson")[1].splitlines()) == 14


def test_sigterm_after_closing_stdin_is_a_normal_end(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    sessions = []
    for sid, status, reason in (
        ("s-a", 143, "client closed the connection"),
        ("s-b", 3, "MCP server exited with status 3"),
        ("s-c", 137, "MCP server was killed by SIGKILL"),
        ("s-d", 127, "MCP server could not be started: command not found: nope"),
    ):
        s = everything_session(sid, base_ns=BASE + len(sessions) * 10**9)
        end = s.records[-1]
        end.attrs[sc.HELMET_EXIT_STATUS] = status
        end.attrs[sc.HELMET_EXIT_REASON] = reason
        sessions.append(s)
    write_store(store, sessions, max_bytes=0, max_age_s=0).close()
    _, out, _ = _cli(store, "sessions", "--format", "json")
    assert [(s["session_id"], s["status"], s["exit"]) for s in json.loads(out)] == [
        ("s-d", "failed", "command not found"),
        ("s-c", "failed", "SIGKILL"),
        ("s-b", "failed", "exit 3"),
        ("s-a", "ended", "client closed"),
    ]
    _, out, _ = _cli(store, "sessions", "--status", "failed", "--limit", "2", "--format", "json")
    assert [s["session_id"] for s in json.loads(out)] == ["s-d", "s-c"]


def test_exports_are_private(two_servers: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.ndjson"
    assert _cli(two_servers, "logs", "--format", "ndjson", "-o", str(target))[0] == 0
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_table_on_a_terminal_goes_through_the_pager(two_servers: Path, tmp_path: Path) -> None:
    paged = tmp_path / "paged.txt"
    env = cli_env(PAGER=f"cat > {paged}", COLUMNS="120")

    def run_on_a_terminal(*args: str) -> None:
        main, child = pty.openpty()
        proc = subprocess.Popen(
            cli_argv(*args, "--store", str(two_servers)),
            stdout=child,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        os.close(child)
        with_output = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            with_output += chunk
        os.close(main)
        assert proc.wait(timeout=30) == 0

    run_on_a_terminal("stats", "--color", "never")
    assert paged.read_text().startswith("METHOD")
    paged.unlink()
    run_on_a_terminal("stats", "--color", "never", "--no-pager")
    assert not paged.exists()
    assert sys.platform.startswith("linux")
