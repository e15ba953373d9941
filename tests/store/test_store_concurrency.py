"""Many writer processes at once, and a writer killed in the middle of a transaction."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.store.conftest import REPO, cli_env, run_cli
from tests.store.scenario import BASE_NS

WRITER = [sys.executable, "-m", "tests.store.scenario", "write"]


def _integrity(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("INSERT INTO logs_fts (logs_fts) VALUES ('integrity-check')")
    finally:
        conn.close()


def test_four_writer_processes_lose_nothing(store_path: Path) -> None:
    """Four processes start together on a store that does not exist yet; two of them commit
    one record per transaction (SimpleLogRecordProcessor), two batch like the worker."""
    procs = [
        subprocess.Popen(
            [
                *WRITER,
                "--store",
                str(store_path),
                "--prefix",
                f"w{n}",
                "--sessions",
                "4",
                "--calls",
                "150",
                "--base-ns",
                str(BASE_NS + n * 10**11),
                *(["--batch"] if n % 2 else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=REPO,
        )
        for n in range(4)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert out.splitlines()[-1] == "written 1208 dropped 0"  # 4 sessions x (2 x 150 + 2)
        assert err == ""
    _integrity(store_path)
    r = run_cli("logs", "--store", str(store_path), "--format", "ndjson")
    records = [json.loads(line) for line in r.out.splitlines()]
    assert len(records) == 4 * 1208
    keys = {
        (rec["session_id"], rec["event"], rec["attributes"].get("jsonrpc.request.id"))
        for rec in records
    }
    assert len(keys) == 4 * 1208
    sessions = json.loads(run_cli("sessions", "--store", str(store_path), "--format", "json").out)
    assert sorted(s["session_id"] for s in sessions) == [
        f"w{n}-{i:03d}" for n in range(4) for i in range(4)
    ]
    assert {s["requests"] for s in sessions} == {150}
    assert {s["status"] for s in sessions} == {"ended"}


KILLED_WRITER = """
import sys, time
from helmet_otel.store import Store
from helmet_otel.store.model import log_row

store = Store.open(sys.argv[1], max_bytes=0, max_age_s=0)
batch = int(sys.argv[2])
for n in range(1000):
    rows = [
        log_row(ts=1_795_000_000_000_000_000 + n * batch + i, event="helmet.request", severity_number=9,
                severity_text="INFO", service="victim", trace_id=None, span_id=None,
                body={"n": n, "i": i, "text": "x" * 200}, has_body=True,
                attributes={"helmet.session.id": "victim", "jsonrpc.request.id": f"{n}.{i}"})
        for i in range(batch)
    ]
    print(f"writing {n}", flush=True)
    assert store.write_logs(rows)
    print(f"committed {n}", flush=True)
"""


def test_writer_killed_mid_transaction_leaves_a_readable_consistent_store(store_path: Path) -> None:
    batch = 20_000  # a transaction takes long enough to be killed inside it
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(store_path), str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO,
    )
    assert proc.stdout is not None
    committed = -1
    for line in proc.stdout:
        if line.startswith("committed"):
            committed = int(line.split()[1])
        if line == "writing 2\n":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert committed == 1
    _integrity(store_path)
    # batch 2 was in flight: it is either absent or complete, never partial
    count = run_cli("logs", "--store", str(store_path), "--format", "csv", "--limit", "0")
    assert count.code == 0, count.err
    rows = len(count.out.splitlines()) - 1
    assert rows in (2 * batch, 3 * batch)
    # the lock died with the process: another writer gets in at once
    r = subprocess.run(
        [
            *WRITER,
            "--store",
            str(store_path),
            "--prefix",
            "after",
            "--calls",
            "3",
            "--lock-timeout",
            "2",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=30,
    )
    assert r.stdout.splitlines()[-1] == "written 8 dropped 0", r.stderr
    _integrity(store_path)
