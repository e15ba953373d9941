"""The query layer's new parts (issue 13), in-process: name lists and globs, the old-schema
read fallback, and the column fitting the tables use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from helmet_otel.cli.layout import Column, fit
from helmet_otel.store import schema
from helmet_otel.store.names import close_names, match_names
from helmet_otel.store.query import LogFilter, Reader
from tests.store.scenario import everything_session, write_store


def test_known_names_and_globs(store_path: Path) -> None:
    sessions = [everything_session("s-1"), everything_session("s-2", service="GitHub")]
    write_store(store_path, sessions, max_bytes=0, max_age_s=0).close()
    with Reader.open(store_path) as reader:
        assert reader.names("service") == ["GitHub", "everything"]
        assert reader.names("target") == ["broken", "greet", "search"]
        assert reader.names("method") == [
            "initialize", "notifications/initialized", "prompts/get", "tools/call",
        ]  # fmt: skip
        resolved = reader.resolve(LogFilter(tools=("S*", "GREET"), servers=("git*",)))
        assert (resolved.tools, resolved.servers, resolved.empty) == (
            ("greet", "search", "GREET"),
            ("GitHub",),
            False,
        )
        assert reader.resolve(LogFilter(servers=("nothing*",))).empty
        assert reader.resolve_session_ref("last") == ["s-2"]
        assert reader.resolve_session_ref("last~1") == ["s-1"]
        assert reader.resolve_session_ref("last~2") == []
    assert match_names(["tools/*"], ["tools/call", "tools/list", "ping"]) == [
        "tools/call",
        "tools/list",
    ]
    assert close_names("serch", ["search", "broken"]) == ["search"]
    assert close_names("hub", ["GitHub", "everything"]) == ["GitHub"]


def test_a_store_that_cannot_be_upgraded_is_read_as_it_is(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_store(store_path, [everything_session()], max_bytes=0, max_age_s=0).close()
    conn = sqlite3.connect(store_path)
    conn.execute("DROP TABLE logs_spans")  # version 4's, which replaced two indexes
    conn.execute("CREATE INDEX spans_start ON spans (start_ts)")
    for index in ("logs_service_ts", "logs_method_ts"):
        conn.execute(f"DROP INDEX {index}")
    [(span_id, records)] = conn.execute(
        "SELECT span_id, count(*) FROM logs WHERE kind = 'request' GROUP BY span_id LIMIT 1"
    ).fetchall()
    for column in ("cpu_s", "peak_memory", "imported_ts"):  # version 3's
        conn.execute(f"ALTER TABLE sessions DROP COLUMN {column}")
    # version 5's: a call's CLIENT span in its SERVER span's row (then two rows again)
    conn.execute(
        "INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, start_ts, end_ts,"
        " status, status_message, session_id, segment, service, attrs, links)"
        " SELECT trace_id, client_span_id, span_id, name, 'CLIENT', start_ts, end_ts, status,"
        " status_message, session_id, segment, service, attrs, links FROM spans"
        " WHERE client_span_id IS NOT NULL"
    )
    conn.commit()
    spans_before = sorted(conn.execute("SELECT span_id, kind FROM spans"))
    assert ("CLIENT",) in conn.execute("SELECT kind FROM spans")  # there was a pair
    conn.execute("ALTER TABLE spans DROP COLUMN client_span_id")
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    def read_only(*_args: object, **_kw: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(schema, "connect_writer", read_only)
    with Reader.open(store_path) as reader:
        assert schema.schema_version(reader.conn) == 1
        assert [e.target for e in reader.logs(LogFilter(tools=("sea*",)))] == ["search"] * 2
        [session] = reader.sessions()  # without the newer columns
        assert (session.requests, session.cpu_s, session.peak_memory) == (4, None, None)
        of_span = [e.id for e in reader.logs_of_span(span_id.upper())]  # no index: a scan
        sid = reader.resolve_session_ref("last")[0]
        assert sorted((s.span_id, s.kind) for s in reader.spans(sid)) == spans_before
    assert records == 1 and len(of_span) == 2  # the request and its answer
    monkeypatch.undo()
    with Reader.open(store_path) as reader:  # writable again: upgraded on the way
        assert schema.schema_version(reader.conn) == schema.SCHEMA_VERSION
        assert [e.id for e in reader.logs_of_span(span_id)] == of_span  # logs_spans, filled
        assert reader.run("SELECT name FROM sqlite_master WHERE name LIKE '%span%'") == [
            ("spans",), ("spans_session",), ("logs_spans",), ("logs_spans_data",),
            ("logs_spans_idx",), ("logs_spans_config",),
        ]  # fmt: skip


def test_fit_gives_way_in_order() -> None:
    cols = [
        Column("A", 4, 10),
        Column("B", 3, 6, drop=1),
        Column("C", 3, 6, drop=2),
        Column("BODY", 5, flex=True),
    ]
    natural = [10, 6, 6, 40]
    assert fit(cols, natural, None) == [10, 6, 6, 40]  # --wide
    assert fit(cols, natural, 200) == [10, 6, 6, 40]
    assert fit(cols, natural, 40) == [10, 6, 6, 12]  # BODY gives way first
    assert fit(cols, natural, 25) == [10, 6, None, 5]  # then C, the higher drop rank, goes
    assert fit(cols, natural, 12) == [5, None, None, 5]  # then B, then A shrinks
