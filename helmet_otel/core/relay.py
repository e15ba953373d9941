"""The relay: transport-agnostic message handling between a client and a server.

Transports read bytes, split lines and hand them to `Relay.route`; it returns what to write on
each side. Nothing here awaits, so a batch of lines is handled in order, atomically.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from helmet_otel.core.envelope import Direction, Envelope
from helmet_otel.core.interceptor import Interceptor
from helmet_otel.core.session import Session
from helmet_otel.protocol.message import Kind, error_response, inspect

# JSON-RPC code used for errors the proxy synthesises when the upstream is gone. It is the
# MCP Python SDK's CONNECTION_CLOSED code, in the legacy implementation-defined range.
UPSTREAM_GONE_CODE = -32000

_C2S = Direction.C2S  # enum members are slow to look up on their class (Python 3.11)


@dataclass(slots=True, init=False)
class Routed:
    forward: list[bytes]  # to the other side, in order
    replies: list[bytes]  # back to the sender, in order
    envelopes: list[Envelope]

    # Written out: the generated one calls a generic alias per list (slow, and once per read).
    def __init__(
        self, forward: list[bytes] | None = None, replies: list[bytes] | None = None,
        envelopes: list[Envelope] | None = None,
    ) -> None:  # fmt: skip
        self.forward = [] if forward is None else forward
        self.replies = [] if replies is None else replies
        self.envelopes = [] if envelopes is None else envelopes


class Relay:
    def __init__(self, session: Session, interceptors: Sequence[Interceptor] = ()) -> None:
        self.session = session
        self.interceptors = tuple(interceptors)
        self.upstream_gone: str | None = None  # why, once the server can take no more requests

    def route(self, direction: Direction, lines: list[bytes]) -> Routed:
        routed = Routed()
        forward, replies, envelopes = routed.forward, routed.replies, routed.envelopes
        now = time.time_ns()
        interceptors = self.interceptors
        c2s = direction is _C2S
        for line in lines:
            env = Envelope(direction, line, inspect(line), now)
            for interceptor in interceptors:
                interceptor.before_forward(env)
            if env.reply is None and self.upstream_gone is not None and c2s:
                msg = env.msg
                if msg.kind is Kind.REQUEST:
                    env.reply = error_response(msg.id, UPSTREAM_GONE_CODE, self.upstream_gone)
            if env.reply is not None:
                replies.append(env.reply)
            else:
                forward.append(env.wire)
            envelopes.append(env)
        return routed

    def forwarded(self, routed: Routed) -> None:
        """Call once the transport has taken the routed bytes: updates the session, runs hooks."""
        session = self.session
        interceptors = self.interceptors
        for env in routed.envelopes:
            if env.reply is None:
                session.observe(env)
            for interceptor in interceptors:
                interceptor.after_forward(env)

    def fail_pending(self, reason: str) -> list[bytes]:
        """Mark the upstream gone and answer every request the client still waits for."""
        self.upstream_gone = reason
        replies: list[bytes] = []
        session = self.session
        for pending in session.pending_from(Direction.C2S):
            line = error_response(pending.id, UPSTREAM_GONE_CODE, reason)
            replies.append(line)
        return replies

    def synthesized(self, direction: Direction, lines: list[bytes]) -> None:
        """Record lines the proxy wrote itself (e.g. the errors of `fail_pending`)."""
        now = time.time_ns()
        routed = Routed()
        for line in lines:
            routed.envelopes.append(Envelope(direction, line, inspect(line), now))
        self.forwarded(routed)
