"""`--store PATH` naming a directory: every command says so, not "disk I/O error"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helmet_otel.store import Store
from tests.store.conftest import REPO, cli_argv, cli_env, run_cli

PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
PONG = b'{"jsonrpc":"2.0","id":1,"result":{}}\n'
SERVER = (sys.executable, str(REPO / "tests" / "servers" / "misbehaving.py"), "plain")


def _what(path: Path) -> str:
    return (
        "it is a directory, not a store file (--store and HELMET_STORE name the database "
        f"file itself, e.g. {path / 'store.db'})"
    )


@pytest.mark.parametrize(
    "command",
    [("logs",), ("logs", "--follow"), ("sessions",), ("stats",), ("trace", "abc")],
    ids=lambda c: " ".join(c),
)
def test_viewer_commands_say_the_store_is_a_directory(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    r = run_cli(*command, "--store", str(tmp_path))
    assert (r.code, r.out, r.err) == (
        1,
        "",
        f"helmet-otel {command[0]}: error: cannot read the store at {tmp_path}: "
        f"{_what(tmp_path)}\n",
    )


def test_import_into_a_directory_fails_even_with_nothing_to_import(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ndjson"
    empty.write_text("", encoding="utf-8")
    r = run_cli("logs", "--import", str(empty), "--store", str(tmp_path))
    assert (r.code, r.out, r.err) == (
        1,
        "",
        f"helmet-otel logs: error: cannot write to {tmp_path}: {_what(tmp_path)}\n",
    )


def test_writer_reports_a_directory_once(tmp_path: Path) -> None:
    reports: list[str] = []
    store = Store.open(tmp_path, max_bytes=0, max_age_s=0, report=reports.append)
    assert store.degraded
    assert store.write_logs([]) is True
    store.close()
    assert reports == [
        f"cannot write to {tmp_path}: {_what(tmp_path)}; telemetry records are being dropped "
        "and counted (MCP traffic is not affected)"
    ]


def _proxy(store: Path) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [*cli_argv("--store", str(store), "--"), *SERVER],
        input=PING,
        capture_output=True,
        env=cli_env(),
        cwd=REPO,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (0, PONG), proc.stderr
    return proc


def _helmet_lines(stderr: bytes) -> list[str]:
    # the wrapped server's own stderr ("pid N") is relayed too
    return [line for line in stderr.decode().splitlines() if line.startswith("helmet-otel")]


def test_proxy_says_the_store_is_a_directory(tmp_path: Path) -> None:
    proc = _proxy(tmp_path)
    assert (
        f"helmet-otel: store: cannot write to {tmp_path}: {_what(tmp_path)}; telemetry records "
        "are being dropped and counted (MCP traffic is not affected)"
    ) in _helmet_lines(proc.stderr)


def test_proxy_says_what_is_wrong_with_the_store_once(tmp_path: Path) -> None:
    proc = _proxy(tmp_path)
    report, summary = _helmet_lines(proc.stderr)
    assert report == (
        f"helmet-otel: store: cannot write to {tmp_path}: {_what(tmp_path)}; telemetry records "
        "are being dropped and counted (MCP traffic is not affected)"
    )
    # ... and at the end, what that cost
    assert summary.startswith("helmet-otel: telemetry dropped "), summary
    assert "store_logs_export_failed" in summary, summary
