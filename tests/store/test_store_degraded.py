"""A store that is locked too long, corrupt, read-only or on a full disk: the pipeline goes on,
the problem is said once, and what could not be written is counted. Each through both SQLite
libraries a writer can use (``store/engine.py``): the worker's apsw must fail the same way."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from opentelemetry.sdk._logs.export import LogRecordExportResult

from helmet_otel.store import Store, StoreLogExporter
from helmet_otel.store.engine import ENGINES, Engine
from helmet_otel.store.model import log_row
from tests.store.conftest import REPO, cli_env
from tests.store.scenario import Pipeline, everything_session, write_store


def _rows(n: int) -> list:  # type: ignore[type-arg]
    return [
        log_row(
            ts=1_795_000_000_000_000_000 + i,
            event="helmet.request",
            severity_number=9,
            severity_text="INFO",
            service="x",
            trace_id=None,
            span_id=None,
            body={"i": i},
            has_body=True,
            attributes={"helmet.session.id": "s"},
        )
        for i in range(n)
    ]


# Holds the store's write lock until its stdin closes. A process of its own: POSIX locks do not
# exclude each other within one process, and apsw's SQLite cannot see sqlite3's.
HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_locked_too_long_drops_and_counts_then_recovers(store_path: Path, engine: Engine) -> None:
    reports: list[str] = []
    store = Store.open(
        store_path,
        max_bytes=0,
        max_age_s=0,
        lock_timeout_s=0.3,
        report=reports.append,
        engine=engine,
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == "held\n"
        assert store.write_logs(_rows(5)) is False
        assert store.write_logs(_rows(7)) is False
        assert (store.dropped_logs, store.degraded) == (12, True)
        assert reports == [
            f"cannot write to {store_path}: the database stayed locked by another process too long; "
            "telemetry records are being dropped and counted (MCP traffic is not affected)"
        ]
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    assert store.write_logs(_rows(3)) is True
    assert (store.dropped, store.written_logs, store.degraded) == (12, 3, False)
    store.close()
    assert len(reports) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_corrupt_store_never_raises_into_the_sdk(store_path: Path, engine: Engine) -> None:
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(b"definitely not SQLite " * 500)
    reports: list[str] = []
    store = Store.open(store_path, report=reports.append, engine=engine)
    assert store.degraded
    exporter = StoreLogExporter(store)
    pipe = Pipeline(store)
    pipe.emit(everything_session())  # 13 records, 9 spans through the SDK: nothing raises
    pipe.shutdown()
    assert (store.dropped_logs, store.dropped_spans, store.dropped) == (13, 9, 22)
    assert exporter.export([]) == LogRecordExportResult.SUCCESS
    assert reports == [
        f"cannot write to {store_path}: the store file is corrupt or not a database "
        "(file is not a database); telemetry records are being dropped and counted "
        "(MCP traffic is not affected)"
    ]
    assert store_path.read_bytes().startswith(b"definitely not SQLite")  # left alone


# Runs in a child process: drop privileges / limit file size, then write through the exporter.
CHILD = r"""
import json, os, resource, signal, sys
from helmet_otel.store import Store
from tests.store.scenario import Pipeline, bulk_session, BASE_NS

mode, path, engine = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "readonly" and os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
reports = []
store = Store.open(path, max_bytes=0, max_age_s=0, report=reports.append, engine=engine)
if mode == "full":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = os.path.getsize(path) + 64 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
pipe = Pipeline(store)
for i in range(20):
    pipe.emit(bulk_session(f"child-{i}", 50, base_ns=BASE_NS + i * 10**9))
pipe.shutdown()
print(json.dumps({"dropped": store.dropped_logs, "written": store.written_logs, "reports": reports}))
"""


def _child(mode: str, path: Path, engine: Engine) -> dict[str, object]:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), engine],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("engine", ENGINES)
def test_read_only_store(tmp_path: Path, engine: Engine) -> None:
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    os.chmod(tmp_path, 0o755)
    os.chmod(base, 0o755)
    path = base / "store.db"
    write_store(path, [everything_session()], max_bytes=0, max_age_s=0).close()
    if os.geteuid() != 0:  # as root the child drops to nobody instead
        os.chmod(path, 0o444)
        os.chmod(base, 0o555)
    else:
        os.chmod(path, 0o644)
    try:
        result = _child("readonly", path, engine)
    finally:
        os.chmod(base, 0o755)
    assert result["written"] == 0
    assert result["dropped"] == 20 * 102
    [report] = result["reports"]  # type: ignore[misc]
    assert report.startswith(f"cannot write to {path}: the store is not writable (")
    assert report.endswith(
        "); telemetry records are being dropped and counted (MCP traffic is not affected)"
    )
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM logs").fetchone() == (13,)
    conn.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_full_disk(store_path: Path, engine: Engine) -> None:
    Store.open(store_path, max_bytes=0, max_age_s=0).close()
    result = _child("full", store_path, engine)
    assert 0 < result["written"] < 20 * 102  # type: ignore[operator]
    assert result["written"] + result["dropped"] == 20 * 102  # type: ignore[operator]
    [report] = result["reports"]  # type: ignore[misc]
    assert report.startswith(
        f"cannot write to {store_path}: cannot write the store file: disk full or failing ("
    )
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("SELECT count(*) FROM logs").fetchone() == (result["written"],)
    conn.close()
