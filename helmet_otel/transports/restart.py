"""``--restart on-failure`` for the stdio proxy: a server that crashes while the client is still
connected is replaced by a new one, and the client's session goes on.

A crash is an exit with a non-zero status or by a signal the proxy did not send, while the
client is connected (a clean exit, the client's end of input or a signal to the proxy end the
session as without ``--restart``). Then, in order:

1. from the moment the exit is seen, the client's messages are held (at most `HOLD_MESSAGES`
   and `HOLD_BYTES`; a request beyond that is answered with the -32000 error at once);
2. what the crashed server wrote is relayed, then every request still waiting for it gets one
   -32000 error (`Lifecycle.upstream_crashed`), as when a server exits without ``--restart``;
3. after a backoff (`core.restart.RestartBudget`: 0.1 s doubling to 5 s, at most
   ``--max-restarts`` within a minute, else the crash ends the session) a new server starts;
4. legacy era: the client's ``initialize`` goes to it under an id of the proxy's, its answer
   is swallowed (the client never sees it), then the client's ``notifications/initialized``.
   An error answer, another protocol version or no answer within `REPLAY_TIMEOUT` ends the
   session as a failure (one stderr line). A 2026-07-28 session has nothing to replay;
5. the restart becomes a ``helmet.initialization`` record (`Lifecycle.upstream_restarted`), and
   the held messages go to the new server in order, then everything that follows.

The session, its id and its trace go on; the answers and records of the crashed server stay
where they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import IO

import anyio
from anyio.abc import TaskGroup

from helmet_otel.core.envelope import C2S, Direction
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.restart import DEFAULT_MAX_RESTARTS, Handshake, RestartBudget, replay_failure
from helmet_otel.core.session import MODERN, Restart, Session
from helmet_otel.protocol.message import ERROR, RESPONSE, JsonId, Message, id_key, inspect
from helmet_otel.transports.child import ChildProcess, ServerCommand, describe_start_failure
from helmet_otel.transports.pipes import ByteWriter
from helmet_otel.transports.stdio import ServerPipes, StdioProxy

__all__ = ["RestartingStdioProxy"]

HOLD_MESSAGES = 1000  # client messages held while a new server starts ...
HOLD_BYTES = 4 * 1024 * 1024  # ... and their bytes; a request beyond either gets an error
HOLD_FULL = "MCP server is restarting and too many messages wait for it (helmet-otel)"
REPLAY_TIMEOUT = 10.0  # seconds the new server has to answer the replayed initialize
PUMPS_END_AFTER_CLOSE = 1.0  # seconds the crashed server's pumps get to see their pipes close


class RestartingStdioProxy(StdioProxy):
    """A `StdioProxy` that replaces a crashed server (see the module's docstring)."""

    def __init__(
        self,
        command: ServerCommand,
        session: Session,
        interceptors: Sequence[Interceptor] = (),
        *,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        scrub: Callable[[str], str] = str,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        signals: bool = True,
    ) -> None:
        super().__init__(
            command, session, interceptors, stdin=stdin, stdout=stdout, stderr=stderr,
            signals=signals, scrub=scrub,
        )  # fmt: skip
        self.budget = RestartBudget(max_restarts)
        self.handshake = Handshake()
        self._held: list[bytes] | None = None  # client lines held while a new server starts
        self._held_bytes = 0
        self._client_left = anyio.Event()
        self._answered: anyio.Event | None = None  # set when the replay's answer came
        self._answer: Message | None = None
        # ids of the requests crashed servers sent the client: its late answers to them are
        # not for the new server (which may use the same ids for requests of its own)
        self._orphaned: set[tuple[bool, JsonId]] = set()

    # -- the client's side ------------------------------------------------------------------
    def _client_gone(self, tg: TaskGroup) -> None:
        self._client_left.set()
        super()._client_gone(tg)

    async def _deliver(
        self, direction: Direction, lines: list[bytes], out: ByteWriter, back: ByteWriter
    ) -> None:
        if direction is C2S:
            if self._held is not None:
                await self._hold(lines, back)
                return
            handshake = self.handshake
            if not handshake.complete and self.session.era != MODERN:
                for line in lines:
                    handshake.observe(line)
            if self._orphaned:
                lines = self._without_orphaned_answers(lines)
                if not lines:
                    return
            assert self._server is not None
            out = self._server[0]  # the current server's (``out`` was the first one's)
        elif self._answered is not None:
            lines = self._swallow_answer(lines)
            if not lines:
                return
        await super()._deliver(direction, lines, out, back)

    def _without_orphaned_answers(self, lines: list[bytes]) -> list[bytes]:
        """``lines`` without the client's answers to requests of a crashed server (each said
        once on stderr: the server that asked is gone, the new one never did)."""
        kept: list[bytes] = []
        for line in lines:
            msg = inspect(line)
            if msg.kind in (RESPONSE, ERROR) and msg.id is not None:
                key = id_key(msg.id)
                if key in self._orphaned:
                    self._orphaned.discard(key)
                    self.diag(
                        f"dropped the client's answer to request {msg.id!r} of the crashed "
                        "MCP server (the restarted server did not send it)"
                    )
                    continue
            kept.append(line)
        return kept

    async def _hold(self, lines: list[bytes], client_out: ByteWriter) -> None:
        held = self._held
        assert held is not None
        over: list[bytes] = []
        for line in lines:
            if len(held) < HOLD_MESSAGES and self._held_bytes + len(line) <= HOLD_BYTES:
                held.append(line)
                self._held_bytes += len(line)
            else:
                over.append(line)
        if over:  # requests get the error now; notifications beyond the bound are dropped
            relay = self.relay
            gone, relay.upstream_gone = relay.upstream_gone, HOLD_FULL
            routed = relay.route(C2S, over)
            relay.upstream_gone = gone
            routed.forward.clear()
            await self._write_answers(client_out, routed)

    async def _release(self, client_out: ByteWriter) -> None:
        """Route what was held: to the new server, or (the relay knows it is gone) answered."""
        held, self._held, self._held_bytes = self._held, None, 0
        if held:
            assert self._server is not None
            await self._deliver(C2S, held, self._server[0], client_out)

    def _swallow_answer(self, lines: list[bytes]) -> list[bytes]:
        """The new server's lines without the answer to the replayed initialize."""
        kept: list[bytes] = []
        for line in lines:
            answer = self.handshake.answer_in(line)
            if answer is None:
                kept.append(line)
            elif self._answered is not None:
                self._answer = answer
                self._answered.set()
        return kept

    # -- the server's side ------------------------------------------------------------------
    async def _supervise(self, server: ServerPipes, client_out: ByteWriter, tg: TaskGroup) -> None:
        child = self._child
        assert child is not None
        crash: tuple[int, str] | None = None
        while True:
            self._serve_child(child, server, client_out, tg)
            if crash is not None:
                failure = await self._take_over(child, crash[1], client_out)
                if failure is not None:
                    await self._end_after_failed_restart(child, crash, client_out)
                    return
            await child.exited.wait()
            if self._held is None:
                self._held = []  # from now on the client's messages wait
            if not self._crashed(child):
                break
            await self._drain_after_exit()
            delay = self.budget.next_delay()
            if delay is None:
                self.diag(
                    f"{child.describe_exit()[1]}; not restarting it: {self.budget.limit} "
                    "restarts within a minute already"
                )
                break
            crash = child.describe_exit()
            budget = self.budget
            self.diag(
                f"{crash[1]}; restarting it (restart {budget.count}, at most {budget.limit} "
                "within a minute)"
            )
            replacement = await self._replace(child, crash[1], delay, client_out)
            if replacement is None:
                return
            child, server = replacement
        await self._finish(child, client_out)
        await self._release(client_out)  # the relay knows the server is gone: answered

    def _crashed(self, child: ChildProcess) -> bool:
        returncode = child.proc.returncode
        return (
            returncode is not None
            and returncode != 0
            and not child.terminating  # the proxy stopped it (a signal, the client's end)
            and not self._client_left.is_set()
        )

    async def _replace(
        self, child: ChildProcess, reason: str, delay: float, client_out: ByteWriter
    ) -> tuple[ChildProcess, ServerPipes] | None:
        """Answer what the crashed child left pending, wait ``delay``, start another; None
        when none could start or the client left meanwhile (the session then has ended)."""
        session = self.session
        init_id = self.handshake.initialize_id
        answered = self.handshake.initialize is not None and (
            init_id is None or (True, id_key(init_id)) not in session.pending
        )
        if not answered:  # not sent, or died with the server: the client did not get that far
            self.handshake = Handshake()
        answers, orphaned = self.lifecycle.upstream_crashed(reason, child.usage)
        self._orphaned |= orphaned
        await self._write_answers(client_out, answers)
        await child.reap_group()
        assert self._server is not None
        for stream in self._server:
            stream.close()
        with anyio.move_on_after(PUMPS_END_AFTER_CLOSE):  # the old pumps end (closed pipes)
            await self._s2c_done.wait()
            await self._stderr_done.wait()
        with anyio.move_on_after(delay):
            await self._client_left.wait()
        status = child.describe_exit()[0]
        if self._client_left.is_set() or child.terminating:  # the client left, or a signal came
            await self._end(client_out, status, reason)
            return None
        try:
            new = ChildProcess(self.command)
        except OSError as exc:
            cause = describe_start_failure(self.command, exc)[1]
            self.diag(f"{reason}; {cause}")
            await self._end(client_out, status, f"{reason}; {cause}")
            return None
        return new, await self._attach(new)

    async def _take_over(
        self, child: ChildProcess, previous: str, client_out: ByteWriter
    ) -> str | None:
        """The new ``child`` runs: replay the handshake, record the restart, let the held
        messages through. Returns why the child cannot take over the session, or None."""
        handshake = self.handshake
        replayed = handshake.initialize is not None
        failure: str | None = None
        if replayed:
            failure = await self._replay(child)
        restart = Restart(
            self.budget.count, self.upstream_of(child), previous, replayed, failure,
            self.session.upstream_usage,
        )  # fmt: skip
        self.lifecycle.upstream_restarted(restart)
        if failure is None and not child.exited.is_set():  # (if it did, the supervisor sees it)
            await self._release(client_out)
        return failure

    async def _replay(self, child: ChildProcess) -> str | None:
        """Send the client's handshake to ``child``; why it failed, or None (also when the
        child exited meanwhile)."""
        handshake = self.handshake
        assert self._server is not None
        server_in = self._server[0]
        self._answer, self._answered = None, anyio.Event()
        answered = self._answered
        try:
            server_in.write(handshake.replay(self.budget.count))
            with anyio.move_on_after(REPLAY_TIMEOUT):
                async with anyio.create_task_group() as tg:

                    async def exited() -> None:
                        await child.exited.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(exited)
                    await answered.wait()
                    tg.cancel_scope.cancel()
            answer, self._answer = self._answer, None
            if answer is not None:  # (else a late answer is swallowed too: the session ends)
                self._answered = None
            if answer is None:
                if child.exited.is_set():
                    return None
                failure = f"did not answer the replayed initialize within {REPLAY_TIMEOUT:g} s"
            else:
                failure = replay_failure(answer, self.session.protocol_version)
            if failure is None and handshake.initialized is not None:  # (else it is held)
                server_in.write(handshake.initialized)
                await server_in.drain()
        except BrokenPipeError:
            return None  # it died: the supervisor sees its exit
        if failure is not None:
            self.diag(f"the restarted MCP server {failure}: ending the session")
        return failure

    async def _end_after_failed_restart(
        self, child: ChildProcess, crash: tuple[int, str], client_out: ByteWriter
    ) -> None:
        """The new child cannot take over: stop it; the session ends with the crash's status."""
        assert self._server is not None
        self._server[0].close()
        await child.terminate()
        await self._drain_after_exit()
        await self._end(client_out, crash[0], f"{crash[1]}; the restarted server failed", child)
        await child.reap_group()

    async def _end(
        self, client_out: ByteWriter, status: int, reason: str, child: ChildProcess | None = None
    ) -> None:
        """The session ends with ``status``: what waits gets the error (``child``: the last
        server, when its use is not counted yet)."""
        usage = child.usage if child is not None else None
        await self._write_answers(client_out, self.lifecycle.upstream_exited(status, reason, usage))
        await self._release(client_out)
