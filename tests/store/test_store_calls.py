"""A request's answer and an answer's request (``store/calls.py``): looked for among the records
of the request's span first, then along the session's time; which one answered and how SQLite
read it (``EXPLAIN QUERY PLAN`` of each statement run)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import cast

import pytest

from helmet_otel import semconv as sc
from helmet_otel.store import schema
from helmet_otel.store.calls import answer_of, other_half, pending_calls, request_of
from helmet_otel.store.query import LogEntry, LogFilter, Reader
from tests.store.scenario import BASE_NS, MS, Rec, Session, write_store

SID = "s-calls"
ROOT = 0x1000_0000_0000_0001
C2S, S2C = sc.DIRECTION_C2S, sc.DIRECTION_S2C


def _message(n: int, event: str, direction: str, kind: str, rid: str | None, span: int) -> Rec:
    attrs: dict[str, object] = {
        sc.HELMET_SESSION_ID: SID,
        sc.HELMET_DIRECTION: direction,
        sc.HELMET_MESSAGE_KIND: kind,
        sc.MCP_METHOD_NAME: "tools/call" if kind != "notification" else "notifications/progress",
    }
    if rid is not None:
        attrs[sc.JSONRPC_REQUEST_ID] = rid
    return Rec(BASE_NS + n * MS, event, attrs, {"n": n}, span_id=span)


REQ, RESP, ERR = sc.EVENT_REQUEST, sc.EVENT_RESPONSE, sc.EVENT_ERROR
RECORDS = [
    # n (the time in ms), event, direction, kind, request id, span (0: none)
    _message(1, REQ, C2S, "request", "1", 0x2000_0000_0000_0001),
    _message(2, REQ, C2S, "request", "2", 0),  # no span id (an import, say)
    _message(3, RESP, S2C, "response", "1", 0x2000_0000_0000_0001),
    _message(4, RESP, S2C, "response", "2", 0),
    _message(5, REQ, C2S, "request", "3", 0x2000_0000_0000_0003),
    _message(6, RESP, S2C, "response", "3", ROOT),  # written in another span than its request
    _message(7, REQ, C2S, "request", "4", 0x2000_0000_0000_0004),  # never answered
    _message(8, sc.EVENT_NOTIFICATION, C2S, "notification", None, ROOT),
    _message(9, REQ, S2C, "request", "5", 0x2000_0000_0000_0005),  # the server asks the client
    _message(10, RESP, C2S, "response", "5", 0x2000_0000_0000_0005),
    _message(11, REQ, C2S, "request", "6", 0x2000_0000_0000_0006),
    _message(12, RESP, S2C, "error", "6", 0x2000_0000_0000_0006),  # a JSON-RPC error and its twin
    _message(12, ERR, S2C, "error", "6", 0x2000_0000_0000_0006),
    _message(13, REQ, C2S, "request", "1", 0x2000_0000_0000_0007),  # id 1 again, answered later
    _message(14, RESP, S2C, "response", "1", 0x2000_0000_0000_0007),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calls") / "store.db"
    write_store(path, [Session(SID, "svc", 0xABC, RECORDS, [])], max_bytes=0, max_age_s=0).close()
    return path


class Statements:
    """The statements a reader runs on ``logs`` (not FTS5's own), each with SQLite's plan."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.sql: list[str] = []
        reader.conn.set_trace_callback(self._seen)

    def _seen(self, sql: str) -> None:
        if sql.startswith("SELECT ") and " FROM logs " in sql:
            self.sql.append(sql)

    def plans(self) -> list[str]:
        self.reader.conn.set_trace_callback(None)
        plans = [
            " | ".join(row[3] for row in self.reader.conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in self.sql
        ]
        self.sql.clear()
        self.reader.conn.set_trace_callback(self._seen)
        return plans


def _n(entry: LogEntry) -> int:
    return cast(dict[str, int], entry.body)["n"]


def _by_n(reader: Reader) -> dict[tuple[int, str | None], LogEntry]:
    entries = reader.logs(LogFilter(session_prefixes=(SID,)), limit=None)
    return {(_n(e), e.event): e for e in entries}


def test_the_answer_is_found_in_the_requests_span_else_along_the_session(store: Path) -> None:
    with Reader.open(store) as reader:
        rec = _by_n(reader)
        seen = Statements(reader)

        def answer(n: int) -> tuple[int, str] | None:
            found = answer_of(reader, rec[(n, REQ)])
            return None if found is None else (_n(found), found.event or "")

        assert answer(1) == (3, RESP)
        [plan] = seen.plans()  # the span's records only: no second statement
        assert "logs_spans VIRTUAL TABLE" in plan
        assert "SEARCH logs USING INTEGER PRIMARY KEY (rowid=?)" in plan
        assert answer(2) == (4, RESP)  # no span id: along the session's time at once
        [plan] = seen.plans()
        assert plan.startswith("SEARCH logs USING INDEX logs_session_ts (session_id=? AND ts>?)")
        assert answer(5) == (6, RESP)  # not in its span: the session's time finds it
        assert len(seen.plans()) == 2
        assert answer(7) is None
        assert answer(9) == (10, RESP)  # a request from the server, answered by the client
        assert answer(11) == (12, RESP)  # the response, not its helmet.error twin
        assert answer(13) == (14, RESP)  # a reused id: the answer after it, in its span
        assert other_half(reader, rec[(8, sc.EVENT_NOTIFICATION)]) is None

        def request(n: int, event: str = RESP) -> int | None:
            found = request_of(reader, rec[(n, event)])
            return None if found is None else _n(found)

        assert [request(3), request(4), request(6), request(10), request(14)] == [1, 2, 5, 9, 13]
        assert request(12, ERR) == 11
        assert other_half(reader, rec[(3, RESP)]) == rec[(1, REQ)]
        assert answer_of(reader, rec[(3, RESP)]) is None  # an answer has no answer


def test_pending_calls_are_the_newest_requests_without_an_answer(store: Path) -> None:
    with Reader.open(store) as reader:
        assert [e.request_id for e in pending_calls(reader, SID)] == ["4"]
        # the newest two requests: 6 and the second 1, both answered
        assert pending_calls(reader, SID, window=2) == []
        assert [e.request_id for e in pending_calls(reader, SID, window=4)] == ["4"]
        seen = Statements(reader)
        pending_calls(reader, SID, window=4)
        answers = seen.plans()[1]
        assert answers.startswith("SEARCH logs USING INDEX logs_session_ts (session_id=? AND ts>?)")


def test_a_store_loses_logs_call_at_version_6(store_path: Path) -> None:
    write_store(store_path, [], max_bytes=0, max_age_s=0).close()
    conn = sqlite3.connect(store_path)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    assert "logs_call" not in names and "logs_session_ts" in names
    # a version-5 store: upgraded when a writer opens it
    conn.execute(schema._V2[-1])  # pyright: ignore[reportPrivateUsage]
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()
    with Reader.open(store_path) as reader:
        assert schema.schema_version(reader.conn) == 6
        assert reader.run("SELECT name FROM sqlite_master WHERE name = 'logs_call'") == []
