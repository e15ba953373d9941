"""Shared pieces of the end-to-end tests: server commands, the proxy command, raw processes.

Every wait here is bounded; a process that outlives its test is killed with its whole process
group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVERS_DIR = REPO_ROOT / "tests" / "servers"

EVERYTHING_JS = (
    REPO_ROOT / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
"""server-everything, installed locally by `npm ci` (pinned in package.json / package-lock.json)."""

DEMO_SERVER: tuple[str, ...] = (sys.executable, "-m", "helmet_otel.examples.demo_server")
FASTMCP_SERVER: tuple[str, ...] = (sys.executable, str(SERVERS_DIR / "fastmcp_server.py"))
RECORDING_UPSTREAM: tuple[str, ...] = (sys.executable, str(SERVERS_DIR / "recording_upstream.py"))
MISBEHAVING: tuple[str, ...] = (sys.executable, str(SERVERS_DIR / "misbehaving.py"))


def node() -> str:
    found = shutil.which("node")
    assert found is not None, "node is required for the server-everything tests (see .ci/run)"
    return found


def everything_server() -> tuple[str, ...]:
    assert EVERYTHING_JS.is_file(), f"{EVERYTHING_JS} is missing: run `npm ci` in {REPO_ROOT}"
    return (node(), str(EVERYTHING_JS), "stdio")


def proxy_argv(server: Sequence[str], *options: str, store: bool = False) -> list[str]:
    """`helmet-otel [OPTIONS] CMD [ARGS...]`, run with this interpreter so the venv is used."""
    store_options = () if store else ("--no-store",)
    return [sys.executable, "-m", "helmet_otel", *store_options, *options, *server]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without OTEL_* and HELMET_* (no telemetry sink, no config leaking in)."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "HELMET_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class _Drain:
    """A thread that reads a pipe to its end into a byte buffer others can wait on."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._eof = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while chunk := os.read(self._fd, 1 << 20):
                with self._cond:
                    self._buf += chunk
                    self._cond.notify_all()
        except OSError:
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def data(self) -> bytes:
        with self._cond:
            return bytes(self._buf)

    def wait(self, predicate: Callable[[bytes], bool], timeout: float) -> bytes:
        """Wait until `predicate(buffer)` holds or the pipe ends; return the buffer."""
        with self._cond:
            self._cond.wait_for(lambda: self._eof or predicate(bytes(self._buf)), timeout)
            return bytes(self._buf)

    def wait_len(self, size: int, timeout: float) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._eof or len(self._buf) >= size, timeout)
            return bytes(self._buf)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


class RawProcess:
    """A child process fed and drained as raw bytes (no MCP library in the way).

    stdout and stderr are read by threads into buffers; writes run in a thread so a stuck
    child cannot hang the test past `timeout`.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else clean_env(),
            cwd=cwd,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout = _Drain(self.proc.stdout.fileno())
        self.stderr = _Drain(self.proc.stderr.fileno())

    def write(self, data: bytes, timeout: float = 30.0) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        failure: list[BaseException] = []

        def run() -> None:
            try:
                stdin.write(data)
                stdin.flush()
            except BaseException as exc:
                failure.append(exc)

        writer = threading.Thread(target=run, daemon=True)
        writer.start()
        writer.join(timeout)
        assert not writer.is_alive(), f"writing {len(data)} bytes took longer than {timeout} s"
        if failure:
            raise failure[0]

    def close_stdin(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError):
            stdin.close()

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the exit status; the process group is killed if it overstays."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv} did not exit within {timeout} s") from None

    def kill(self) -> None:
        """SIGKILL the process, its process group and every descendant still known."""
        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def __enter__(self) -> RawProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()  # a no-op for a process that already exited with its children
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def describe(data: bytes, limit: int = 400) -> str:
    """A short, readable rendering of a byte string for assertion messages."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[: limit // 2]!r} ... ({len(data)} bytes) ... {data[-limit // 2 :]!r}"
