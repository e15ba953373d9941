"""`helmet-otel sessions / stats / trace` run as subprocesses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from opentelemetry.trace import SpanKind

from helmet_otel import semconv as sc
from tests.store.conftest import Cli, run_cli
from tests.store.scenario import (
    BASE_NS,
    MS,
    Rec,
    Session,
    Sp,
    everything_session,
    write_store,
)

SESSIONS_TABLE = """\
SESSION            SERVER      CLIENT             START                    DURATION  REQS  ERRS  STATUS  EXIT
s-everything-0001  everything  claude-code 2.1.0  2026-11-18 11:06:40.000    1.50 s     4     2  ended   client closed
"""

STATS_TABLE = """\
METHOD       CALLS  ERRORS    ERR%     P50       P95       P99       MAX  BYTES
tools/call       2       1   50.0%  3.2 ms  120.5 ms  120.5 ms  120.5 ms  606 B
initialize       1       0    0.0%  2.5 ms    2.5 ms    2.5 ms    2.5 ms  300 B
prompts/get      1       1  100.0%  1.0 ms    1.0 ms    1.0 ms    1.0 ms  306 B

MOST FREQUENT ERRORS
COUNT  METHOD       ERROR       SAMPLE MESSAGE
    1  prompts/get  -32602      Unknown prompt: greet
    1  tools/call   tool_error  boom
"""

STATS_BY_TOOL_CSV = """\
method,tool,calls,errors,error_rate,p50_ms,p95_ms,p99_ms,max_ms,bytes
tools/call,search,1,0,0.0,120.5,120.5,120.5,120.5,302
tools/call,broken,1,1,1.0,3.25,3.25,3.25,3.25,304
prompts/get,greet,1,1,1.0,1.0,1.0,1.0,1.0,306
"""

TRACE_TABLE = """\
trace 0af7651916cd43dd8448eb211c80319c  segment 0  session s-everything-0001
session                  INTERNAL     1.50 s  UNSET
├─ initialize            SERVER       2.5 ms  UNSET
│  └─ initialize         CLIENT       2.3 ms  UNSET
├─ tools/call search     SERVER     120.5 ms  UNSET
│  └─ tools/call search  CLIENT     120.3 ms  UNSET
├─ tools/call broken     SERVER       3.2 ms  ERROR: tool_error
│  └─ tools/call broken  CLIENT       3.0 ms  ERROR: tool_error
└─ prompts/get greet     SERVER       1.0 ms  ERROR: -32602
   └─ prompts/get greet  CLIENT      0.80 ms  ERROR: -32602
"""


def test_sessions_table_json_csv(cli: Cli) -> None:
    table = cli("sessions", "--utc")
    assert (table.code, table.out, table.err) == (0, SESSIONS_TABLE, "")
    [rec] = json.loads(cli("sessions", "--format", "json").out)
    assert rec == {
        "session_id": "s-everything-0001",
        "status": "ended",
        "service": "everything",
        "server_name": "everything",
        "server_command": "python server.py",
        "server_info_name": "everything-server",
        "server_version": "1.4.0",
        "client_name": "claude-code",
        "client_version": "2.1.0",
        "transport": "stdio",
        "protocol_version": "2025-11-25",
        "era": "legacy",
        "proxy_pid": 4242,
        "proxy_host": "devbox",
        "start": "2026-11-18T11:06:40.000000000Z",
        "start_unix_nano": 1795000000000000000,
        "end": "2026-11-18T11:06:41.500000000Z",
        "end_unix_nano": 1795000001500000000,
        "last_seen_unix_nano": 1795000001500000000,
        "duration_ms": 1500.0,
        "requests": 4,
        "errors": 2,
        "exit_status": 0,
        "exit_reason": "client closed stdin",
        "exit": "client closed",
        "cpu_s": None,  # no server process was sampled (tests/telemetry/test_server_usage.py)
        "peak_memory_bytes": None,
    }
    assert cli("sessions", "--format", "csv").out == (
        "session_id,status,service,client_name,client_version,start,end,duration_ms,requests,errors,exit_status,exit_reason,cpu_s,peak_memory_bytes\n"
        "s-everything-0001,ended,everything,claude-code,2.1.0,2026-11-18T11:06:40.000000000Z,"
        "2026-11-18T11:06:41.500000000Z,1500.0,4,2,0,client closed stdin,,\n"
    )
    assert cli("sessions", "--since", "2026-11-18T11:06:42Z", "--format", "ndjson").out == ""
    assert cli("sessions", "--active", "--format", "json").out == "[]\n"


def test_sessions_active_checks_the_proxy_process(store_path: Path) -> None:
    host = socket.gethostname()
    alive = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        now = time.time_ns()
        sessions = [
            everything_session("live", base_ns=now, pid=alive.pid, host=host, end=False),
            everything_session("crashed", base_ns=now + MS, pid=gone.pid, host=host, end=False),
            # a pid alive now but started long after the session began: reused, not ours
            everything_session(
                "reused", base_ns=now - 3600 * 10**9, pid=alive.pid, host=host, end=False
            ),
            everything_session(
                "elsewhere", base_ns=now + 2 * MS, pid=1, host="another-host", end=False
            ),
            everything_session("done", base_ns=now + 3 * MS, pid=alive.pid, host=host),
        ]
        write_store(store_path, sessions, max_bytes=0, max_age_s=0).close()
        r = run_cli("sessions", "--store", str(store_path), "--format", "json")
        status = {
            s["session_id"]: (s["status"], s["requests"], s["errors"]) for s in json.loads(r.out)
        }
        # live counts come from the records when there is no session_end yet
        assert status == {
            "reused": ("lost", 4, 2),
            "live": ("active", 4, 2),
            "crashed": ("lost", 4, 2),
            "elsewhere": ("active", 4, 2),
            "done": ("ended", 4, 2),
        }
        active = run_cli("sessions", "--store", str(store_path), "--active", "--format", "ndjson")
        # newest first, each with its calls still in flight (none here: all were answered)
        assert [
            (json.loads(x)["session_id"], json.loads(x)["pending"]) for x in active.out.splitlines()
        ] == [("elsewhere", []), ("live", [])]
        [live] = [s for s in json.loads(r.out) if s["session_id"] == "live"]
        assert live["client_name"] == "claude-code"  # from the initialize records
        assert live["end"] is None
    finally:
        alive.communicate(b"")


def test_stats_table_json_csv(cli: Cli) -> None:
    table = cli("stats")
    assert (table.code, table.out, table.err) == (0, STATS_TABLE, "")
    by_tool = cli("stats", "--by", "tool", "--format", "csv")
    assert by_tool.out == STATS_BY_TOOL_CSV
    doc = json.loads(cli("stats", "--format", "json", "--since", "2026-11-18T11:06:40.050Z").out)
    assert doc["since"] == "2026-11-18T11:06:40.050000000Z"
    assert [r["method"] for r in doc["rows"]] == ["tools/call", "prompts/get"]
    assert doc["errors"] == [
        {
            "method": "prompts/get",
            "error": "-32602",
            "count": 1,
            "last": "2026-11-18T11:06:40.401000000Z",
            "sample": "Unknown prompt: greet",
        },
        {
            "method": "tools/call",
            "error": "tool_error",
            "count": 1,
            "last": "2026-11-18T11:06:40.303250000Z",
            "sample": "boom",
        },
    ]
    empty = cli("stats", "--since", "1h", "--format", "csv")
    assert empty.out == "method,calls,errors,error_rate,p50_ms,p95_ms,p99_ms,max_ms,bytes\n"


def _latency_session(
    sid: str, tool: str, latencies: list[float], *, errors: int = 0, weight: int = 1
) -> Session:
    recs: list[Rec] = []
    for i, latency in enumerate(latencies):
        common: dict[str, object] = {
            sc.HELMET_SESSION_ID: sid,
            sc.MCP_METHOD_NAME: "tools/call",
            sc.GEN_AI_TOOL_NAME: tool,
            sc.JSONRPC_REQUEST_ID: str(i),
        }
        if weight > 1:
            common[sc.HELMET_SAMPLE_WEIGHT] = weight
        at = BASE_NS + i * MS
        recs.append(
            Rec(
                at,
                sc.EVENT_REQUEST,
                {**common, sc.HELMET_MESSAGE_KIND: "request", sc.HELMET_MESSAGE_SIZE: 10},
            )
        )
        failure: dict[str, object] = {sc.ERROR_TYPE: "tool_error"} if i < errors else {}
        recs.append(
            Rec(
                at + int(latency * MS),
                sc.EVENT_RESPONSE,
                {
                    **common,
                    sc.HELMET_MESSAGE_KIND: "response",
                    sc.HELMET_LATENCY_MS: latency,
                    sc.HELMET_MESSAGE_SIZE: 1000,
                    **failure,
                },
            )
        )
    return Session(sid, "svc", 1, recs, [])


def test_stats_percentiles_are_nearest_rank_and_slowest_first(store_path: Path) -> None:
    write_store(
        store_path,
        [
            _latency_session("a", "fast", [float(v) for v in range(100, 0, -1)], errors=3),
            _latency_session("b", "slow", [500.0, 700.0, 900.0, 1100.0]),
        ],
        max_bytes=0,
        max_age_s=0,
    ).close()
    rows = [
        json.loads(x)
        for x in run_cli(
            "stats", "--by", "tool", "--format", "ndjson", "--store", str(store_path)
        ).out.splitlines()
    ]
    assert rows == [
        {
            "method": "tools/call",
            "tool": "slow",
            "calls": 4,
            "errors": 0,
            "error_rate": 0.0,
            "p50_ms": 700.0,
            "p95_ms": 1100.0,
            "p99_ms": 1100.0,
            "max_ms": 1100.0,
            "bytes": 4040,
        },
        {
            "method": "tools/call",
            "tool": "fast",
            "calls": 100,
            "errors": 3,
            "error_rate": 0.03,
            "p50_ms": 50.0,
            "p95_ms": 95.0,
            "p99_ms": 99.0,
            "max_ms": 100.0,
            "bytes": 101000,
        },
    ]


def test_trace_tree(cli: Cli) -> None:
    r = cli("trace", "s-every")
    assert (r.code, r.out, r.err) == (0, TRACE_TABLE, "")
    doc = json.loads(cli("trace", "s-everything-0001", "--format", "json").out)
    [tree] = doc["traces"]
    [root] = tree["spans"]
    assert (root["name"], root["kind"], root["duration_ms"], len(root["children"])) == (
        "session",
        "INTERNAL",
        1500.0,
        4,
    )
    broken = root["children"][2]
    assert (broken["name"], broken["status"], broken["status_message"]) == (
        "tools/call broken",
        "ERROR",
        "tool_error",
    )
    assert broken["children"][0]["kind"] == "CLIENT"
    assert broken["attributes"]["gen_ai.tool.name"] == "broken"


def test_trace_segments_print_in_order(store_path: Path) -> None:
    def segment(n: int, trace_id: int, start: int) -> Session:
        root = 0x100 + n
        return Session(
            "long-session",
            "svc",
            trace_id,
            [],
            [
                Sp(
                    "session",
                    SpanKind.INTERNAL,
                    root,
                    None,
                    start,
                    start + 1000 * MS,
                    {sc.HELMET_SESSION_ID: "long-session", sc.HELMET_TRACE_SEGMENT: n},
                ),
                Sp(
                    "tools/call t",
                    SpanKind.SERVER,
                    0x200 + n,
                    root,
                    start + MS,
                    start + 2 * MS,
                    {sc.HELMET_SESSION_ID: "long-session"},
                ),
            ],
        )

    write_store(
        store_path,
        [segment(1, 0xBB, BASE_NS + 10**9), segment(0, 0xAA, BASE_NS)],
        max_bytes=0,
        max_age_s=0,
    ).close()
    r = run_cli("trace", "long", "--store", str(store_path))
    assert r.out == (
        "trace 000000000000000000000000000000aa  segment 0  session long-session\n"
        "session          INTERNAL     1.00 s  UNSET\n"
        "└─ tools/call t  SERVER       1.0 ms  UNSET\n"
        "\n"
        "trace 000000000000000000000000000000bb  segment 1  session long-session\n"
        "session          INTERNAL     1.00 s  UNSET\n"
        "└─ tools/call t  SERVER       1.0 ms  UNSET\n"
    )


def test_trace_unknown_or_ambiguous_session_exits_1(store_path: Path) -> None:
    write_store(
        store_path,
        [
            everything_session("abc-1"),
            everything_session("abc-2", trace_id=7),
            everything_session("xyz", trace_id=8, end=False),
        ],
        max_bytes=0,
        max_age_s=0,
    ).close()
    s = str(store_path)
    unknown = run_cli("trace", "nope", "--store", s)
    assert (unknown.code, unknown.out) == (1, "")
    assert unknown.err == f"helmet-otel trace: error: no session matching 'nope' in {s}\n"
    ambiguous = run_cli("trace", "abc", "--store", s)
    assert (ambiguous.code, ambiguous.out) == (1, "")
    assert (
        ambiguous.err
        == "helmet-otel trace: error: session prefix 'abc' is ambiguous: 2 sessions match (abc-1, abc-2)\n"
    )
    exact = run_cli("trace", "abc-2", "--store", s)
    assert exact.code == 0
    # a session whose root span has not ended yet: its ended children are shown as roots
    live = run_cli("trace", "xyz", "--store", s)
    assert live.code == 0
    assert live.out.splitlines()[1:3] == [
        "initialize            SERVER       2.5 ms  UNSET",
        "└─ initialize         CLIENT       2.3 ms  UNSET",
    ]
    missing_arg = run_cli("trace", "--store", s)
    assert missing_arg.code == 2
    assert "the following arguments are required: SESSION" in missing_arg.err


def test_stats_count_a_sampled_call_as_many_as_it_stands_for(store_path: Path) -> None:
    """While the proxy traced one call in 64, each stored call counts 64 times (calls, errors,
    bytes); its latency is one sample of the distribution."""
    write_store(
        store_path,
        [
            _latency_session("a", "sampled", [10.0, 20.0, 30.0], errors=1, weight=64),
            _latency_session("b", "sampled", [40.0]),
        ],
        max_bytes=0,
        max_age_s=0,
    ).close()
    out = run_cli("stats", "--by", "tool", "--format", "ndjson", "--store", str(store_path)).out
    (row,) = [json.loads(x) for x in out.splitlines()]
    assert row == {
        "method": "tools/call",
        "tool": "sampled",
        "calls": 3 * 64 + 1,
        "errors": 64,
        "error_rate": round(64 / 193, 6),
        "p50_ms": 20.0,
        "p95_ms": 40.0,
        "p99_ms": 40.0,
        "max_ms": 40.0,
        "bytes": (3 * 64 + 1) * 1010,
    }
