"""The stdio transport: our stdin/stdout face the client, a child process is the server.

Shutdown follows the MCP stdio rules: close the child's stdin, wait ``grace``, SIGTERM the
child's process group, wait ``grace``, SIGKILL. Signals sent to the proxy are forwarded to the
child's process group first. The child's exit status becomes ours (128+N for signal N).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

import anyio
from anyio.abc import TaskGroup

from helmet_otel.core.envelope import Direction
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.relay import Relay
from helmet_otel.core.session import Session
from helmet_otel.protocol.framing import LineSplitter
from helmet_otel.protocol.message import Kind, error_response, inspect
from helmet_otel.transports.pipes import ByteReader, ByteWriter, open_reader, open_writer

EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126
# How long a proxy whose server could not start waits for the client's first request, to
# answer it with an error that names the cause instead of a bare disconnect.
START_FAILURE_ANSWER_WINDOW = 2.0
STDOUT_DRAIN_AFTER_EXIT = 1.0


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


def _killpg(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class StdioProxy:
    def __init__(
        self,
        command: ServerCommand,
        session: Session,
        interceptors: Sequence[Interceptor] = (),
        *,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> None:
        self.command = command
        self.session = session
        self.relay = Relay(session, interceptors)
        self.interceptors = tuple(interceptors)
        self._stdin = stdin or open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115
        self._stdout = stdout or open(1, "wb", buffering=0, closefd=False)  # noqa: SIM115
        self._stderr = stderr or open(2, "wb", buffering=0, closefd=False)  # noqa: SIM115
        self._stdin_fd = self._stdin.fileno()
        self._stdout_fd = self._stdout.fileno()
        self._err: ByteWriter | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._exited = anyio.Event()
        self._s2c_done = anyio.Event()
        self._stderr_done = anyio.Event()
        self._terminating = False

    # -- diagnostics ------------------------------------------------------------------------
    def diag(self, text: str) -> None:
        """One line of our own on stderr (never on stdout: stdout belongs to the wire)."""
        data = f"helmet-otel: {text}\n".encode()
        if self._err is not None and not self._err.closed:
            self._err.write(data)
        else:
            os.write(self._stderr.fileno(), data)

    # -- entry point ------------------------------------------------------------------------
    async def run(self) -> int:
        try:
            proc = self._spawn()
        except OSError as exc:
            return await self._start_failed(exc)
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        client_in = await open_reader(self._stdin)
        client_out = await open_writer(self._stdout)
        self._err = await open_writer(self._stderr)
        server_in = await open_writer(proc.stdin)
        server_out = await open_reader(proc.stdout)
        server_err = await open_reader(proc.stderr)
        upstream: dict[str, object] = {
            "command": list(self.command.argv),
            "pid": proc.pid,
            "cwd": self.command.cwd or os.getcwd(),
        }
        for interceptor in self.interceptors:
            interceptor.session_started(self.session, upstream)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_exit, proc)
                tg.start_soon(self._watch_signals, tg)
                tg.start_soon(self._pump_stderr, server_err)
                tg.start_soon(self._pump_s2c, server_out, client_out, server_in, tg)
                tg.start_soon(self._pump_c2s, client_in, server_in, client_out, tg)
                await self._exited.wait()
                await self._finish(proc, client_out)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                err = self._err
                await self._close_all(client_out, server_in, client_in, server_out, server_err, err)
        status, reason = describe_exit(proc.returncode if proc.returncode is not None else -9)
        self.session.exit_status = status
        if self.session.exit_reason is None:
            self.session.exit_reason = reason
        self.session.ended_ns = time.time_ns()
        for interceptor in self.interceptors:
            interceptor.session_ended(self.session)
        return status

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = list(self.command.argv)
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.command.env,
            cwd=self.command.cwd,
            process_group=0,
            bufsize=0,
        )

    # -- the pumps --------------------------------------------------------------------------
    async def _pump(
        self, direction: Direction, reader: ByteReader, out: ByteWriter, back: ByteWriter
    ) -> None:
        """Relay lines from ``reader`` to ``out`` until end of stream (``back`` takes replies)."""
        relay = self.relay
        splitter = LineSplitter()
        while True:
            chunk = await reader.receive()
            if not chunk:
                break
            lines = splitter.feed(chunk)
            if lines:
                await self._deliver(relay, direction, lines, out, back)
        rest = splitter.flush()
        if rest:
            await self._deliver(relay, direction, [rest], out, back)

    def _client_gone(self, server_in: ByteWriter, tg: TaskGroup) -> None:
        if self.session.exit_reason is None:
            self.session.exit_reason = "client closed the connection"
        server_in.close()
        tg.start_soon(self._terminate, None)

    async def _pump_c2s(
        self, reader: ByteReader, server_in: ByteWriter, client_out: ByteWriter, tg: TaskGroup
    ) -> None:
        await self._pump(Direction.C2S, reader, server_in, client_out)
        self._client_gone(server_in, tg)

    async def _pump_s2c(
        self, reader: ByteReader, client_out: ByteWriter, server_in: ByteWriter, tg: TaskGroup
    ) -> None:
        try:
            await self._pump(Direction.S2C, reader, client_out, server_in)
        except BrokenPipeError:  # the client stopped reading: a disconnect
            self._client_gone(server_in, tg)
        finally:
            self._s2c_done.set()

    async def _deliver(
        self,
        relay: Relay,
        direction: Direction,
        lines: list[bytes],
        out: ByteWriter,
        back: ByteWriter,
    ) -> None:
        routed = relay.route(direction, lines)
        forward = routed.forward
        try:
            if routed.replies:
                back.write(b"".join(routed.replies))
            if forward and not (direction is Direction.C2S and out.closed):
                out.write(forward[0] if len(forward) == 1 else b"".join(forward))
        except BrokenPipeError:
            if direction is Direction.S2C:
                raise
            # The server's stdin is gone: the exit watcher answers what is pending.
        relay.forwarded(routed)
        try:
            await out.drain()
        except BrokenPipeError:
            if direction is Direction.S2C:
                raise

    async def _pump_stderr(self, reader: ByteReader) -> None:
        assert self._err is not None
        err = self._err
        splitter = LineSplitter()
        session = self.session
        interceptors = self.interceptors
        while True:
            chunk = await reader.receive()
            if not chunk:
                break
            try:
                err.write(chunk)
            except BrokenPipeError:
                pass
            if interceptors:
                now = time.time_ns()
                for line in splitter.feed(chunk):
                    for interceptor in interceptors:
                        interceptor.upstream_stderr(session, line, now)
            try:
                await err.drain()
            except BrokenPipeError:
                pass
        rest = splitter.flush()
        if rest:
            for interceptor in interceptors:
                interceptor.upstream_stderr(session, rest, time.time_ns())
        self._stderr_done.set()

    # -- lifecycle --------------------------------------------------------------------------
    async def _watch_exit(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            while proc.poll() is None:
                await anyio.sleep(0.05)
        else:
            try:
                await anyio.wait_readable(pidfd)
            finally:
                os.close(pidfd)
            proc.wait()
        self._exited.set()

    async def _watch_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if self.session.exit_reason is None:
                    self.session.exit_reason = f"proxy received {signal.Signals(signum).name}"
                if self._terminating:
                    # A second signal: no more patience.
                    self._signal_group(signal.SIGKILL)
                else:
                    tg.start_soon(self._terminate, signum)

    def _signal_group(self, signum: int) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            _killpg(proc.pid, signum)

    async def _terminate(self, first: int | None) -> None:
        """Escalate until the child is gone: (first signal), grace, SIGTERM, grace, SIGKILL."""
        if self._terminating:
            return
        self._terminating = True
        grace = self.command.grace
        if first is not None:
            self._signal_group(first)
        with anyio.move_on_after(grace):
            await self._exited.wait()
        if self._exited.is_set():
            return
        if first != signal.SIGTERM:
            self._signal_group(signal.SIGTERM)
            with anyio.move_on_after(grace):
                await self._exited.wait()
            if self._exited.is_set():
                return
        self._signal_group(signal.SIGKILL)

    async def _finish(self, proc: subprocess.Popen[bytes], client_out: ByteWriter) -> None:
        """The child has exited: drain its stdout, answer what is pending, reap its group."""
        with anyio.move_on_after(STDOUT_DRAIN_AFTER_EXIT):
            await self._s2c_done.wait()
            await self._stderr_done.wait()  # every stderr byte the server wrote, too
        _, reason = describe_exit(proc.returncode if proc.returncode is not None else -9)
        replies = self.relay.fail_pending(f"{reason} before responding (helmet-otel)")
        if replies:
            try:
                client_out.write(b"".join(replies))
                await client_out.drain()
            except BrokenPipeError:
                pass
            self.relay.synthesized(Direction.S2C, replies)
        await self._reap_group(proc.pid)

    async def _reap_group(self, pgid: int) -> None:
        """Children the server left behind in its process group go too: no orphans."""
        if not _killpg(pgid, 0):
            return
        _killpg(pgid, signal.SIGTERM)
        with anyio.move_on_after(self.command.grace):
            while _killpg(pgid, 0):
                await anyio.sleep(0.02)
        _killpg(pgid, signal.SIGKILL)

    async def _close_all(self, *streams: ByteReader | ByteWriter) -> None:
        for stream in streams:
            if hasattr(stream, "flush") and not getattr(stream, "closed", True):
                with anyio.move_on_after(2.0):
                    try:
                        await stream.flush()  # type: ignore[union-attr]
                    except BrokenPipeError:
                        pass
            stream.close()
        for fd in (0, 1):
            if fd in (self._stdin_fd, self._stdout_fd):
                try:
                    os.set_blocking(fd, True)
                except OSError:
                    pass

    # -- a server that could not start ------------------------------------------------------
    async def _start_failed(self, exc: OSError) -> int:
        program = self.command.argv[0] if self.command.argv else ""
        if isinstance(exc, FileNotFoundError):
            status = EXIT_NOT_FOUND
            if self.command.cwd and not os.path.isdir(self.command.cwd):
                cause = f"working directory not found: {self.command.cwd}"
            else:
                cause = f"command not found: {program}"
        elif isinstance(exc, PermissionError):
            status, cause = EXIT_CANNOT_RUN, f"permission denied: {program}"
        else:
            status, cause = EXIT_CANNOT_RUN, f"cannot start {program}: {exc.strerror or exc}"
        reason = f"MCP server could not be started: {cause}"
        self.diag(reason)
        self.session.exit_status = status
        self.session.exit_reason = reason
        for interceptor in self.interceptors:
            interceptor.upstream_failed(self.session, reason)
        self.relay.upstream_gone = reason
        await self._answer_early_requests(reason)
        self.session.ended_ns = time.time_ns()
        for interceptor in self.interceptors:
            interceptor.session_ended(self.session)
        return status

    async def _answer_early_requests(self, reason: str) -> None:
        """Answer the requests the client sends right away, so its UI shows the cause."""
        if os.isatty(self._stdin.fileno()):
            return
        reader = await open_reader(self._stdin)
        writer = await open_writer(self._stdout)
        splitter = LineSplitter()
        answered = False
        with anyio.move_on_after(START_FAILURE_ANSWER_WINDOW):
            while not answered:
                chunk = await reader.receive()
                if not chunk:
                    break
                for line in splitter.feed(chunk):
                    msg = inspect(line)
                    if msg.kind is Kind.REQUEST:
                        reply = error_response(msg.id, -32000, reason)
                        writer.write(reply)
                        self.relay.synthesized(Direction.S2C, [reply])
                        answered = True
        with anyio.move_on_after(1.0):
            await writer.drain()
        writer.close()
        reader.close()


def run_stdio(
    command: ServerCommand,
    session: Session,
    interceptors: Sequence[Interceptor],
    *,
    after: Callable[[], object] | None = None,
) -> int:
    """Run the proxy to completion on an asyncio loop (uvloop when installed)."""

    async def main() -> int:
        proxy = StdioProxy(command, session, interceptors)
        status = await proxy.run()
        if after is not None:
            result = after()
            if asyncio.iscoroutine(result):
                with anyio.CancelScope(shield=True):
                    await result
        return status

    options: dict[str, object] = {}
    if sys.platform != "win32":
        try:
            import uvloop  # noqa: F401  # pyright: ignore[reportUnusedImport]

            options["use_uvloop"] = True
        except ImportError:
            pass
    return anyio.run(main, backend="asyncio", backend_options=options)
