"""The relay: transport-agnostic message handling between a client and a server.

Transports read bytes, split lines and hand them to `Relay.route`; it returns what to write on
each side. Nothing here awaits, so a batch of lines is handled in order, atomically. Answers the
proxy writes itself (an interceptor's reply, an error for a request the upstream can no longer
take) are envelopes like any message: the session and every interceptor see them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from helmet_otel.core.envelope import C2S, S2C, Direction, Envelope
from helmet_otel.core.interceptor import BaseInterceptor, Interceptor
from helmet_otel.core.session import Session
from helmet_otel.protocol.message import (
    REQUEST,
    JsonId,
    Kind,
    cancelled_notification,
    error_response,
    id_key,
    inspect,
)

# JSON-RPC code used for errors the proxy synthesises when the upstream is gone. It is the
# MCP Python SDK's CONNECTION_CLOSED code, in the legacy implementation-defined range.
UPSTREAM_GONE_CODE = -32000
# The key, in ``error.data`` of an error the proxy writes because an HTTP upstream failed the
# request, of that HTTP status (telemetry makes it the error's ``error.type``)
HTTP_STATUS_KEY = "http.response.status_code"
# The MCP TypeScript SDK's RequestTimeout: a request the proxy gave up waiting for
REQUEST_TIMEOUT_CODE = -32001


def timeout_reason(timeout: float) -> str:
    return f"request timed out after {timeout:g} s (helmet-otel --request-timeout)"


Hooks = tuple[Callable[[Envelope], None], ...]


def _hooks(interceptors: tuple[Interceptor, ...], name: str, kinds: str) -> dict[str, Hooks]:
    """Per kind of message (by its value: an enum member's hash is a Python-level call), the
    interceptors' ``name`` hooks that want it (their ``kinds`` attribute; see
    `BaseInterceptor`), as bound methods, in order; `BaseInterceptor`'s no-op is left out."""
    no_op = getattr(BaseInterceptor, name)
    wanted = [
        (getattr(interceptor, name), getattr(interceptor, kinds, None))
        for interceptor in interceptors
        if getattr(type(interceptor), name, None) is not no_op
    ]
    return {
        kind.value: tuple(h for h, only in wanted if only is None or kind in only) for kind in Kind
    }


@dataclass(slots=True, init=False)
class Routed:
    """What to write: ``forward`` to the other side, ``replies`` back to the sender (each in
    order), and the envelopes to hand to `Relay.forwarded` once the bytes are written."""

    forward: list[bytes]
    replies: list[bytes]
    envelopes: list[Envelope]

    # Written out: the generated one calls a generic alias per list (slow, and once per read).
    def __init__(self) -> None:
        self.forward = []
        self.replies = []
        self.envelopes = []


class Relay:
    def __init__(self, session: Session, interceptors: Sequence[Interceptor] = ()) -> None:
        self.session = session
        self.interceptors = tuple(interceptors)
        # the hooks each kind of message goes through, bound once
        self._before = _hooks(self.interceptors, "before_forward", "before_kinds")
        self._after = _hooks(self.interceptors, "after_forward", "after_kinds")
        self.upstream_gone: str | None = None  # why, once the server can take no more requests

    def route(self, direction: Direction, lines: list[bytes]) -> Routed:
        routed = Routed()
        forward, replies, envelopes = routed.forward, routed.replies, routed.envelopes
        now = time.time_ns()
        hooks = self._before
        c2s = direction is C2S
        for line in lines:
            env = Envelope(direction, line, msg := inspect(line), now)
            for hook in hooks[msg.kind._value_]:
                hook(env)
            if env.reply is None and self.upstream_gone is not None and c2s:
                msg = env.msg
                if msg.kind is REQUEST:
                    env.reply = error_response(msg.id, UPSTREAM_GONE_CODE, self.upstream_gone)
            envelopes.append(env)
            reply = env.reply
            if reply is None:
                forward.append(env.wire)
            else:
                replies.append(reply)
                back = S2C if c2s else C2S
                envelopes.append(Envelope(back, reply, inspect(reply), now, proxy=True))
        return routed

    def forwarded(self, routed: Routed) -> None:
        """Call once the transport has taken the routed bytes: updates the session, runs hooks."""
        observe = self.session.observe
        hooks = self._after
        for env in routed.envelopes:
            observe(env)
            for hook in hooks[env.msg.kind._value_]:
                hook(env)

    def answer_pending(self, reason: str) -> Routed:
        """The upstream is gone: from now on the proxy answers requests itself, and here are
        the answers to every request the client still waits for (``forward``: to the client)."""
        self.upstream_gone = reason
        routed = Routed()
        now = time.time_ns()
        for pending in self.session.pending_from(C2S):
            line = error_response(pending.id, UPSTREAM_GONE_CODE, reason)
            routed.forward.append(line)
            routed.envelopes.append(Envelope(S2C, line, inspect(line), now, proxy=True))
        return routed

    def answer(self, request_id: JsonId, code: int, message: str, data: object = None) -> Routed:
        """Answer the client's request ``request_id`` with an error the proxy writes (the
        upstream failed it, or it took too long): ``forward`` holds the answer for the client.
        Nothing when the request is not pending (answered meanwhile)."""
        routed = Routed()
        if (True, id_key(request_id)) not in self.session.pending:
            return routed
        line = error_response(request_id, code, message, data)
        routed.forward.append(line)
        routed.envelopes.append(Envelope(S2C, line, inspect(line), time.time_ns(), proxy=True))
        return routed

    def time_out(self, request_id: JsonId, timeout: float) -> tuple[Routed, Routed] | None:
        """The client's request ``request_id`` got no answer within ``timeout`` seconds: the
        proxy's error for the client (-32001, naming the timeout) and the
        ``notifications/cancelled`` for the server, in that order; None when the request is not
        pending (answered meanwhile). The caller writes each and hands it to `forwarded`."""
        reason = timeout_reason(timeout)
        answer = self.answer(request_id, REQUEST_TIMEOUT_CODE, reason, {"timeout": timeout})
        if not answer.forward:
            return None
        return answer, self.cancel(request_id, reason)

    def cancel(self, request_id: JsonId, reason: str) -> Routed:
        """``notifications/cancelled`` for the client's request, from the proxy: ``forward``
        holds it for the server (a client that went away, a request that timed out)."""
        return self.route(C2S, [cancelled_notification(request_id, reason)])
