"""A client that sends SIGTERM soon after closing the proxy's stdin (the MCP SDK does, after
2 s) while telemetry is still flushing gets the server's exit status, not death by the
signal; the telemetry worker finishes on its own and the session is recorded as ended."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil

from helmet_otel.store.query import Reader
from tests.faults.helpers import poll, recorded_proxy, workers


def test_sigterm_while_telemetry_flushes_exits_with_the_servers_status(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    with recorded_proxy(store, 5) as proxy:
        (worker,) = workers(proxy.proc.pid)
        (server,) = [p for p in psutil.Process(proxy.proc.pid).children() if p.pid != worker.pid]
        worker.send_signal(signal.SIGSTOP)  # the flush cannot finish before the signal
        proxy.close_stdin()
        poll(server.is_running, lambda running: not running, 10, "the server exits")
        proxy.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proxy.wait(5) == 0  # the server's status
        assert time.monotonic() - started < 1.0
        assert worker.is_running()  # left to finish alone, not killed
        worker.send_signal(signal.SIGCONT)
        poll(worker.is_running, lambda running: not running, 10, "the worker finishes")

    with Reader.open(store) as reader:
        (session,) = reader.sessions()
    assert session.status == "ended", (session, proxy.stderr.data())
