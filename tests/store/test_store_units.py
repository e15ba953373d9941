"""Store internals: time parsing, schema and migrations, the exporters' rows, redaction."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from helmet_otel.percentile import percentile
from helmet_otel.redaction import Redactor
from helmet_otel.store import (
    SCHEMA_VERSION,
    Store,
    StoreLogExporter,
    StoreSpanExporter,
    default_store_path,
)
from helmet_otel.store.query import LogFilter, Reader, fts_query
from helmet_otel.store.schema import MIGRATIONS, Migration, StoreError, connect_reader, migrate
from helmet_otel.store.timefmt import (
    format_duration_ms,
    format_rfc3339,
    parse_duration,
    parse_size,
    parse_time,
)
from tests.store.conftest import REPO, cli_env
from tests.store.scenario import (
    SECRET,
    Pipeline,
    Rec,
    Session,
    everything_session,
    write_store,
)

NOW = 1_795_000_000_000_000_000


def test_durations_and_timestamps() -> None:
    assert [
        parse_duration(x) for x in ("30s", "5m", "2h", "7d", "1w", "1h30m", "250ms", "90", "1.5h")
    ] == [
        30,
        300,
        7200,
        604800,
        604800,
        5400,
        0.25,
        90,
        5400,
    ]
    for bad in ("", "5x", "-5m", "m", "5m3", "1h 30m", "nan"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_time("5m", now_ns=NOW) == NOW - 300 * 10**9
    assert parse_time("now", now_ns=NOW) == NOW
    assert parse_time("2026-11-18T11:06:40Z") == NOW
    assert parse_time("2026-11-18T12:06:40.5+01:00") == NOW + 500_000_000
    assert format_rfc3339(NOW + 7) == "2026-11-18T11:06:40.000000007Z"
    with pytest.raises(ValueError, match="invalid duration or timestamp: 'tomorrow'"):
        parse_time("tomorrow")
    assert [parse_size(x) for x in ("500MB", "1GiB", "4096", "2 kb", "1.5M")] == [
        500_000_000,
        1 << 30,
        4096,
        2000,
        1_500_000,
    ]
    with pytest.raises(ValueError):
        parse_size("lots")
    assert [format_duration_ms(x) for x in (None, 0.42, 12.34, 1250.0, 192_000.0, 7_500_000.0)] == [
        "",
        "0.42 ms",
        "12.3 ms",
        "1.25 s",
        "3m12s",
        "2h05m",
    ]


def test_percentile_is_nearest_rank() -> None:
    ten = [float(v) for v in range(1, 11)]
    assert [percentile(ten, q) for q in (0.0, 0.1, 0.5, 0.51, 0.95, 0.99, 1.0)] == [
        1.0,
        1.0,
        5.0,
        6.0,
        10.0,
        10.0,
        10.0,
    ]
    assert percentile([7.0], 0.5) == 7.0
    assert percentile([], 0.95) == 0.0


def test_fts_query_quotes_user_text() -> None:
    assert fts_query('rate "limit') == '"rate limit"*'
    assert fts_query("api_key") == '"api key"*'
    assert fts_query("NEAR(a b) OR c*") == '"NEAR a b OR c"*'
    assert fts_query("!!") is None


def test_default_store_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HELMET_STORE", str(tmp_path / "x.db"))
    assert default_store_path() == tmp_path / "x.db"
    monkeypatch.delenv("HELMET_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "helmet-otel" / "store.db"


def test_bad_environment_caps_fall_back_and_are_reported(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELMET_STORE_MAX_BYTES", "huge")
    monkeypatch.setenv("HELMET_STORE_MAX_AGE", "forever")
    reports: list[str] = []
    store = Store.open(store_path, report=reports.append)
    assert (store.max_bytes, store.max_age_s) == (500_000_000, 14 * 86400)
    assert reports == [
        "HELMET_STORE_MAX_BYTES: invalid size: 'huge' (examples: 500MB, 1GiB, 1048576); using 500000000 bytes",
        "HELMET_STORE_MAX_AGE: invalid duration: 'forever'; using 14d",
    ]
    store.close()


def test_new_store_schema(store_path: Path) -> None:
    Store.open(store_path).close()
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"logs", "logs_fts", "sessions", "spans", "logs_session_ts", "logs_event_ts"} <= names
    assert store_path.stat().st_mode & 0o777 == 0o600
    plan = " ".join(
        str(r[3])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM logs WHERE session_id = 'x' AND ts > 0 ORDER BY ts DESC LIMIT 5"
        )
    )
    assert "USING INDEX logs_session_ts" in plan
    conn.close()


@pytest.mark.parametrize("token_counts", [False, True])
def test_full_text_with_and_without_token_counts(store_path: Path, token_counts: bool) -> None:
    """A new store's ``logs_fts`` keeps no token counts per record; one made before (with
    them) is written, searched and pruned alike."""
    from helmet_otel.store.maintenance import delete_sessions
    from helmet_otel.store.model import LogRow

    Store.open(store_path).close()
    conn = sqlite3.connect(store_path, isolation_level=None)
    if token_counts:  # the table as stores made before kept it
        conn.execute("DROP TABLE logs_fts")
        conn.execute(
            "CREATE VIRTUAL TABLE logs_fts USING fts5 (body, content='',"
            " tokenize='unicode61 remove_diacritics 2')"
        )
    conn.close()
    store = Store.open(store_path, max_bytes=0, max_age_s=0)
    bodies = ['"alpha beta"', '"beta\\ngamma"', '"delta"']
    rows = [
        LogRow(1_000 + i, "helmet.request", 9, "INFO", "svc", None, None, b, session_id=f"s{i % 2}")
        for i, b in enumerate(bodies)
    ]
    assert store.write_logs(rows) and store.dropped == 0
    store.close()
    conn = sqlite3.connect(store_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert ("logs_fts_docsize" in tables) is token_counts

    def found(word: str) -> list[int]:
        query = "SELECT rowid FROM logs_fts WHERE logs_fts MATCH ? ORDER BY rowid"
        return [r[0] for r in conn.execute(query, (word,))]

    assert [found(w) for w in ("alpha", "beta", "gamma", "delta", '"alpha beta"')] == [
        [1], [1, 2], [2], [3], [1]
    ]  # fmt: skip
    assert delete_sessions(store_path, ["s0"]).logs == 2
    assert [found(w) for w in ("alpha", "beta", "gamma", "delta")] == [[], [2], [2], []]
    conn.execute("INSERT INTO logs_fts (logs_fts, rank) VALUES ('integrity-check', 0)")
    conn.close()


def test_migrations_apply_in_order_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == 0
    assert migrate(conn) == SCHEMA_VERSION  # idempotent
    extra = Migration(
        SCHEMA_VERSION + 1, "test column", ("ALTER TABLE logs ADD COLUMN extra TEXT",)
    )
    import helmet_otel.store.schema as schema

    saved = schema.MIGRATIONS, schema.SCHEMA_VERSION
    try:
        schema.MIGRATIONS, schema.SCHEMA_VERSION = (*MIGRATIONS, extra), extra.version  # type: ignore[misc]
        assert migrate(conn) == SCHEMA_VERSION
        assert conn.execute("PRAGMA user_version").fetchone() == (extra.version,)
        assert "extra" in {r[1] for r in conn.execute("PRAGMA table_info(logs)")}
    finally:
        schema.MIGRATIONS, schema.SCHEMA_VERSION = saved  # type: ignore[misc]
    # now the store is newer than this code: refuse to touch it
    with pytest.raises(StoreError, match="newer than this helmet-otel understands"):
        migrate(conn)
    conn.close()
    with pytest.raises(StoreError, match="newer than this helmet-otel understands"):
        connect_reader(path)
    reports: list[str] = []
    store = Store.open(path, report=reports.append)
    assert store.write_logs([]) and not store.write_logs(everything_session_rows())
    assert reports[0].startswith(
        f"cannot write to {path}: the store has schema version {SCHEMA_VERSION + 1}, newer"
    )


def everything_session_rows() -> list:  # type: ignore[type-arg]
    from helmet_otel.store.model import log_row

    return [
        log_row(
            ts=NOW,
            event="helmet.request",
            severity_number=9,
            severity_text="INFO",
            service=None,
            trace_id=None,
            span_id=None,
            body=None,
            has_body=False,
            attributes={},
        )
    ]


def test_fresh_store_created_by_many_processes_at_once(store_path: Path) -> None:
    code = "import sys; from helmet_otel.store import Store; s = Store.open(sys.argv[1]); print(s.degraded); s.close()"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(store_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=REPO,
        )
        for _ in range(6)
    ]
    assert [p.communicate(timeout=30)[0] for p in procs] == ["False\n"] * 6
    conn = sqlite3.connect(store_path)
    assert conn.execute("SELECT value FROM store_meta WHERE key = 'migration.1'").fetchone() == (
        "initial schema",
    )
    conn.close()


def test_exporter_rows_keep_every_attribute(store_path: Path) -> None:
    store = write_store(store_path, [everything_session()], max_bytes=0, max_age_s=0)
    store.close()
    with Reader.open(store_path) as reader:
        entries = reader.logs(LogFilter(errors=True))
        [response, error] = [e for e in entries if e.method == "prompts/get"]
        assert (response.event, response.kind, response.request_id, response.latency_ms) == (
            "helmet.response",
            "error",
            "3",
            1.0,
        )
        assert (response.error_type, response.status_code, response.target, response.size) == (
            "-32602",
            "-32602",
            "greet",
            203,
        )
        assert response.attributes == {
            "error.type": "-32602",
            "gen_ai.prompt.name": "greet",
            "helmet.direction": "server->client",
            "helmet.latency_ms": 1.0,
            "helmet.message.kind": "error",
            "helmet.message.size": 203,
            "helmet.session.id": "s-everything-0001",
            "jsonrpc.request.id": "3",
            "mcp.method.name": "prompts/get",
            "rpc.response.status_code": "-32602",
        }
        assert (response.trace_id, response.span_id) == (
            "0af7651916cd43dd8448eb211c80319c",
            "2000000000000003",
        )
        assert error.event == "helmet.error"
        [root] = [s for s in reader.spans("s-everything-0001") if s.parent_span_id is None]
        assert (root.name, root.kind, root.segment, root.status) == (
            "session",
            "INTERNAL",
            0,
            "UNSET",
        )


def test_unexpected_attribute_types_survive(store_path: Path) -> None:
    odd = Session(
        "odd",
        "svc",
        9,
        [
            Rec(
                NOW,
                "helmet.response",
                {
                    "helmet.session.id": "odd",
                    "jsonrpc.request.id": 7,  # an int where a string is expected
                    "helmet.latency_ms": 12,  # an int where a float is expected
                    "tags": ("a", "b"),
                    "helmet.exit.status": "signal 9",
                },
                body={"nested": {"deep": [1, 2.5, None, True]}, "bytes": "x"},
            )
        ],
        [],
    )
    write_store(store_path, [odd], max_bytes=0, max_age_s=0).close()
    with Reader.open(store_path) as reader:
        [entry] = reader.logs(LogFilter())
        assert (entry.request_id, entry.latency_ms) == ("7", 12.0)  # filterable columns
        assert entry.attributes == {  # and the record as it arrived
            "helmet.exit.status": "signal 9",
            "helmet.latency_ms": 12,
            "helmet.session.id": "odd",
            "jsonrpc.request.id": 7,
            "tags": ["a", "b"],
        }
        assert entry.body == {"nested": {"deep": [1, 2.5, None, True]}, "bytes": "x"}


def test_exporters_after_shutdown_count_instead_of_raising(store_path: Path) -> None:
    store = Store.open(store_path)
    logs, spans = StoreLogExporter(store), StoreSpanExporter(store)
    logs.shutdown()
    spans.shutdown()
    assert logs.export([object()]) == LogRecordExportResult.FAILURE  # type: ignore[list-item]
    assert spans.export([object(), object()]) == SpanExportResult.FAILURE  # type: ignore[list-item]
    assert (store.dropped_logs, store.dropped_spans) == (1, 2)
    fresh = StoreLogExporter(store)
    assert fresh.export([object()]) == LogRecordExportResult.FAILURE  # type: ignore[list-item]  # not a record
    assert store.dropped_logs == 2
    assert fresh.force_flush() is True
    store.close()
    assert fresh.export([]) == LogRecordExportResult.SUCCESS
    pipe = Pipeline(store)
    pipe.emit(everything_session())  # a closed store drops and counts
    pipe.shutdown()
    assert store.dropped == 2 + 2 + 13 + 9


def test_redacted_values_never_reach_the_file(store_path: Path) -> None:
    """The worker scrubs before export; the store must keep the markers and nothing else of
    the secret: not in the table, not in the full-text index, not in the WAL."""
    redactor = Redactor()
    params = {
        "name": "search",
        "arguments": {"query": "weather", "api_key": SECRET, "note": f"Bearer {SECRET}"},
    }
    scrubbed = redactor.scrub(params)
    assert SECRET not in repr(scrubbed)
    session = everything_session()
    session.records[4].body = scrubbed
    store = write_store(store_path, [session], max_bytes=0, max_age_s=0)
    raw = b"".join(
        p.read_bytes() for p in store_path.parent.iterdir() if p.name.startswith("store.db")
    )
    store.close()
    assert SECRET.encode() not in raw
    markers = set(re.findall(r"\[REDACTED[^\]]*\]", repr(scrubbed)))
    assert len(markers) == 2
    for marker in markers:
        assert marker.encode() in raw
    with Reader.open(store_path) as reader:
        assert [e.request_id for e in reader.logs(LogFilter(grep="REDACTED"))] == ["1"]
        assert reader.logs(LogFilter(grep=SECRET)) == []


@pytest.mark.parametrize("count", [1, 7, 171, 512])
def test_batches_of_any_size_keep_every_row_in_order(store_path: Path, count: int) -> None:
    """The writer inserts many rows per statement (chunks of 128, 32, 8, 1): every row of a
    batch lands once, in order, with its full-text and span-id entries under its own id."""
    from helmet_otel.store.model import LogRow, SpanRow

    store = Store.open(store_path, max_bytes=0, max_age_s=0)
    logs = [
        LogRow(
            ts=1_000 + i,
            event="helmet.request",
            severity_number=9,
            severity_text="INFO",
            service="svc",
            trace_id=f"{i + 1:032x}",
            span_id=f"{i + 1:016x}",
            body=f'{{"word":"w{i}x"}}',
            attrs={"n": i},
            session_id="s",
            request_id=str(i),
        )
        for i in range(count)
    ]
    spans = [
        SpanRow(
            f"{i + 1:032x}",
            f"{i + 1:016x}",
            None,
            f"op{i}",
            "INTERNAL",
            1_000 + i,
            2_000 + i,
            "UNSET",
            None,
            "s",
            0,
            "svc",
            {"n": i},
            [],
        )
        for i in range(count)
    ]
    assert store.write_logs(logs) and store.write_spans(spans)
    assert (store.written_logs, store.written_spans, store.dropped) == (count, count, 0)
    store.close()
    conn = sqlite3.connect(store_path)
    rows = conn.execute("SELECT id, ts, request_id, attrs FROM logs ORDER BY id").fetchall()
    assert rows == [(i + 1, 1_000 + i, str(i), f'{{"n":{i}}}') for i in range(count)]
    for i in sorted({0, count // 2, count - 1}):
        found = conn.execute("SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?", (f"w{i}x",))
        assert found.fetchall() == [(i + 1,)]
        found = conn.execute(
            "SELECT rowid FROM logs_spans WHERE logs_spans MATCH ?", (f'"{i + 1:016x}"',)
        )
        assert found.fetchall() == [(i + 1,)]
    spans_back = conn.execute("SELECT span_id, name, start_ts FROM spans ORDER BY id").fetchall()
    assert spans_back == [(f"{i + 1:016x}", f"op{i}", 1_000 + i) for i in range(count)]
    conn.close()


def test_the_joint_store_export_answers_per_batch(store_path: Path) -> None:
    """The worker's one store thread: a log batch and a span batch in one transaction, and a
    result for each (a span that cannot be converted fails the span batch, not the logs)."""
    from opentelemetry.sdk.resources import Resource

    from helmet_otel.store import StoreExporter
    from helmet_otel.store.records import Log, Origin, Span

    origin = Origin(Resource({}), None, "svc")
    logs = [
        Log(
            1_000 + i,
            0,
            7,
            8 + i,
            1,
            9,
            "INFO",
            "helmet.request",
            {"n": i},
            {"helmet.session.id": "s"},
            origin,
        )
        for i in range(3)
    ]
    good = Span("op", 7, 100, 1, 0, 1, 1_000, {"helmet.session.id": "s"}, origin, end=2_000)
    broken = Span("op", 7, 101, 1, 0, 99, 1_000, {}, origin, end=2_000)  # no such kind
    store = Store.open(store_path, max_bytes=0, max_age_s=0)
    exporter = StoreExporter(store)
    assert exporter.export([], []) == (True, True)
    assert exporter.export(logs, [good, broken]) == (True, False)
    assert exporter.export(logs[:1], [good]) == (True, True)
    assert (store.written_logs, store.written_spans, store.dropped_spans) == (4, 2, 1)
    store.close()
    assert exporter.export(logs, [good]) == (False, False)  # closed: dropped and counted
    assert (store.dropped_logs, store.dropped_spans) == (3, 2)
    conn = sqlite3.connect(store_path)
    assert conn.execute("SELECT count(*) FROM logs").fetchone() == (4,)
    assert conn.execute("SELECT span_id, name FROM spans").fetchall() == [
        ("0000000000000064", "op"),
        ("0000000000000064", "op"),
    ]
    conn.close()


@pytest.mark.parametrize("limit", [999, 40])
def test_rows_per_statement_keep_within_the_sqlite_parameter_limit(limit: int) -> None:
    """SQLite before 3.32 allows 999 parameters per statement: 128 rows of 20 columns would
    fail every write there, so the chunks shrink to the connection's limit."""
    from helmet_otel.store.writer import insert_rows

    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    columns = [f"c{i}" for i in range(20)]
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {', '.join(columns)})")
    rows = [tuple(r * 100 + c for c in range(20)) for r in range(171)]
    insert_rows(conn, f"INSERT INTO t ({', '.join(columns)}) VALUES ", 20, rows)
    assert conn.execute(f"SELECT {', '.join(columns)} FROM t ORDER BY id").fetchall() == rows
