from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.store.scenario import everything_session, write_store

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELMET_", "OTEL_"))}
    env.pop("NO_COLOR", None)
    env.update(TZ="UTC", COLUMNS="160", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "helmet_otel", *args]


def run_cli(*args: str, stdin: str | None = None, timeout: float = 30, **env: str) -> Result:
    proc = subprocess.run(
        cli_argv(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(**env),
        cwd=REPO,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


Cli = Callable[..., Result]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "store.db"


@pytest.fixture
def everything_store(store_path: Path) -> Path:
    store = write_store(store_path, [everything_session()], max_bytes=0, max_age_s=0)
    assert (store.written_logs, store.written_spans, store.dropped) == (13, 9, 0)
    store.close()
    return store_path


@pytest.fixture
def cli(everything_store: Path) -> Cli:
    """Run a viewer command against the everything store."""

    def run(*args: str, **kw: str) -> Result:
        return run_cli(*args, "--store", str(everything_store), **kw)

    return run


def lines(text: str) -> Sequence[str]:
    return text.splitlines()
