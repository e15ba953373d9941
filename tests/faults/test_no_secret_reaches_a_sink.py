"""No secret reaches a sink: one session through the real proxy plants secrets in every place
a string from the traffic can travel to telemetry, and every byte of every sink is searched.

The sinks: the store's files as they are on disk (database, ``-wal``, ``-shm``; the full-text
index is read both raw and through ``fts5vocab``, since its terms are prefix-compressed), the
OTLP request bodies of traces, logs and metrics as the receiver got them, and the proxy's own
stderr (the lines the server wrote there are forwarded as they are: the proxy is transparent,
and those are removed before the search).

Every planted secret carries the canary ``ZQLEAK`` followed by its number and is shaped so that
the redaction rules recognise it; the canary is searched case-insensitively (the full-text
index lowercases its terms).
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tests.e2e.helpers import SERVERS_DIR, RawProcess, clean_env, describe
from tests.otlp_receiver import OTLPReceiver

CANARY = re.compile(rb"zqleak\d\d", re.IGNORECASE)
SERVER_STDERR = "db connect password=ZQLEAK10stderrpw host=db"
URI = "https://admin:ZQLEAK02urlpw@example.com/doc?api_key=ZQLEAK03query&page=2"
SECRET_ID = "ghp_ZQLEAK04idAbcdefghijklmnopqrstuv"
SECRET_TOOL = "sk-proj-ZQLEAK05toolAbcdefgh1234"
CANCEL_REASON = "user aborted; Bearer ZQLEAK06cancel1234abcd"
CLIENT_VERSION = "sk-proj-ZQLEAK09versionAbcd1234"
SECRET_METHOD = "xoxb-ZQLEAK11methodabcdef"


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _large_call() -> bytes:
    """A call over the relay's hand-over cap (only its head reaches the worker), its secrets
    spelt with JSON escapes in that head."""
    head = (
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":'
        b'{"pass\\u0077ord":"ZQLEAK07escapedpw","note":"\\u0073k-proj-ZQLEAK08escAbcdefgh1234",'
        b'"blob":"'
    )
    return head + b"x" * 200_000 + b'"}}}\n'


def _traffic() -> list[tuple[bytes, object]]:
    """(line, the id whose answer to wait for, or None)."""
    call = {"jsonrpc": "2.0", "method": "tools/call"}
    return [
        (_line({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "leak-client", "version": CLIENT_VERSION}}}), 1),
        (_line({"jsonrpc": "2.0", "method": "notifications/initialized"}), None),
        (_line({**call, "id": 2, "params": {"name": "fail", "arguments": {}}}), 2),
        (_line({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": URI}}), 3),
        (_line({**call, "id": SECRET_ID, "params": {"name": SECRET_TOOL, "arguments": {}}}),
         SECRET_ID),
        (_line({**call, "id": 6, "params": {"name": "hang", "arguments": {}}}), None),
        (_line({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 6, "reason": CANCEL_REASON}}), None),
        (_large_call(), 7),
        (_line({"jsonrpc": "2.0", "id": 8, "method": SECRET_METHOD}), 8),
    ]  # fmt: skip


def _answered(stdout: bytes, request_id: object) -> bool:
    for line in stdout.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("id") == request_id:  # pyright: ignore[reportUnknownMemberType]
            return True
    return False


def _store_dump(path: Path) -> tuple[bytes, list[str]]:
    """Every file of the store as raw bytes, and every value of every table (the FTS index's
    terms included) as text."""
    raw = b"".join(p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file())
    values: list[str] = []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            try:
                rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            except sqlite3.OperationalError as exc:
                # a contentless FTS5 table without token counts (logs_spans, a new store's
                # logs_fts): its rows would be NULLs anyway; what it holds is in its shadow
                # tables (dumped) and terms (below)
                assert "does not support scanning" in str(exc), exc
                continue
            for row in rows:
                values.extend(repr(v) for v in row)
        for fts in ("logs_fts", "logs_spans"):
            conn.execute(
                f"CREATE VIRTUAL TABLE temp.{fts}_terms USING fts5vocab(main, {fts}, 'row')"
            )
            values.extend(r[0] for r in conn.execute(f"SELECT term FROM temp.{fts}_terms"))
    finally:
        conn.close()
    return raw, values


def _leaks(where: str, data: bytes) -> list[str]:
    found: list[str] = []
    for m in CANARY.finditer(data):
        found.append(f"{where}: {describe(data[max(m.start() - 80, 0) : m.end() + 40])}")
    return found


def test_no_planted_secret_reaches_the_store_otlp_or_stderr(tmp_path: Path) -> None:
    store = tmp_path / "store" / "helmet.db"
    with OTLPReceiver() as receiver:
        env = clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
        argv = [
            sys.executable, "-m", "helmet_otel", "--store", str(store), "--name", "leak-test",
            sys.executable, str(SERVERS_DIR / "secret_server.py"), SERVER_STDERR,
        ]  # fmt: skip
        with RawProcess(argv, env=env) as proxy:
            for line, wait_id in _traffic():
                proxy.write(line)
                if wait_id is not None:
                    out = proxy.stdout.wait(lambda b, i=wait_id: _answered(b, i), 20)
                    assert _answered(out, wait_id), describe(out)
            proxy.close_stdin()
            assert proxy.wait(20) == 0
        receiver.wait_for(lambda r: {s for s, _ in r.requests} >= {"traces", "logs", "metrics"}, 10)
        bodies = list(receiver.raw_bodies)
        spans = receiver.spans()
        logs = receiver.logs()

    # no canary is anywhere
    leaks: list[str] = []
    for i, body in enumerate(bodies):
        leaks += _leaks(f"OTLP body {i}", body)
    raw, values = _store_dump(store)
    assert len(raw) > 0 and values
    leaks += _leaks("store files", raw)
    leaks += _leaks("store values", "\n".join(values).encode())
    stderr = proxy.stderr.data().replace(SERVER_STDERR.encode() + b"\n", b"", 1)
    assert SERVER_STDERR.encode() in proxy.stderr.data()  # forwarded as the server wrote it
    leaks += _leaks("proxy stderr", stderr)
    assert not leaks, "\n".join(leaks)

    # and the plants reached the places they were meant for, scrubbed: the test exercised them
    by_name = {s["name"]: s for s in spans if s["kind"] == "SERVER"}
    assert by_name["tools/call fail"]["status"]["message"] == (
        "upstream rejected key [REDACTED:openai-key]"
    ), by_name["tools/call fail"]["status"]
    read = by_name["resources/read"]["attributes"]
    assert read["mcp.resource.uri"] == (
        "https://admin:[REDACTED:url-password]@example.com/doc?api_key=[REDACTED:key:api_key]&page=2"
    )
    tool = by_name["tools/call [REDACTED:openai-key]"]["attributes"]
    assert tool["gen_ai.tool.name"] == "[REDACTED:openai-key]"
    assert tool["jsonrpc.request.id"] == "[REDACTED:github-token]"
    hang = by_name["tools/call hang"]
    assert [e["attributes"] for e in hang["events"]] == [
        {"reason": "user aborted; Bearer [REDACTED:bearer-token]"}
    ]
    previews = [
        r["body"]["_preview"]
        for r in logs
        if r["event_name"] == "helmet.request" and r["attributes"].get("jsonrpc.request.id") == "7"
    ]
    assert len(previews) == 1 and '"password":"[REDACTED:key:password]"' in previews[0], previews
    stderr_records = [r["body"] for r in logs if r["event_name"] == "helmet.server_stderr"]
    assert stderr_records == ["db connect password=[REDACTED:key:password] host=db"]
    assert "[REDACTED:slack-token]" in by_name
    assert {s for s, _ in receiver.requests} == {"traces", "logs", "metrics"}
