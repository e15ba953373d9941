"""`helmet-otel serve` as a real process on a free loopback port, for the HTTP tests."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psutil

from tests.e2e.helpers import SERVERS_DIR, RawProcess, clean_env

PROBE: tuple[str, ...] = (sys.executable, str(SERVERS_DIR / "http_probe.py"))
START_TIMEOUT = 20.0
_LISTENING = re.compile(rb"serving .* on (http://\S+)\n")


class ServeProcess:
    """``helmet-otel serve --listen 127.0.0.1:0 OPTIONS -- SERVER``; `url` once it listens."""

    def __init__(
        self, server: Sequence[str], *options: str, store: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        store_options = ("--store", str(store)) if store is not None else ("--no-store",)
        argv = [sys.executable, "-m", "helmet_otel", "serve", "--listen", "127.0.0.1:0",
                *store_options, *options, *(("--", *server) if server else ())]  # fmt: skip
        self.raw = RawProcess(argv, env=clean_env(env))
        found = self.raw.stderr.wait(
            lambda data: _LISTENING.search(data) is not None, START_TIMEOUT
        )
        match = _LISTENING.search(found)
        if match is None:
            self.raw.kill()
            raise AssertionError(f"serve did not start: {found!r}")
        self.url = match.group(1).decode()
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    @property
    def pid(self) -> int:
        return self.raw.proc.pid

    def children(self) -> list[psutil.Process]:
        """The server processes the proxy runs (not its telemetry worker)."""
        try:
            kids = psutil.Process(self.pid).children()
        except psutil.Error:
            return []
        return [k for k in kids if "helmet_otel.telemetry.worker" not in " ".join(_cmdline(k))]

    def stop(self, timeout: float = 20.0) -> int:
        if self.raw.proc.poll() is None:
            self.raw.proc.send_signal(signal.SIGTERM)
        return self.raw.wait(timeout)

    def stderr(self) -> bytes:
        return self.raw.stderr.data()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        try:
            self.stop()
        finally:
            self.raw.__exit__(exc_type, exc, tb)


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []
