"""Retention: the age cap and the size cap delete the oldest data, while writing."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helmet_otel.store import Store
from helmet_otel.store.model import LogRow, log_row
from helmet_otel.store.retention import disk_bytes
from tests.store.conftest import run_cli
from tests.store.scenario import everything_session, write_store


def _counts(path: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(path)
    try:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("logs", "spans", "sessions")
        )
    finally:
        conn.close()


def test_age_cap_deletes_old_sessions_at_open_and_keeps_recent(store_path: Path) -> None:
    now = time.time_ns()
    old = everything_session("old", base_ns=now - 3 * 86400 * 10**9)
    recent = everything_session("recent", base_ns=now - 3600 * 10**9, trace_id=5)
    write_store(store_path, [old, recent], max_bytes=0, max_age_s=0).close()
    assert _counts(store_path) == (26, 18, 2)
    store = Store.open(store_path, max_bytes=0, max_age_s=2 * 86400)
    store.close()
    assert _counts(store_path) == (13, 9, 1)
    r = run_cli("sessions", "--store", str(store_path), "--format", "ndjson")
    assert [json.loads(x)["session_id"] for x in r.out.splitlines()] == ["recent"]
    assert (
        run_cli(
            "logs", "--store", str(store_path), "--grep", "weather", "--format", "csv"
        ).out.count("\n")
        == 2
    )


def test_age_cap_from_environment(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time_ns()
    write_store(
        store_path,
        [
            everything_session("old", base_ns=now - 7200 * 10**9),
            everything_session("new", base_ns=now, trace_id=5),
        ],
        max_bytes=0,
        max_age_s=0,
    ).close()
    monkeypatch.setenv("HELMET_STORE_MAX_AGE", "1h")
    monkeypatch.setenv("HELMET_STORE_MAX_BYTES", "0")
    store = Store.open(store_path)
    assert (store.max_age_s, store.max_bytes) == (3600.0, 0)
    store.close()
    assert _counts(store_path) == (13, 9, 1)


def _bulk(n: int, start: int) -> list[LogRow]:
    return [
        log_row(
            ts=1_795_000_000_000_000_000 + i * 1000,
            event="helmet.response",
            severity_number=9,
            severity_text="INFO",
            service="bulk",
            trace_id=None,
            span_id=None,
            body={
                "content": [
                    {"type": "text", "text": f"row{i} " + "lorem ipsum dolor sit amet " * 12}
                ]
            },
            has_body=True,
            attributes={"helmet.session.id": f"s{i // 500:04d}", "jsonrpc.request.id": str(i)},
        )
        for i in range(start, start + n)
    ]


def test_size_cap_deletes_oldest_and_stays_under_cap(store_path: Path) -> None:
    cap = 3_000_000
    store = Store.open(store_path, max_bytes=cap, max_age_s=0)
    written = 0
    peak = 0
    for _ in range(60):  # ~12 MB of records through a 3 MB store
        assert store.write_logs(_bulk(250, written))
        written += 250
        peak = max(peak, disk_bytes(store_path))
        assert disk_bytes(store_path) <= cap
    assert (store.dropped, store.last_error) == (0, None)
    store.close()
    assert peak > cap * 0.75  # the cap was actually reached
    conn = sqlite3.connect(store_path)
    first, last, count = conn.execute(
        "SELECT min(request_id + 0), max(request_id + 0), count(*) FROM logs"
    ).fetchone()
    assert last == written - 1  # the newest are all there
    assert count == written - first  # a contiguous tail: exactly the oldest were deleted
    assert first > written // 2
    oldest_session = conn.execute("SELECT min(session_id) FROM sessions").fetchone()[0]
    assert oldest_session == f"s{first // 500:04d}"
    conn.close()
    # the full-text index forgot the deleted rows and still finds the kept ones
    gone = run_cli("logs", "--store", str(store_path), "--grep", "row0", "--format", "csv")
    kept = run_cli(
        "logs", "--store", str(store_path), "--grep", f"row{written - 1}", "--format", "csv"
    )
    assert (gone.out.count("\n"), kept.out.count("\n")) == (1, 2)


def test_a_long_idle_store_is_trimmed_over_several_batches(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helmet_otel.store import retention

    write_store(
        store_path,
        [everything_session(f"old-{i}", trace_id=i + 1) for i in range(4)],
        max_bytes=0,
        max_age_s=0,
    ).close()
    assert _counts(store_path) == (52, 36, 4)
    monkeypatch.setattr(retention, "CHUNK", 10)
    monkeypatch.setattr(retention, "MAX_CHUNKS", 2)
    store = Store.open(store_path, max_bytes=0, max_age_s=86400)  # everything is older
    assert _counts(store_path)[0] == 52 - 20  # one call's budget at open
    fresh = _bulk(1, 0)
    fresh[0].ts = time.time_ns()
    remaining = []
    for _ in range(6):
        assert store.write_logs(fresh)
        remaining.append(_counts(store_path))
    store.close()
    assert remaining[0][0] == 52 - 40 + 1
    assert [r[1] for r in remaining] == [36, 36, 16, 0, 0, 0]  # then the spans, 20 a batch
    assert remaining[-1] == (6, 0, 1)  # only the new records and their session are left


def test_old_spans_go_by_session_without_a_start_time_index(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 4 has no spans(start_ts) index: retention finds each session's old spans (and
    those of no session) through spans(session_id, start_ts), in chunks, whatever order they
    were written in."""
    from helmet_otel.store import retention
    from helmet_otel.store.model import SpanRow

    monkeypatch.setattr(retention, "CHUNK", 3)
    store = Store.open(store_path, max_bytes=0, max_age_s=0)
    spans = [
        SpanRow(
            trace_id="0" * 32,
            span_id=f"{i:016x}",
            parent_span_id=None,
            name="s",
            kind="SERVER",
            start_ts=start,
            end_ts=start + 1,
            status="UNSET",
            status_message=None,
            session_id=sid,
            segment=None,
            service=None,
            attrs={},
            links=[],
        )
        # newest first, so the old spans have the highest ids
        for i, (sid, start) in enumerate(
            [(s, t) for t in (900, 500, 100, 50) for s in ("a", "b", None)]
        )
    ]
    assert store.write_spans(spans)
    store.close()
    conn = sqlite3.connect(store_path, isolation_level=None)
    assert (
        conn.execute("SELECT name FROM sqlite_master WHERE name = 'spans_start'").fetchall() == []
    )

    def transact(op: Callable[[sqlite3.Connection], int]) -> int:
        conn.execute("BEGIN IMMEDIATE")
        n = op(conn)
        conn.execute("COMMIT")
        return n

    result = retention.RetentionResult()
    retention.delete_before(transact, 500, result)
    left = conn.execute("SELECT session_id, start_ts FROM spans ORDER BY id").fetchall()
    assert (result.spans, left) == (9, [("a", 900), ("b", 900), (None, 900)])
    conn.close()
