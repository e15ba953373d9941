"""The viewer tables stay one line per row whatever the wire put in names and messages:
newlines and terminal escapes are shown as visible escapes."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.trace import SpanKind

from helmet_otel import semconv as sc
from helmet_otel.cli.render import printable
from tests.store.conftest import run_cli
from tests.store.scenario import BASE_NS, MS, Rec, Session, Sp, write_store

MESSAGE = "upstream failed:\nTraceback (most recent call last)\r\n  boom\t\x1b[31mred"


def test_printable_escapes_control_characters_only() -> None:
    assert printable("plain café ✓") == "plain café ✓"
    assert printable(MESSAGE) == (
        "upstream failed:\\nTraceback (most recent call last)\\r\\n  boom\\t\\x1b[31mred"
    )
    assert printable("\x00\x7f\x85") == "\\x00\\x7f\\x85"


def _session(tmp_path: Path) -> Path:
    store_path = tmp_path / "store.db"
    sid: dict[str, object] = {sc.HELMET_SESSION_ID: "s-multi"}
    root, call, inner = 0x100, 0x200, 0x300
    write_store(
        store_path,
        [
            Session(
                "s-multi",
                "svc",
                0xCC,
                [
                    Rec(
                        BASE_NS + 5 * MS,
                        sc.EVENT_REQUEST,
                        {
                            **sid,
                            sc.MCP_METHOD_NAME: "tools/call",
                            sc.GEN_AI_TOOL_NAME: "evil\ntool",
                            sc.HELMET_DIRECTION: sc.DIRECTION_C2S,
                            sc.HELMET_MESSAGE_KIND: "request",
                        },
                        "line one\x1b[2Jline two",
                    )
                ],
                [
                    Sp("session", SpanKind.INTERNAL, root, None, BASE_NS, BASE_NS + 10 * MS, sid),
                    Sp(
                        "tools/call evil\ntool",
                        SpanKind.SERVER,
                        call,
                        root,
                        BASE_NS + MS,
                        BASE_NS + 3 * MS,
                        sid,
                        error=MESSAGE,
                    ),
                    Sp(
                        "tools/call evil\ntool",
                        SpanKind.CLIENT,
                        inner,
                        call,
                        BASE_NS + MS,
                        BASE_NS + 2 * MS,
                        sid,
                        error="a\nb",
                    ),
                ],
            )
        ],
        max_bytes=0,
        max_age_s=0,
    ).close()
    return store_path


def test_trace_renders_a_multi_line_status_on_one_line(tmp_path: Path) -> None:
    store_path = _session(tmp_path)
    r = run_cli("trace", "s-multi", "--store", str(store_path))
    assert (r.code, r.err) == (0, "")
    assert r.out == (
        "trace 000000000000000000000000000000cc  session s-multi\n"
        "session                      INTERNAL    10.0 ms  UNSET\n"
        "└─ tools/call evil\\ntool     SERVER       2.0 ms  ERROR: upstream failed:\\n"
        "Traceback (most recent call last)\\r\\n  boom\\t\\x1b[31mred\n"
        "   └─ tools/call evil\\ntool  CLIENT       1.0 ms  ERROR: a\\nb\n"
    )
    # json keeps the message exactly
    doc = json.loads(
        run_cli("trace", "s-multi", "--format", "json", "--store", str(store_path)).out
    )
    [server] = doc["traces"][0]["spans"][0]["children"]
    assert (server["name"], server["status_message"]) == ("tools/call evil\ntool", MESSAGE)


def test_logs_table_never_prints_a_raw_control_character(tmp_path: Path) -> None:
    store_path = _session(tmp_path)
    r = run_cli("logs", "--utc", "--store", str(store_path))
    assert (r.code, r.err) == (0, "")
    assert r.out.splitlines()[1:] == [
        "1   2026-11-18 11:06:40.005  svc     s-multi  request  ->        tools/call evil\\ntool"
        + " " * 19
        + "line one\\x1b[2Jline two"
    ]
