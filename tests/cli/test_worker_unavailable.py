"""A telemetry worker that cannot be started (EAGAIN under a process limit) leaves the traffic
running without telemetry, with one stderr line. (Root ignores RLIMIT_NPROC, so the limit is
stood in for by a spawn that fails as it would.)"""

from __future__ import annotations

import errno
import subprocess
from typing import Any

import pytest

from helmet_otel.cli.interceptors import build_interceptors
from helmet_otel.config import ProxyOptions


def test_a_worker_that_cannot_start_turns_telemetry_off_once(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def no_process(*args: Any, **kwargs: Any) -> Any:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    built = build_interceptors(ProxyOptions(), {}, service_name="s", transport="stdio")
    assert (built.factories, built.feed) == ([], None)
    assert capfd.readouterr().err == (
        "helmet-otel: telemetry is off: its worker process could not be started "
        "(Resource temporarily unavailable); MCP traffic is not affected\n"
    )
