"""Schema 5: a call's CLIENT/SERVER span pair in one row of ``spans`` (``client_span_id``),
expanded again by every reader; a schema-4 store upgrades and reads as before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from helmet_otel.store import Store, schema
from helmet_otel.store.maintenance import delete_sessions, prune_before, store_info
from helmet_otel.store.model import SpanRow
from helmet_otel.store.query import Reader

SERVER_ID, CLIENT_ID, ROOT_ID = "a1" * 8, "c2" * 8, "f0" * 8


def _span(span_id: str, kind: str, parent: str | None, start: int, **attrs: object) -> SpanRow:
    return SpanRow(
        trace_id="7e" * 16, span_id=span_id, parent_span_id=parent, name="tools/call echo",
        kind=kind, start_ts=start, end_ts=start + 5, status="UNSET", status_message=None,
        session_id="s", segment=None, service="echo", links=[],
        attrs={"mcp.method.name": "tools/call", "jsonrpc.request.id": "1", **attrs},
    )  # fmt: skip


def _v4_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store as schema 4 wrote it: a request record in ``logs_spans``, the pair as two rows."""
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
        patch.setattr(schema, "SCHEMA_VERSION", 4)
        schema.connect_writer(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO logs (id, ts, session_id, event, kind, span_id, body) VALUES"
        f" (1, 10, 's', 'helmet.request', 'request', '{SERVER_ID}', '{{}}')"
    )
    conn.execute("INSERT INTO logs_fts (rowid, body) VALUES (1, '{}')")
    conn.execute(f"INSERT INTO logs_spans (rowid, span_id) VALUES (1, '{SERVER_ID}')")
    for row in (_span(CLIENT_ID, "CLIENT", SERVER_ID, 10), _span(SERVER_ID, "SERVER", ROOT_ID, 10)):
        conn.execute(
            "INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, start_ts, end_ts,"
            " status, status_message, session_id, segment, service, attrs, links)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            row.values(),
        )
    assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    conn.close()


def test_a_schema_4_store_upgrades_and_new_pairs_are_one_row(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _v4_store(store_path, monkeypatch)
    store = Store.open(store_path, max_bytes=0, max_age_s=0)
    server, client = "b3" * 8, "d4" * 8
    assert store.write_spans(
        [_span(client, "CLIENT", server, 20), _span(server, "SERVER", ROOT_ID, 20)]
    )
    assert store.write_spans([_span("e5" * 8, "CLIENT", server, 30, extra=1)])  # alone
    assert (store.written_spans, store.dropped) == (3, 0)
    store.close()
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    assert conn.execute("SELECT span_id, kind, client_span_id FROM spans ORDER BY id").fetchall() == [
        (CLIENT_ID, "CLIENT", None), (SERVER_ID, "SERVER", None),  # as schema 4 wrote them
        (server, "SERVER", client),  # the new pair: one row
        ("e5" * 8, "CLIENT", None),
    ]  # fmt: skip
    for table in ("logs_fts", "logs_spans"):
        assert conn.execute(f"SELECT v FROM {table}_config WHERE k = 'automerge'").fetchall() == [
            (8,)
        ]
    conn.close()
    with Reader.open(store_path) as reader:
        assert [e.id for e in reader.logs_of_span(SERVER_ID)] == [1]  # logs_spans made again
        got = [
            (s.span_id, s.parent_span_id, s.kind, s.start_ts, s.attributes)
            for s in reader.spans("s")
        ]
        attrs = {"jsonrpc.request.id": "1", "mcp.method.name": "tools/call"}
        assert got == [
            (CLIENT_ID, SERVER_ID, "CLIENT", 10, attrs), (SERVER_ID, ROOT_ID, "SERVER", 10, attrs),
            (server, ROOT_ID, "SERVER", 20, attrs), (client, server, "CLIENT", 20, attrs),
            ("e5" * 8, server, "CLIENT", 30, {**attrs, "extra": 1}),
        ]  # fmt: skip
        [tree] = [t for t in reader.traces("s")]
        assert [(d, n.span.span_id) for r in tree.roots for d, n in r.walk()] == [
            (0, SERVER_ID), (1, CLIENT_ID), (0, server), (1, client), (1, "e5" * 8),
        ]  # fmt: skip
    assert store_info(store_path).spans == 5
    assert prune_before(store_path, 25).spans == 4  # a pair row counts as its two spans
    assert delete_sessions(store_path, ["s"]).spans == 1
    assert store_info(store_path).spans == 0
