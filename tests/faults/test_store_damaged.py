"""The store's files are overwritten or truncated while a proxy writes: the writer says so
once and counts what it then drops (in the final stderr summary) instead of writing on into
a damaged file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.faults.helpers import call_lines, recorded_proxy

CALLS = 50


def _damage(store: Path, how: str) -> None:
    if how == "db-header":
        with open(store, "r+b") as db:
            db.write(b"\0" * 4096)
    elif how == "db-truncated":
        os.truncate(store, 0)
    else:
        with open(f"{store}-wal", "r+b") as wal:
            wal.write(os.urandom(64))


@pytest.mark.parametrize("how", ["db-header", "db-truncated", "wal-header"])
def test_a_store_damaged_under_the_writer_is_reported_once_and_counted(
    how: str, tmp_path: Path
) -> None:
    store = tmp_path / "store.db"
    with recorded_proxy(store, CALLS) as proxy:
        _damage(store, how)
        proxy.write(call_lines(1000, CALLS))
        proxy.stdout.wait(lambda b: b.count(b"\n") >= 2 * CALLS + 1, 20)
        proxy.close_stdin()
        assert proxy.wait(20) == 0
        stderr = proxy.stderr.data().decode()

    reports = [line for line in stderr.splitlines() if line.startswith("helmet-otel: store:")]
    assert len(reports) == 1, stderr
    assert "while in use" in reports[0] and "dropped and counted" in reports[0], reports
    (summary,) = [line for line in stderr.splitlines() if "telemetry dropped" in line]
    stored = re.search(r"store_logs_export_failed (\d+)", summary)
    assert stored is not None, summary
    # the calls after the damage, their session end and the proxy's last records, at least
    assert int(stored.group(1)) >= 2 * CALLS + 1, summary
