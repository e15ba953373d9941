"""A session's life as core events: the transport reports what happened, the core decides.

Upstream started, failed to start, wrote to stderr or exited; the client closed; the proxy was
signalled; the session ended. Each event updates the session and runs the interceptors' hooks;
the events that imply answers (an upstream gone while requests wait) return them as `Routed`
envelopes, which the transport writes and then hands to `Relay.forwarded` like any message.
The transport only does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.relay import Relay, Routed
from helmet_otel.core.session import ProcessUsage, Restart, Session, add_usage
from helmet_otel.protocol.message import JsonId


class Lifecycle:
    def __init__(self, session: Session, interceptors: Sequence[Interceptor] = ()) -> None:
        self.session = session
        self.interceptors = tuple(interceptors)
        self.relay = Relay(session, self.interceptors)

    def upstream_started(self, upstream: dict[str, object]) -> None:
        """The server runs (stdio: ``command``, ``pid``, ``cwd``; HTTP: ``url``)."""
        for interceptor in self.interceptors:
            interceptor.session_started(self.session, upstream)

    def upstream_failed(self, status: int, reason: str) -> None:
        """The server could not be started: every request from now on is answered with
        ``reason`` (route them through the relay; its replies say why)."""
        session = self.session
        session.exit_status = status
        session.exit_reason = reason
        self.relay.upstream_gone = reason
        for interceptor in self.interceptors:
            interceptor.upstream_failed(session, reason)

    def upstream_stderr(self, lines: list[bytes], ts: int) -> None:
        session = self.session
        for interceptor in self.interceptors:
            for line in lines:
                interceptor.upstream_stderr(session, line, ts)

    def upstream_exited(
        self, status: int, reason: str, usage: ProcessUsage | None = None
    ) -> Routed:
        """The server is gone: the answers for every request still pending (to the client).
        ``usage``: what the server process used, when the transport reaped it."""
        session = self.session
        session.exit_status = status
        session.upstream_usage = add_usage(session.upstream_usage, usage)
        if session.exit_reason is None:
            session.exit_reason = reason
        return self.relay.answer_pending(f"{reason} before responding (helmet-otel)")

    def upstream_crashed(
        self, reason: str, usage: ProcessUsage | None = None
    ) -> tuple[Routed, set[tuple[bool, JsonId]]]:
        """The server crashed and another will take its place: the answers for every request
        it left pending (to the client). Until `upstream_restarted`, requests routed get an
        error too. Requests the crashed server sent the client die with it: their id keys are
        returned, so that the client's late answers to them do not reach the new server."""
        session = self.session
        session.upstream_usage = add_usage(session.upstream_usage, usage)
        orphaned = {key for key in session.pending if not key[0]}  # server->client
        for key in orphaned:
            del session.pending[key]
        answers = self.relay.answer_pending(
            f"{reason} before responding; restarting it (helmet-otel)"
        )
        return answers, {key[1] for key in orphaned}

    def upstream_restarted(self, restart: Restart) -> None:
        """A new server took the crashed one's place (``restart.failure``: it cannot)."""
        if restart.failure is None:
            self.relay.upstream_gone = None
        for interceptor in self.interceptors:
            interceptor.upstream_restarted(self.session, restart)

    def client_closed(self, reason: str = "client closed the connection") -> None:
        if self.session.exit_reason is None:
            self.session.exit_reason = reason

    def signalled(self, name: str) -> None:
        if self.session.exit_reason is None:
            self.session.exit_reason = f"proxy received {name}"

    def ended(self) -> None:
        session = self.session
        if session.ended_ns is not None:
            return
        session.ended_ns = time.time_ns()
        for interceptor in self.interceptors:
            interceptor.session_ended(session)
