"""`logs --import` is idempotent: a record already in the store is skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path

from helmet_otel.store import Store
from helmet_otel.store.importer import import_logs
from helmet_otel.store.model import LogRow, log_row
from helmet_otel.store.query import LogFilter, Reader
from tests.store.conftest import Cli, run_cli


def _export(cli: Cli, target: Path) -> str:
    r = cli("logs", "--format", "ndjson", "-o", str(target))
    assert (r.code, r.err) == (0, "")
    return target.read_text(encoding="utf-8")


def test_importing_a_file_twice_skips_what_is_there(
    cli: Cli, everything_store: Path, tmp_path: Path
) -> None:
    exported = _export(cli, tmp_path / "all.ndjson")
    other = tmp_path / "other" / "store.db"
    first = run_cli("logs", "--import", str(tmp_path / "all.ndjson"), "--store", str(other))
    assert (first.code, first.err) == (0, f"helmet-otel: imported 13 records into {other}\n")
    second = run_cli("logs", "--import", str(tmp_path / "all.ndjson"), "--store", str(other))
    assert (second.code, second.out, second.err) == (
        0,
        "",
        f"helmet-otel: imported 0 records into {other}; skipped 13 already in the store\n",
    )
    # round trip: export -> import (twice) -> export gives the same bytes
    again = run_cli("logs", "--format", "ndjson", "--store", str(other))
    assert again.out == exported
    [session] = json.loads(run_cli("sessions", "--format", "json", "--store", str(other)).out)
    assert (session["requests"], session["errors"], session["status"]) == (4, 2, "ended")


def test_importing_into_the_store_it_came_from_adds_nothing(
    cli: Cli, everything_store: Path, tmp_path: Path
) -> None:
    exported = _export(cli, tmp_path / "all.ndjson")
    r = run_cli("logs", "--import", str(tmp_path / "all.ndjson"), "--store", str(everything_store))
    assert (r.code, r.err) == (
        0,
        f"helmet-otel: imported 0 records into {everything_store}; "
        "skipped 13 already in the store\n",
    )
    assert cli("logs", "--format", "ndjson").out == exported


def test_a_partly_new_file_imports_only_the_new_records(
    cli: Cli, everything_store: Path, tmp_path: Path
) -> None:
    lines = _export(cli, tmp_path / "all.ndjson").splitlines(keepends=True)
    # one record changed in its body, one in an attribute: both are new records
    changed_body = lines[4].replace('"weather in Paris"', '"weather in Lyon"')
    changed_attr = lines[5].replace('"helmet.message.size":201', '"helmet.message.size":202')
    assert changed_body != lines[4] and changed_attr != lines[5]
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text("".join([*lines[:3], changed_body, changed_attr]), encoding="utf-8")
    r = run_cli("logs", "--import", str(mixed), "--store", str(everything_store))
    assert (r.code, r.err) == (
        0,
        f"helmet-otel: imported 2 records into {everything_store}; "
        "skipped 3 already in the store\n",
    )
    assert len(cli("logs", "--format", "ndjson").out.splitlines()) == 15


def _row(i: int, body: object) -> LogRow:
    return log_row(
        ts=1_795_000_000_000_000_000 + i,
        event="helmet.notification",
        severity_number=9,
        severity_text="INFO",
        service="x",
        trace_id=None,
        span_id="00000000000000aa",
        body=body,
        has_body=True,
        attributes={"helmet.session.id": "s"},
    )


def test_identical_records_match_one_for_one_across_batches(store_path: Path) -> None:
    same = _row(1, {"progress": 1})
    store = Store.open(store_path, max_bytes=0, max_age_s=0)
    # a file holding the same record three times, into a store holding it twice
    assert store.write_logs([same, same])
    assert import_logs(store, [same, _row(2, "x"), same, same], batch=1) == (2, 2)
    assert import_logs(store, [same, _row(2, "x"), same, same], batch=3) == (0, 4)
    # an export that holds two identical records imports as two, and only once
    fresh = store_path.with_name("fresh.db")
    other = Store.open(fresh, max_bytes=0, max_age_s=0)
    assert import_logs(other, [same, same]) == (2, 0)
    assert import_logs(other, [same, same]) == (0, 2)
    other.close()
    store.close()
    with Reader.open(store_path) as reader:
        assert [e.ts for e in reader.logs(LogFilter())] == [same.ts] * 3 + [same.ts + 1]
        assert reader.logs(LogFilter(grep="progress"), limit=10)[0].body == {"progress": 1}
        # (a new store's logs_fts keeps no token counts: it is counted through MATCH)
        fts = reader.conn.execute(
            "SELECT count(*) FROM logs_fts WHERE logs_fts MATCH 'progress OR x'"
        ).fetchone()
    assert fts == (4,)  # skipped records add no full-text entries
    with Reader.open(fresh) as reader:
        assert len(reader.logs(LogFilter())) == 2
