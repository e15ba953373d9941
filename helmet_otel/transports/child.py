"""The upstream server as a child process: spawn, exit watch, signals, termination, reaping.

Shared by every front that starts a stdio server (the stdio proxy: one child per process; an HTTP
front: one child per session). Shutdown follows the MCP stdio rules: close the child's stdin,
wait ``grace``, SIGTERM the child's process group, wait ``grace``, SIGKILL. Children the server
leaves behind in its process group go too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

from helmet_otel.core.lifecycle import Lifecycle
from helmet_otel.core.session import ProcessUsage
from helmet_otel.protocol.framing import LineSplitter
from helmet_otel.transports.pipes import ByteReader

EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126


@dataclass(frozen=True)
class ServerCommand:
    argv: Sequence[str]
    env: dict[str, str]
    cwd: str | None = None
    grace: float = 2.0


def describe_exit(returncode: int) -> tuple[int, str]:
    """Our exit status and a sentence for a child's ``returncode``."""
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return 128 + signum, f"MCP server was killed by {name}"
    return returncode, f"MCP server exited with status {returncode}"


def describe_start_failure(command: ServerCommand, exc: OSError) -> tuple[int, str]:
    """Our exit status and a sentence for a server that could not be started."""
    program = command.argv[0] if command.argv else ""
    if isinstance(exc, FileNotFoundError):
        status = EXIT_NOT_FOUND
        if command.cwd and not os.path.isdir(command.cwd):
            cause = f"working directory not found: {command.cwd}"
        else:
            cause = f"command not found: {program}"
    elif isinstance(exc, PermissionError):
        status, cause = EXIT_CANNOT_RUN, f"permission denied: {program}"
    else:
        status, cause = EXIT_CANNOT_RUN, f"cannot start {program}: {exc.strerror or exc}"
    return status, f"MCP server could not be started: {cause}"


def killpg(pgid: int, signum: int) -> bool:
    """Signal a process group; False when it is gone (or not ours)."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """What a new child runs before exec so that it is killed when the proxy dies, even by
    SIGKILL (Linux: ``PR_SET_PDEATHSIG``); None where the platform has no such thing.

    Only the server itself gets the signal: a grandchild that left the server's process group
    and ignores its closed stdin is beyond it. The function only calls prctl and getppid
    (nothing that takes a lock a thread of the parent may have held at the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the proxy died before the prctl took effect
            os._exit(1)

    return in_child


class ChildProcess:
    """One server process in its own process group, with its three pipes."""

    def __init__(self, command: ServerCommand) -> None:
        """Start it; raises OSError when it cannot be started (see `describe_start_failure`)."""
        self.command = command
        self.proc = subprocess.Popen(
            list(command.argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=command.env,
            cwd=command.cwd,
            process_group=0,
            bufsize=0,
            preexec_fn=_die_with_parent(),  # (only a prctl: see there)
        )
        self.exited = anyio.Event()
        self._terminating = False
        self.usage: ProcessUsage | None = None  # what it used, once reaped

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def terminating(self) -> bool:
        return self._terminating

    def describe_exit(self) -> tuple[int, str]:
        returncode = self.proc.returncode
        return describe_exit(returncode if returncode is not None else -9)

    async def watch_exit(self) -> None:
        """Return once the child has exited (and is reaped); sets `exited` (and `usage`)."""
        proc = self.proc
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            while not self._reap(os.WNOHANG):
                await anyio.sleep(0.05)
        else:
            try:
                await anyio.wait_readable(pidfd)
            finally:
                os.close(pidfd)
            self._reap(0)
        self.exited.set()

    def _reap(self, options: int) -> bool:
        """Reap the child with ``wait4``, which also says what it used; whether it is gone."""
        proc = self.proc
        if proc.returncode is not None:
            return True
        try:
            pid, status, rusage = os.wait4(proc.pid, options)
        except ChildProcessError:  # reaped elsewhere: Popen knows its status
            return proc.poll() is not None
        if pid == 0:
            return False
        proc.returncode = os.waitstatus_to_exitcode(status)
        unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
        self.usage = ProcessUsage(rusage.ru_utime, rusage.ru_stime, rusage.ru_maxrss * unit)
        return True

    def signal_group(self, signum: int) -> None:
        if self.proc.returncode is None:
            killpg(self.proc.pid, signum)

    async def terminate(self, first: int | None = None) -> None:
        """Escalate until the child is gone: (first signal), grace, SIGTERM, grace, SIGKILL."""
        if self._terminating:
            return
        self._terminating = True
        grace = self.command.grace
        if first is not None:
            self.signal_group(first)
        with anyio.move_on_after(grace):
            await self.exited.wait()
        if self.exited.is_set():
            return
        if first != signal.SIGTERM:
            self.signal_group(signal.SIGTERM)
            with anyio.move_on_after(grace):
                await self.exited.wait()
            if self.exited.is_set():
                return
        self.signal_group(signal.SIGKILL)

    async def reap_group(self) -> None:
        """Children the server left behind in its process group go too: no orphans."""
        pgid = self.proc.pid
        if not killpg(pgid, 0):
            return
        killpg(pgid, signal.SIGTERM)
        with anyio.move_on_after(self.command.grace):
            while killpg(pgid, 0):
                await anyio.sleep(0.02)
        killpg(pgid, signal.SIGKILL)


async def pump_stderr(
    reader: ByteReader, lifecycle: Lifecycle, copy: Callable[[bytes], Awaitable[None]]
) -> None:
    """Until the server's stderr ends: ``copy`` each chunk on (as the server wrote it) and hand
    its lines to the session's lifecycle (telemetry records them), when anyone listens."""
    splitter = LineSplitter()
    watched = bool(lifecycle.interceptors)
    while True:
        chunk = await reader.receive()
        if not chunk:
            break
        await copy(chunk)
        if watched:
            lifecycle.upstream_stderr(splitter.feed(chunk), time.time_ns())
    rest = splitter.flush()
    if rest and watched:
        lifecycle.upstream_stderr([rest], time.time_ns())
