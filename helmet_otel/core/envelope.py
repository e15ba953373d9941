"""One message on its way through the proxy."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from helmet_otel.protocol.message import Message

if TYPE_CHECKING:
    from helmet_otel.core.session import PendingRequest


class Direction(enum.Enum):
    C2S = "client->server"
    S2C = "server->client"


# Module constants for the per-message paths (see protocol.message.REQUEST for why).
C2S: Final = Direction.C2S
S2C: Final = Direction.S2C

# `Envelope.annotations` key a transport sets: the ``traceparent`` header of the HTTP request
# that carried a client message (telemetry links the request's span to it)
HTTP_TRACEPARENT: Final = "http.traceparent"


@dataclass(slots=True, init=False)
class Envelope:
    """A message with everything the relay knows about it.

    ``raw`` is what the sender wrote; ``wire`` is what is forwarded (the same object unless a
    documented feature, such as trace-context propagation, rewrote it). An interceptor that sets
    ``reply`` answers the sender itself and the message is not forwarded (a policy block); the
    reply then travels as an envelope of its own, with ``proxy`` set (the proxy wrote it), so the
    session and every interceptor see it like any answer.
    """

    direction: Direction
    raw: bytes
    msg: Message
    ts: int  # time.time_ns() when the line was read
    wire: bytes
    reply: bytes | None
    request: PendingRequest | None  # the matched request, on responses; on the first
    # notifications/cancelled of a pending request, that request
    server_span_id: int
    client_span_id: int
    annotations: dict[str, object]
    proxy: bool  # the proxy wrote this message (a reply, an "upstream gone" error)
    weight: int  # the calls a traced request stands for (set by the telemetry feed)

    # Written out rather than generated (the defaults are here, not on the fields): one is made
    # per message, and the generated one pays for a generic-alias ``default_factory``.
    def __init__(
        self, direction: Direction, raw: bytes, msg: Message, ts: int, wire: bytes = b"",
        reply: bytes | None = None, request: PendingRequest | None = None,
        server_span_id: int = 0, client_span_id: int = 0,
        annotations: dict[str, object] | None = None, proxy: bool = False,
    ) -> None:  # fmt: skip
        self.direction = direction
        self.raw = raw
        self.msg = msg
        self.ts = ts
        self.wire = wire or raw
        self.reply = reply
        self.request = request
        self.server_span_id = server_span_id
        self.client_span_id = client_span_id
        self.annotations = {} if annotations is None else annotations
        self.proxy = proxy
        self.weight = 1
