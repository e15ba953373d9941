"""The telemetry worker as a real process carrying several sessions at once.

Each test writes frame batches (built with `frames`) to ``python -m helmet_otel.telemetry.worker``
and reads what it exported from a real OTLP receiver and a real local store.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from helmet_otel import semconv as sc
from helmet_otel.config import ProxyOptions
from helmet_otel.store.query import LogFilter, Reader
from helmet_otel.telemetry import frames
from helmet_otel.telemetry.frames import (
    FLAG_PROXY,
    FLAG_REPLIED,
    Close,
    Config,
    End,
    Frame,
    Info,
    Start,
    Stderr,
)
from tests.e2e.helpers import RawProcess, clean_env
from tests.faults.helpers import poll
from tests.otlp_receiver import OTLPReceiver
from tests.telemetry.helpers import by_event

pytestmark = [pytest.mark.e2e]

WORKER = [sys.executable, "-m", "helmet_otel.telemetry.worker"]
T0 = 1_795_000_000_000_000_000
MS = 1_000_000
A, B = 7, 9  # session keys
TRACE_A, ROOT_A = 0xA0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0, 0xA1
TRACE_B, ROOT_B = 0xB0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0, 0xB1
CLIENT_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BIG_ID = 18446744073709551616  # 2**64: a float if parsed carelessly
UPSTREAM_A: dict[str, object] = {"command": ["demo", "--serve"], "pid": 4242, "cwd": "/srv"}
CLIENT_B = {"name": "b-client", "version": "2"}
INIT_PARAMS = {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "raw", "version": "0"}}  # fmt: skip


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()  # (orjson stops at 64 bits)


def _config(store: Path, transport: str, endpoint: str | None = None) -> Config:
    options = ProxyOptions(store=str(store), otlp_endpoint=endpoint, store_max_bytes=0)
    return Config(options, "multi", os.getpid(), socket.gethostname(), transport)


def _batch(*records: bytes | Frame) -> bytes:
    return frames.batch(b"".join(r if isinstance(r, bytes) else frames.pickled(r) for r in records))


def _request(
    session: int, at_ms: int, msg_id: int, method: str, params: dict[str, Any], span: int,
    flags: int = 0,
) -> bytes:  # fmt: skip
    raw = _json({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return frames.whole(session, 0, flags, T0 + at_ms * MS, raw + b"\n", span, span + 1)


def _response(session: int, at_ms: int, raw: bytes, flags: int = 0) -> bytes:
    return frames.whole(session, 1, flags, T0 + at_ms * MS, raw + b"\n", 0, 0)


def _result(msg_id: int, result: dict[str, Any] | None = None) -> bytes:
    return _json({"jsonrpc": "2.0", "id": msg_id, "result": result or {}})


def _echo(text: str, traceparent: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": text}}
    if traceparent is not None:
        params["_meta"] = {"traceparent": traceparent}
    return params


def _run(batches: list[bytes]) -> RawProcess:
    """Feed the batches to a worker, close its stdin and wait for it to exit."""
    worker = RawProcess(WORKER, env=clean_env())
    worker.write(b"".join(batches))
    worker.close_stdin()
    assert worker.wait(timeout=30) == 0
    return worker


def test_two_interleaved_sessions_stay_apart(tmp_path: Path) -> None:
    """Two sessions (a stdio one and an http one with a protocol session id) use the same
    JSON-RPC ids at the same time: each response ends its own session's request. One frame
    the recorder cannot take (its session never started) is counted and the rest recorded;
    the worker's input ends without a goodbye, so the session still open is lost."""
    store = tmp_path / "store.db"
    unknown = frames.whole(99, 0, 0, T0, b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n', 2, 3)
    with OTLPReceiver() as rx:
        config = _config(store, "http", rx.endpoint)
        start_a = Start(A, T0, "sess-a", "stdio", TRACE_A, ROOT_A, UPSTREAM_A)
        start_b = Start(B, T0, "sess-b", "http", TRACE_B, ROOT_B, {"url": "http://up/mcp"})
        info_b = Info(
            B, era="legacy", protocol_version="2025-06-18", client_info=CLIENT_B,
            server_info={"name": "b-server", "version": "3"}, mcp_session_id="mcp-b",
        )  # fmt: skip
        info_a = Info(
            A, era="legacy", protocol_version="2025-11-25", client_info=INIT_PARAMS["clientInfo"],
            server_info={"name": "a-server", "version": "1"}, mcp_session_id=None,
        )  # fmt: skip
        end_b = End(
            B, T0 + 40 * MS, exit_status=None, exit_reason="client closed the connection",
            requests=3, errors=1, method_counts={"initialize": 1, "tools/call": 2}, era="legacy",
            protocol_version="2025-06-18", client_info=None, server_info=None,
        )  # fmt: skip
        worker = _run([
            _batch(config, start_a, start_b, info_b, info_a),
            _batch(
                _request(A, 1, 1, "initialize", INIT_PARAMS, 0xA10),
                _request(B, 2, 1, "initialize", INIT_PARAMS, 0xB10),
                _response(B, 5, _result(1)),
                unknown,
                _response(A, 11, _result(1)),
                _request(A, 20, 2, "tools/call", _echo("a", CLIENT_TP), 0xA20),
                _request(A, 21, BIG_ID, "ping", {}, 0xA30),
                _request(B, 22, 2, "tools/call",
                         _echo("b", "ff" + CLIENT_TP[2:]), 0xB20),  # version ff: no link
                _request(B, 23, 3, "tools/call", _echo("blocked"), 0xB30, FLAG_REPLIED),
                _response(B, 24, b'{"jsonrpc":"2.0","id":3,"error":{"code":-32000,'
                                 b'"message":"blocked by policy"}}', FLAG_PROXY),
                Stderr(99, T0, b"no such session\n"),
            ),
            _batch(
                _response(A, 30, _result(2, {"content": [{"type": "text", "text": "a"}]})),
                _response(B, 32, _result(2, {"content": [{"type": "text", "text": "b"}]})),
                _response(A, 33, _result(BIG_ID)),
                end_b,
                _request(A, 41, 4, "tools/call", {"name": "slow"}, 0xA40),
            ),
        ])  # fmt: skip
        spans, logs, metrics = rx.spans(), rx.logs(), rx.metrics()

    # one stderr line says what went wrong; both bad frames are counted
    errors = [x for x in worker.stderr.data().decode().splitlines() if "worker error" in x]
    assert errors == [
        "helmet-otel: telemetry worker error (worker_error; counted in helmet.telemetry.dropped, "
        "the rest is recorded): LookupError: a frame for session 99, which has not started or "
        "has ended"
    ]
    dropped = [p["value"] for m in metrics if m["name"] == sc.METRIC_TELEMETRY_DROPPED
               for p in m["data_points"]
               if p["attributes"][sc.HELMET_TELEMETRY_REASON] == "worker_error"]  # fmt: skip
    assert dropped[-1] == 2

    # two traces, one per session, each with its own root
    trace_a, trace_b = _hex(TRACE_A, 32), _hex(TRACE_B, 32)
    assert {s["trace_id"] for s in spans} == {trace_a, trace_b}
    roots = {s["trace_id"]: s for s in spans if s["name"] == sc.SPAN_SESSION}
    assert {t: r["span_id"] for t, r in roots.items()} == {
        trace_a: _hex(ROOT_A, 16),
        trace_b: _hex(ROOT_B, 16),
    }
    root_a, root_b = roots[trace_a]["attributes"], roots[trace_b]["attributes"]
    assert (root_a[sc.HELMET_SESSION_ID], root_a[sc.NETWORK_TRANSPORT],
            root_a[sc.HELMET_TRANSPORT], root_a[sc.HELMET_EXIT_REASON]) == (
        "sess-a", "pipe", "stdio", sc.LOST_EXIT_REASON)  # fmt: skip
    assert sc.MCP_SESSION_ID not in root_a
    assert (root_b[sc.HELMET_SESSION_ID], root_b[sc.NETWORK_TRANSPORT],
            root_b[sc.HELMET_TRANSPORT], root_b[sc.HELMET_EXIT_REASON],
            root_b[sc.MCP_SESSION_ID]) == (
        "sess-b", "tcp", "http", "client closed the connection", "mcp-b")  # fmt: skip

    # every operation in its own session's trace, under its root, ended with its own reply
    def operations(trace: str) -> list[tuple[Any, ...]]:
        servers = [s for s in spans if s["trace_id"] == trace and s["kind"] == "SERVER"]
        root_end = roots[trace]["end_time_unix_nano"]
        return sorted(
            (s["name"], s["attributes"][sc.JSONRPC_REQUEST_ID], s["status"]["code"],
             s["attributes"].get(sc.ERROR_TYPE), s["attributes"][sc.HELMET_SESSION_ID],
             s["attributes"][sc.NETWORK_TRANSPORT], s["attributes"].get(sc.MCP_SESSION_ID),
             s["parent_span_id"] == roots[trace]["span_id"],
             [(x["trace_id"], x["span_id"]) for x in s["links"]],
             "with the session" if s["end_time_unix_nano"] == root_end
             else s["end_time_unix_nano"] - s["start_time_unix_nano"])
            for s in servers
        )  # fmt: skip

    assert operations(trace_a) == [
        ("initialize", "1", "UNSET", None, "sess-a", "pipe", None, True, [], 10 * MS),
        ("ping", str(BIG_ID), "UNSET", None, "sess-a", "pipe", None, True, [], 12 * MS),
        ("tools/call echo", "2", "UNSET", None, "sess-a", "pipe", None, True,
         [("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")], 10 * MS),
        # still open when the input ended: it ends with the lost session
        ("tools/call slow", "4", "ERROR", "no_response", "sess-a", "pipe", None, True, [],
         "with the session"),
    ]  # fmt: skip
    assert operations(trace_b) == [
        ("initialize", "1", "UNSET", None, "sess-b", "tcp", "mcp-b", True, [], 3 * MS),
        ("tools/call echo", "2", "UNSET", None, "sess-b", "tcp", "mcp-b", True, [], 10 * MS),
        ("tools/call echo", "3", "ERROR", "-32000", "sess-b", "tcp", "mcp-b", True, [], 1 * MS),
    ]  # fmt: skip
    clients = sorted((s["trace_id"] == trace_a, s["attributes"][sc.JSONRPC_REQUEST_ID])
                     for s in spans if s["kind"] == "CLIENT")  # fmt: skip
    # the request the proxy answered itself was never forwarded: no CLIENT span
    assert clients == [(False, "1"), (False, "2"),
                       (True, "1"), (True, "18446744073709551616"), (True, "2"), (True, "4")]  # fmt: skip

    # every record carries its own session's id and trace; the process's own carry none
    by_session: dict[str | None, list[dict[str, Any]]] = {}
    for record in logs:
        by_session.setdefault(record["attributes"].get(sc.HELMET_SESSION_ID), []).append(record)
    assert set(by_session) == {None, "sess-a", "sess-b"}
    assert sorted(r["event_name"] for r in by_session[None]) == [
        sc.EVENT_PERFORMANCE,
        sc.EVENT_PROXY_CLOSE,
    ]
    assert {r["trace_id"] for r in by_session[None]} == {""}
    assert {r["trace_id"] for r in by_session["sess-a"]} == {trace_a}
    assert {r["trace_id"] for r in by_session["sess-b"]} == {trace_b}
    assert all(sc.MCP_SESSION_ID not in r["attributes"] for r in by_session["sess-a"])
    # the protocol session id from the moment it was known (after start and configuration)
    assert [(r["event_name"], r["attributes"].get(sc.MCP_SESSION_ID))
            for r in by_session["sess-b"]][:3] == [
        (sc.EVENT_SESSION_START, None), (sc.EVENT_CONFIGURATION, None),
        (sc.EVENT_REQUEST, "mcp-b")]  # fmt: skip
    assert {r["attributes"].get(sc.MCP_SESSION_ID) for r in by_session["sess-b"][2:]} == {"mcp-b"}

    # each response matched its own session's request
    def answered(session: str) -> list[tuple[Any, ...]]:
        return [
            (r["event_name"], r["attributes"][sc.JSONRPC_REQUEST_ID],
             r["attributes"].get(sc.MCP_METHOD_NAME), r["attributes"].get(sc.HELMET_LATENCY_MS),
             r["attributes"].get(sc.HELMET_ORIGIN))
            for r in by_session[session]
            if r["event_name"] in (sc.EVENT_RESPONSE, sc.EVENT_ERROR)
        ]  # fmt: skip

    assert answered("sess-a") == [
        (sc.EVENT_RESPONSE, "1", "initialize", 10.0, None),
        (sc.EVENT_RESPONSE, "2", "tools/call", 10.0, None),
        (sc.EVENT_RESPONSE, str(BIG_ID), "ping", 12.0, None),
        # the call still open when the session ended: an error record says so, as its span does
        (sc.EVENT_ERROR, "4", "tools/call", None, None),
    ]
    assert answered("sess-b") == [
        (sc.EVENT_RESPONSE, "1", "initialize", 3.0, None),
        (sc.EVENT_RESPONSE, "3", "tools/call", 1.0, "proxy"),
        (sc.EVENT_ERROR, "3", "tools/call", 1.0, "proxy"),
        (sc.EVENT_RESPONSE, "2", "tools/call", 10.0, None),
    ]
    end_a = by_event(by_session["sess-a"], sc.EVENT_SESSION_END)[0]["attributes"]
    assert (end_a[sc.HELMET_EXIT_REASON], end_a[sc.HELMET_SESSION_REQUESTS],
            end_a[sc.HELMET_ERA], end_a[sc.HELMET_CLIENT_NAME]) == (
        sc.LOST_EXIT_REASON, 4, "legacy", "raw")  # fmt: skip
    active = [m for m in metrics if m["name"] == sc.METRIC_SESSIONS_ACTIVE]
    assert [p["value"] for p in active[-1]["data_points"]] == [0]
    sessions = [m for m in metrics if m["name"] == sc.METRIC_SERVER_SESSION_DURATION][-1]
    assert sorted(p["attributes"][sc.NETWORK_TRANSPORT] for p in sessions["data_points"]) == [
        "pipe",
        "tcp",
    ]

    # the store: one row per session, every record under its own session
    with Reader.open(store) as reader:
        rows = {s.session_id: s for s in reader.sessions()}
        assert {sid: (s.transport, s.status, s.requests, s.exit_reason, s.client)
                for sid, s in rows.items()} == {
            "sess-a": ("stdio", "lost", 4, sc.LOST_EXIT_REASON, "raw 0"),
            "sess-b": ("http", "ended", 3, "client closed the connection", "b-client 2"),
        }  # fmt: skip
        stored = reader.logs(LogFilter())
        assert {(e.session_id, e.trace_id) for e in stored} == {
            (None, None),
            ("sess-a", trace_a),
            ("sess-b", trace_b),
        }
        assert {(e.session_id, e.request_id, e.latency_ms) for e in stored
                if e.event == sc.EVENT_RESPONSE} == {
            ("sess-a", "1", 10.0), ("sess-a", "2", 10.0), ("sess-a", str(BIG_ID), 12.0),
            ("sess-b", "1", 3.0), ("sess-b", "2", 10.0), ("sess-b", "3", 1.0),
        }  # fmt: skip
        assert {s.trace_id for s in reader.spans("sess-a")} == {trace_a}
        assert {s.trace_id for s in reader.spans("sess-b")} == {trace_b}


def test_close_ends_every_open_session_with_its_reason(tmp_path: Path) -> None:
    """A stdio proxy carries one session: the process's own records are that session's."""
    store = tmp_path / "store.db"
    _run([
        _batch(
            _config(store, "stdio"),
            Start(1, T0, "only", "stdio", TRACE_A, ROOT_A, {}),
            _request(1, 1, 1, "tools/call", _echo("x"), 0xA10),
            Close(T0 + 5 * MS, "proxy received SIGTERM"),
        ),
    ])  # fmt: skip
    with Reader.open(store) as reader:
        (row,) = reader.sessions()
        assert (row.session_id, row.status, row.exit_reason) == (
            "only",
            "ended",
            "proxy received SIGTERM",
        )
        stored = reader.logs(LogFilter())
        assert [(e.event, e.session_id, e.trace_id) for e in stored] == [
            (event, "only", _hex(TRACE_A, 32)) for event in (
                sc.EVENT_SESSION_START, sc.EVENT_CONFIGURATION, sc.EVENT_REQUEST,
                sc.EVENT_ERROR, sc.EVENT_SESSION_END, sc.EVENT_PERFORMANCE, sc.EVENT_PROXY_CLOSE,
            )
        ]  # fmt: skip
        (server,) = [s for s in reader.spans("only") if s.kind == "SERVER"]
        assert (server.status, server.attributes[sc.ERROR_TYPE]) == ("ERROR", "no_response")
        # the unanswered call counts as an error of the session, as its span says
        unanswered = stored[3]
        assert (unanswered.request_id, unanswered.error_type, unanswered.direction) == (
            "1",
            "no_response",
            sc.DIRECTION_S2C,
        )
        assert (row.requests, row.errors) == (1, 1)


def test_the_configuration_comes_first_even_behind_the_relays_drop_counts(tmp_path: Path) -> None:
    """Records the relay shed before its first hand-over are counted in the first batch's
    header, so `read_batch` puts them ahead of the Config frame: the worker still starts."""
    with OTLPReceiver() as rx:
        config = _config(tmp_path / "store.db", "stdio", rx.endpoint)
        records = frames.pickled(config) + frames.pickled(Close(T0, "done"))
        _run([frames.batch(records, queue_full=3)])
        counts = {
            p["attributes"][sc.HELMET_TELEMETRY_REASON]: p["value"]
            for m in rx.metrics()
            if m["name"] == sc.METRIC_TELEMETRY_DROPPED
            for p in m["data_points"]
        }
        assert counts == {"relay_queue_full": 3, "relay_busy": 0}
        assert [r["event_name"] for r in rx.logs()] == [sc.EVENT_PERFORMANCE, sc.EVENT_PROXY_CLOSE]


def test_without_a_configuration_the_worker_does_nothing() -> None:
    worker = RawProcess(WORKER, env=clean_env())
    worker.write(_batch(Close(T0, "done")))
    worker.close_stdin()
    assert worker.wait(timeout=30) == 2


def _store_descriptors(pid: int, store: Path) -> list[str]:
    """What the process's descriptors on the store's files point at."""
    found: list[str] = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(str(store)):
                found.append(target)
    return sorted(found)


def test_the_worker_writes_its_store_through_apsw_alone(tmp_path: Path) -> None:
    """The worker's one connection to the store is apsw's (store/engine.py): apsw's module is
    mapped, and the store, its WAL and its index are each open once (a second connection,
    e.g. through sqlite3, would open the database file again)."""
    store = tmp_path / "store.db"
    worker = RawProcess(WORKER, env=clean_env())
    try:
        worker.write(
            _batch(_config(store, "stdio"), Start(1, T0, "only", "stdio", TRACE_A, ROOT_A, {}))
        )
        wanted = [str(store), f"{store}-shm", f"{store}-wal"]
        poll(  # the store opens as the worker starts
            lambda: _store_descriptors(worker.proc.pid, store),
            lambda held: held == wanted,
            30,
            "the worker's descriptors on the store",
        )
        maps = Path(f"/proc/{worker.proc.pid}/maps").read_text()
        assert "/apsw/" in maps
        worker.write(_batch(_request(1, 1, 1, "tools/call", _echo("x"), 0xA10)))
    finally:
        worker.close_stdin()
    assert worker.wait(timeout=30) == 0
    with Reader.open(store) as reader:
        assert [e.event for e in reader.logs(LogFilter(events=(sc.EVENT_REQUEST,)))] == [
            sc.EVENT_REQUEST
        ]
