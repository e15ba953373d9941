"""The small faults: a huge ``--since`` is the store's beginning, not a traceback; exports and
the store's directories are private whatever the umask; a bad ``--otlp-endpoint`` is one line
and exit 2 at start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helmet_otel.store.schema import connect_writer
from tests.e2e.helpers import MISBEHAVING, REPO_ROOT, clean_env, proxy_argv


def _cli(*args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run(
        [sys.executable, "-m", "helmet_otel", *args], capture_output=True, text=True,
        env=clean_env(), cwd=REPO_ROOT, timeout=30, input="", preexec_fn=set_umask,
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "store.db"
    ping = '{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
    argv = proxy_argv([*MISBEHAVING, "plain"], "--store", str(path), store=True)
    done = subprocess.run(argv, input=ping, capture_output=True, text=True, env=clean_env(),
                          cwd=REPO_ROOT, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


@pytest.mark.parametrize("command", ["logs", "stats"])
@pytest.mark.parametrize("since", ["9999999999999999999d", "9999-12-31"])
def test_a_huge_since_is_the_stores_beginning(store: Path, command: str, since: str) -> None:
    done = _cli(command, "--since", since, "--store", str(store), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "OverflowError" not in done.stderr
    if since.endswith("d"):  # that long ago: everything
        assert "ping" in done.stdout


def test_an_export_and_the_store_directories_are_private_under_umask_0(
    store: Path, tmp_path: Path
) -> None:
    exported = tmp_path / "export.ndjson"
    done = _cli("logs", "--store", str(store), "-o", str(exported), "--format", "ndjson",
                umask=0)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    old = os.umask(0)
    try:
        deep = tmp_path / "a" / "b" / "c" / "store.db"
        connect_writer(deep).close()
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(deep.stat().st_mode) == 0o600


@pytest.mark.parametrize("endpoint", ["notaurl", "ftp://collector", "http://", "http://h:99999"])
def test_a_bad_otlp_endpoint_is_one_line_and_exit_2(endpoint: str) -> None:
    done = _cli("--otlp-endpoint", endpoint, "--no-store", *MISBEHAVING, "plain")
    assert done.returncode == 2
    assert done.stderr == (
        f"helmet-otel: error: --otlp-endpoint: bad value {endpoint!r}: expected an http:// or "
        "https:// URL such as http://localhost:4318\n"
    )
