"""``logs --import`` takes what ``logs`` and ``trace --format json`` exported, says clearly what
it takes otherwise, labels imported sessions in ``trace``, and shows progress on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

from tests.store.conftest import Cli, cli_argv, cli_env, run_cli

SID = "s-everything-0001"


def _export(cli: Cli, tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    result = cli(*args, "-o", str(out))
    assert result.code == 0, result.err
    return out


def test_logs_json_calls_and_trace_exports_import(cli: Cli, tmp_path: Path) -> None:
    records = _export(cli, tmp_path, "records.json", "logs", "--format", "json")
    calls = _export(cli, tmp_path, "calls.json", "logs", "--calls", "--format", "json")
    trace = _export(cli, tmp_path, "trace.json", "trace", SID, "--format", "json")

    # a json array of records: the same records come back out
    one = tmp_path / "one.db"
    r = run_cli("logs", "--import", str(records), "--store", str(one))
    assert r.err == f"helmet-otel: imported 13 records into {one}\n"
    assert run_cli("logs", "--format", "json", "--store", str(one)).out == records.read_text()
    # ... and its session has no spans: trace says it was imported, and what to import
    t = run_cli("trace", SID, "--store", str(one))
    assert t.code == 1
    assert t.err == (
        f"helmet-otel trace: error: session {SID} was imported from a log export: its records "
        f"are in the store (helmet-otel logs -s {SID}), its spans are not (log exports hold no "
        "spans; import a `helmet-otel trace --format json` export for them)\n"
    )

    # the trace export brings the spans: the same tree, labelled as imported
    r = run_cli("logs", "--import", str(trace), "--store", str(one))
    assert r.err == f"helmet-otel: imported 9 spans into {one}\n"
    again = run_cli("logs", "--import", str(trace), "--store", str(one))
    assert (
        again.err == f"helmet-otel: imported 0 spans into {one}; skipped 9 already in the store\n"
    )
    original = json.loads(trace.read_text())
    copied = json.loads(run_cli("trace", SID, "--format", "json", "--store", str(one)).out)
    assert copied.pop("imported") is True
    assert copied == original
    table = run_cli("trace", SID, "--store", str(one)).out
    assert table.splitlines()[0].endswith(f"session {SID}  (imported)")

    # a calls export: each call's request and answer
    two = tmp_path / "two.db"
    r = run_cli("logs", "--import", str(calls), "--store", str(two))
    assert r.code == 0, r.err
    assert r.err == f"helmet-otel: imported 8 records into {two}\n"
    assert run_cli("logs", "--calls", "--format", "json", "--store", str(two)).out == (
        calls.read_text()
    )


def test_what_is_not_an_export_is_named(cli: Cli, tmp_path: Path) -> None:
    stats = _export(cli, tmp_path, "stats.json", "stats", "--format", "json")
    sessions = _export(cli, tmp_path, "sessions.ndjson", "sessions", "--format", "ndjson")
    accepted = (
        "--import takes what `helmet-otel logs --format ndjson|json` wrote (records, or calls "
        "with --calls) or `helmet-otel trace --format json` wrote (spans)"
    )
    store = tmp_path / "s.db"
    r = run_cli("logs", "--import", str(stats), "--store", str(store))
    assert (r.code, r.err) == (
        1,
        f"helmet-otel logs: error: {stats}: this is a stats export; {accepted}\n",
    )
    r = run_cli("logs", "--import", str(sessions), "--store", str(store))
    assert (r.code, r.err) == (
        1,
        f"helmet-otel logs: error: {sessions}: this is a sessions export; {accepted}\n",
    )
    notjson = tmp_path / "x.txt"
    notjson.write_text("hello\n")
    r = run_cli("logs", "--import", str(notjson), "--store", str(store))
    assert r.code == 1 and r.err.startswith(f"helmet-otel logs: error: {notjson}: not JSON (")
    assert r.err.endswith(f"; {accepted}\n")
    assert not store.exists()


def _on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; what it wrote there."""
    main, side = pty.openpty()
    proc = subprocess.Popen(
        cli_argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=side,
        env=cli_env(),
    )  # fmt: skip
    os.close(side)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=60), b"".join(chunks).decode()


def test_long_import_and_export_show_progress_on_a_terminal(tmp_path: Path) -> None:
    big = tmp_path / "big.ndjson"
    record = {"time_unix_nano": 0, "event": "helmet.request", "session_id": "s-bulk",
              "attributes": {"helmet.session.id": "s-bulk"}, "body": {"n": 0}}  # fmt: skip
    with big.open("w") as out:
        for n in range(60_000):
            record["time_unix_nano"] = 1_795_000_000_000_000_000 + n
            record["body"] = {"n": n}
            out.write(json.dumps(record) + "\n")
    store = tmp_path / "bulk.db"
    code, err = _on_a_terminal("logs", "--import", str(big), "--store", str(store))
    assert code == 0, err
    assert "\rhelmet-otel: importing " in err and "/60000 records" in err
    assert err.endswith(f"\r\x1b[Khelmet-otel: imported 60000 records into {store}\r\n")
    copy = tmp_path / "copy.ndjson"
    code, err = _on_a_terminal("logs", "--format", "ndjson", "-o", str(copy), "--store", str(store))
    assert code == 0, err
    assert "\rhelmet-otel: exporting " in err
    assert err.endswith(f"\r\x1b[Khelmet-otel: wrote 60000 records to {copy}\r\n")
    assert len(copy.read_text().splitlines()) == 60_000
