"""The stdio transport: our stdin/stdout face the client, a child process is the server.

Shutdown follows the MCP stdio rules: close the child's stdin, wait ``grace``, SIGTERM the
child's process group, wait ``grace``, SIGKILL. Signals sent to the proxy are forwarded to the
child's process group first. The child's exit status becomes ours (128+N for signal N).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import IO

import anyio
from anyio.abc import TaskGroup

from helmet_otel.core.envelope import C2S, S2C, Direction
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.lifecycle import Lifecycle
from helmet_otel.core.relay import Routed
from helmet_otel.core.session import Session
from helmet_otel.protocol.framing import LineSplitter
from helmet_otel.transports.child import (
    ChildProcess,
    ServerCommand,
    describe_start_failure,
    pump_stderr,
)
from helmet_otel.transports.pipes import ByteReader, ByteWriter, open_reader, open_writer

__all__ = ["ServerCommand", "StdioProxy", "run_stdio"]

# How long a proxy whose server could not start waits for the client's first request, to
# answer it with an error that names the cause instead of a bare disconnect.
START_FAILURE_ANSWER_WINDOW = 2.0
STDOUT_DRAIN_AFTER_EXIT = 1.0

ServerPipes = tuple[ByteWriter, ByteReader, ByteReader]  # the server's stdin, stdout, stderr


class StdioProxy:
    """One session: our stdin/stdout (or the given pipes) face the client, a child the server."""

    def __init__(
        self,
        command: ServerCommand,
        session: Session,
        interceptors: Sequence[Interceptor] = (),
        *,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        signals: bool = True,
        scrub: Callable[[str], str] = str,
    ) -> None:
        self.command = command
        # our stderr lines can quote the command and what the server answered: the CLI passes
        # the scrubber (transports do not import redaction)
        self._scrub = scrub
        self.session = session
        self.lifecycle = Lifecycle(session, interceptors)
        self.relay = self.lifecycle.relay
        self._signals = signals  # forward SIGINT/SIGTERM/SIGHUP (the process's own session)
        self._stdin = stdin or open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115
        self._stdout = stdout or open(1, "wb", buffering=0, closefd=False)  # noqa: SIM115
        self._stderr = stderr or open(2, "wb", buffering=0, closefd=False)  # noqa: SIM115
        self._stdin_fd = self._stdin.fileno()
        self._stdout_fd = self._stdout.fileno()
        self._err: ByteWriter | None = None
        self._child: ChildProcess | None = None
        self._server: ServerPipes | None = None  # the child's pipes (`_attach`)
        self._s2c_done = anyio.Event()
        self._stderr_done = anyio.Event()
        self._s2c_moved = 0  # server->client deliveries done
        self._s2c_waits = False  # ... one is waiting for the client to read

    # -- diagnostics ------------------------------------------------------------------------
    def diag(self, text: str) -> None:
        """One line of our own on stderr (never on stdout: stdout belongs to the wire)."""
        data = f"helmet-otel: {self._scrub(text)}\n".encode()
        if self._err is not None and not self._err.closed:
            self._err.write(data)
        else:
            os.write(self._stderr.fileno(), data)

    # -- entry point ------------------------------------------------------------------------
    async def run(self) -> int:
        try:
            child = ChildProcess(self.command)
        except OSError as exc:
            return await self._start_failed(exc)
        client_in = await open_reader(self._stdin)
        client_out = await open_writer(self._stdout)
        self._err = await open_writer(self._stderr)
        server = await self._attach(child)
        self.lifecycle.upstream_started(self.upstream_of(child))
        try:
            async with anyio.create_task_group() as tg:
                if self._signals:
                    tg.start_soon(self._watch_signals, tg)
                tg.start_soon(self._pump_c2s, client_in, client_out, tg)
                await self._supervise(server, client_out, tg)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                err, server = self._err, self._server
                assert server is not None
                await self._close_all(client_out, server[0], client_in, *server[1:], err)
        status = self.session.exit_status
        assert status is not None
        self.lifecycle.ended()
        return status

    def upstream_of(self, child: ChildProcess) -> dict[str, object]:
        """What the session's start (and a restart) records of the server process."""
        return {"command": list(self.command.argv), "pid": child.pid,
                "cwd": self.command.cwd or os.getcwd()}  # fmt: skip

    async def _attach(self, child: ChildProcess) -> ServerPipes:
        """Make ``child`` the server: its pipes are the ones the pumps use from now on."""
        proc = child.proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        server = (
            await open_writer(proc.stdin),
            await open_reader(proc.stdout),
            await open_reader(proc.stderr),
        )
        self._child, self._server = child, server
        self._s2c_done, self._stderr_done = anyio.Event(), anyio.Event()
        return server

    async def _supervise(self, server: ServerPipes, client_out: ByteWriter, tg: TaskGroup) -> None:
        """Relay the child's output until it exits, then answer what it left pending."""
        child = self._child
        assert child is not None
        self._serve_child(child, server, client_out, tg)
        await child.exited.wait()
        await self._finish(child, client_out)

    def _serve_child(
        self, child: ChildProcess, server: ServerPipes, client_out: ByteWriter, tg: TaskGroup
    ) -> None:
        """Start the tasks that watch ``child`` and relay its output."""
        server_in, server_out, server_err = server
        tg.start_soon(child.watch_exit)
        tg.start_soon(self._pump_stderr, server_err)
        tg.start_soon(self._pump_s2c, server_out, client_out, server_in, tg)

    # -- the pumps --------------------------------------------------------------------------
    async def _pump(
        self, direction: Direction, reader: ByteReader, out: ByteWriter, back: ByteWriter
    ) -> None:
        """Relay lines from ``reader`` to ``out`` until end of stream (``back`` takes replies)."""
        splitter = LineSplitter()
        while True:
            chunk = await reader.receive()
            if not chunk:
                break
            lines = splitter.feed(chunk)
            if lines:
                await self._deliver(direction, lines, out, back)
        rest = splitter.flush()
        if rest:
            await self._deliver(direction, [rest], out, back)

    def _client_gone(self, tg: TaskGroup) -> None:
        self.lifecycle.client_closed()
        assert self._child is not None and self._server is not None
        self._server[0].close()
        tg.start_soon(self._child.terminate, None)

    async def _pump_c2s(self, reader: ByteReader, client_out: ByteWriter, tg: TaskGroup) -> None:
        assert self._server is not None
        await self._pump(C2S, reader, self._server[0], client_out)
        self._client_gone(tg)

    async def _pump_s2c(
        self, reader: ByteReader, client_out: ByteWriter, server_in: ByteWriter, tg: TaskGroup
    ) -> None:
        done = self._s2c_done  # this child's (a restart replaces it)
        try:
            await self._pump(S2C, reader, client_out, server_in)
        except BrokenPipeError:  # the client stopped reading: a disconnect
            self._client_gone(tg)
        finally:
            done.set()

    async def _deliver(
        self, direction: Direction, lines: list[bytes], out: ByteWriter, back: ByteWriter
    ) -> None:
        relay = self.relay
        routed = relay.route(direction, lines)
        forward = routed.forward
        try:
            if routed.replies:
                back.write(b"".join(routed.replies))
            if forward and not (direction is C2S and out.closed):
                out.write(forward[0] if len(forward) == 1 else b"".join(forward))
        except BrokenPipeError:
            if direction is S2C:
                raise
            # The server's stdin is gone: the exit watcher answers what is pending.
        relay.forwarded(routed)
        s2c = direction is S2C
        if s2c:
            self._s2c_waits = True
        try:
            await out.drain()
        except BrokenPipeError:
            if s2c:
                raise
        finally:
            if s2c:
                self._s2c_waits = False
                self._s2c_moved += 1

    async def _pump_stderr(self, reader: ByteReader) -> None:
        assert self._err is not None
        err, done = self._err, self._stderr_done

        async def copy(chunk: bytes) -> None:  # ours is a pipe too: it may close
            try:
                err.write(chunk)
                await err.drain()
            except BrokenPipeError:
                pass

        await pump_stderr(reader, self.lifecycle, copy)
        done.set()

    # -- lifecycle --------------------------------------------------------------------------
    async def _watch_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                child = self._child  # (the current one: a restart replaces it)
                assert child is not None
                self.lifecycle.signalled(signal.Signals(signum).name)
                if child.terminating:
                    child.signal_group(signal.SIGKILL)  # a second signal: no more patience
                else:
                    tg.start_soon(child.terminate, signum)

    async def _finish(self, child: ChildProcess, client_out: ByteWriter) -> None:
        """The child has exited: drain its stdout, answer what is pending, reap its group."""
        await self._drain_after_exit()
        routed = self.lifecycle.upstream_exited(*child.describe_exit(), child.usage)
        await self._write_answers(client_out, routed)
        await child.reap_group()

    async def _drain_after_exit(self) -> None:
        """Wait until the exited child's output has been relayed (see below)."""
        # Every answer the server wrote goes out before any the proxy writes for it: wait for
        # its stdout's end as long as the answers move (or wait for a slow client); give up
        # only when nothing moved for STDOUT_DRAIN_AFTER_EXIT (a grandchild that holds the
        # pipe open). Then only requests that really got no answer get the proxy's error.
        while True:
            moved = self._s2c_moved
            with anyio.move_on_after(STDOUT_DRAIN_AFTER_EXIT):
                await self._s2c_done.wait()
                await self._stderr_done.wait()  # every stderr byte the server wrote, too
                break
            if self._s2c_done.is_set() or (self._s2c_moved == moved and not self._s2c_waits):
                break

    async def _write_answers(self, client_out: ByteWriter, routed: Routed) -> None:
        """Write the proxy's own answers to the client; they reach telemetry either way."""
        answers = routed.forward + routed.replies
        if answers:
            try:
                client_out.write(b"".join(answers))
                await client_out.drain()
            except BrokenPipeError:
                pass
        self.relay.forwarded(routed)

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
        status, reason = describe_start_failure(self.command, exc)
        self.diag(reason)
        self.lifecycle.upstream_failed(status, reason)
        await self._answer_early_requests()
        self.lifecycle.ended()
        return status

    async def _answer_early_requests(self) -> None:
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
                routed = self.relay.route(C2S, splitter.feed(chunk))  # requests get the reason
                routed.forward.clear()  # there is no server to forward anything to
                answered = bool(routed.replies)
                await self._write_answers(writer, routed)
        writer.close()
        reader.close()


def run_stdio(
    command: ServerCommand,
    session: Session,
    interceptors: Sequence[Interceptor],
    *,
    after: Callable[[], object] | None = None,
    proxy_class: Callable[[ServerCommand, Session, Sequence[Interceptor]], StdioProxy] = StdioProxy,
) -> int:
    """Run the proxy (``proxy_class``'s) to completion on an asyncio loop (uvloop when
    installed)."""

    async def main() -> int:
        proxy = proxy_class(command, session, interceptors)
        status = await proxy.run()
        if after is not None:
            result = after()
            if asyncio.iscoroutine(result):
                await _unless_signalled(result)
        return status

    return anyio.run(main, backend="asyncio", backend_options=event_loop_options())


async def _unless_signalled(work: Coroutine[object, object, object]) -> None:
    """Await ``work`` (the telemetry's final flush) unless a signal says to stop waiting: a
    client that sends SIGTERM soon after closing our stdin (as the MCP SDK does) gets the
    server's exit status, not death by the signal, and the telemetry worker finishes alone."""
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as got:
                async for _ in got:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        await work
        tg.cancel_scope.cancel()


def event_loop_options() -> dict[str, object]:
    """anyio's asyncio backend on uvloop when it is installed."""
    options: dict[str, object] = {}
    if sys.platform != "win32":
        try:
            import uvloop  # noqa: F401  # pyright: ignore[reportUnusedImport]

            options["use_uvloop"] = True
        except ImportError:
            pass
    return options
