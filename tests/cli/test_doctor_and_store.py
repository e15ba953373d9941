"""``helmet-otel doctor`` against the real OTLP receiver (up, answering 500, down) and a real
store; ``helmet-otel store info | prune | delete | vacuum`` on a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helmet_otel.cli.main import main
from helmet_otel.store.query import Reader
from tests.otlp_receiver import OTLPReceiver
from tests.store.scenario import BASE_NS, everything_session, write_store

DAY = 86_400 * 1_000_000_000


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("HELMET_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_COLOR", "1")


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    sessions = [
        everything_session("s-old-0001", base_ns=BASE_NS),
        everything_session("s-new-0002", base_ns=BASE_NS + 2 * DAY, trace_id=0xAB),
    ]
    write_store(path, sessions, max_bytes=0, max_age_s=0).close()
    return path


def _doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["doctor", *args])
    return code, capsys.readouterr().out.splitlines()


def _checks(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(("ok", "FAIL", "skip"))]


def test_doctor_passes_with_a_collector_that_takes_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    config = tmp_path / "helmet.toml"
    config.write_text('capture = "metadata"\nmax-body = "8KiB"\n')
    monkeypatch.setenv("HELMET_MAX_BODY", "4096")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr3t-value")
    with OTLPReceiver() as rx:
        code, lines = _doctor(
            capsys, "--store", str(store), "--config", str(config), "--otlp-endpoint", rx.endpoint
        )
        answered = sorted(rx.requests)
    assert code == 0, lines
    text = "\n".join(lines)
    # where each value came from: flag > environment > config file > default
    assert f"  store               {store}  (flag --store)" in lines
    assert "  max-body            4096  (env HELMET_MAX_BODY)" in lines
    assert f"  capture             metadata  (config file {config}: capture)" in lines
    assert "  grace               2.0  (default)" in lines
    assert "  OTEL_EXPORTER_OTLP_HEADERS = <redacted>  (environment)" in lines
    assert "s3cr3t" not in text
    checks = _checks(lines)
    assert checks[0] == "ok    configuration: every value is valid"
    assert checks[1].startswith(f"ok    store: {store}: ")
    assert (
        "schema 6, 26 records, 2 sessions, 2026-11-18T11:06:40Z .. 2026-11-20T11:06:41Z"
        in (checks[1])
    )
    assert checks[1].endswith("integrity ok")
    assert [c.split(" [")[0] for c in checks[2:]] == [
        f"ok    otlp {s}: {rx.endpoint}/v1/{s}" for s in ("logs", "metrics", "traces")
    ]
    assert all("(headers: x-api-key) answered 200 OK in " in c for c in checks[2:])
    # one real (empty) export per signal, nothing recorded by the backends
    assert answered == [("logs", 200), ("metrics", 200), ("traces", 200)]
    assert rx.counts == {"spans": 0, "logs": 0, "data_points": 0}


def test_doctor_fails_when_the_collector_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with OTLPReceiver(status=500) as rx:
        code, lines = _doctor(capsys, "--no-store", "--otlp-endpoint", rx.endpoint)
    assert code == 1
    checks = _checks(lines)
    assert checks[1] == "skip  store: off (no-store from flag --no-store)"
    assert [c.split(" in ")[0] for c in checks[2:]] == [
        f"FAIL  otlp {s}: {rx.endpoint}/v1/{s} [http/protobuf] answered 500 Internal Server Error"
        for s in ("logs", "metrics", "traces")
    ]


def test_doctor_fails_when_the_collector_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with OTLPReceiver() as rx:
        endpoint = rx.endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"{endpoint}/custom/logs")
    code, lines = _doctor(capsys, "--store", str(tmp_path / "new" / "store.db"))
    assert code == 1
    checks = _checks(lines)
    assert checks[1].startswith(f"ok    store: {tmp_path / 'new' / 'store.db'} does not exist yet")
    assert checks[2].startswith(
        f"FAIL  otlp logs: {endpoint}/custom/logs [http/protobuf] no answer: Connection refused"
    )
    assert len(checks) == 3  # only the signal with an endpoint


def test_doctor_reports_a_bad_value_and_a_quiet_setup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HELMET_GRACE", "soon")
    code, lines = _doctor(capsys)
    assert (code, lines) == (
        1,
        [
            "FAIL  configuration: HELMET_GRACE: bad value 'soon': expected a duration of 0 or "
            "more such as 2, 0.5 or 500ms"
        ],
    )
    monkeypatch.delenv("HELMET_GRACE")
    code, lines = _doctor(capsys, "--no-store")
    assert code == 0
    assert _checks(lines)[2] == (
        "skip  otlp: no endpoint (--otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT): local store only"
    )


def test_doctor_fails_on_a_corrupt_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a database" * 100)
    code, lines = _doctor(capsys, "--store", str(path))
    assert code == 1
    assert _checks(lines)[1].startswith(f"FAIL  store: cannot read the store at {path}: ")


def _sessions(path: Path) -> list[str]:
    with Reader.open(path) as reader:
        return sorted(s.session_id for s in reader.sessions())


def _counts(path: Path) -> tuple[int, int]:
    with Reader.open(path) as reader:
        logs = reader.run("SELECT count(*) FROM logs")[0][0]
        spans = reader.run("SELECT count(*) FROM spans")[0][0]
        fts = reader.run("SELECT count(*) FROM logs_fts WHERE logs_fts MATCH 'search'")[0][0]
    assert isinstance(logs, int) and isinstance(spans, int) and isinstance(fts, int)
    return logs, spans


def test_store_info_prune_delete_vacuum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _store(tmp_path)
    assert main(["store", "info", "--store", str(path), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {k: info[k] for k in ("records", "spans", "sessions", "schema_version")} == {
        "records": 26, "spans": 18, "sessions": 2, "schema_version": 6,
    }  # fmt: skip
    assert info["oldest"] == "2026-11-18T11:06:40.000000000Z"
    assert info["bytes"] == info["file_bytes"] + info["wal_bytes"] > 0
    assert main(["store", "info", "--store", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"path       {path}"

    # prune: the older session goes, records, spans and row
    assert main(["store", "prune", "--store", str(path), "--older-than", "2026-11-19"]) == 0
    assert capsys.readouterr().err == (
        "helmet-otel: deleted 13 records, 9 spans and 1 sessions older than "
        f"2026-11-19T00:00:00.000000000Z from {path}\n"
    )
    assert _sessions(path) == ["s-new-0002"]
    assert _counts(path) == (13, 9)
    # the full-text index lost the pruned records' entries too
    with Reader.open(path) as reader:
        matched = reader.run("SELECT rowid FROM logs_fts WHERE logs_fts MATCH 'search'")
        ids = {r[0] for r in reader.run("SELECT id FROM logs")}
    assert {r[0] for r in matched} <= ids

    # delete a session by reference
    assert main(["store", "delete", "--store", str(path), "-s", "last"]) == 0
    assert capsys.readouterr().err == (
        f"helmet-otel: deleted session s-new-0002: 13 records, 9 spans from {path}\n"
    )
    assert _sessions(path) == [] and _counts(path) == (0, 0)
    assert main(["store", "delete", "--store", str(path), "-s", "nope"]) == 1
    assert "no session matching 'nope'" in capsys.readouterr().err

    assert main(["store", "vacuum", "--store", str(path)]) == 0
    assert capsys.readouterr().err.startswith(f"helmet-otel: vacuumed {path}: ")
    assert main(["store", "info", "--store", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["free_bytes"] == 0

    with pytest.raises(SystemExit) as usage:
        main(["store", "prune", "--store", str(path)])
    assert usage.value.code == 2
    assert main(["store", "info", "--store", str(tmp_path / "none.db")]) == 1
