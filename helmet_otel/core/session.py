"""The session model: what the proxy observes of one conversation."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from helmet_otel.core.envelope import Direction, Envelope
from helmet_otel.protocol.message import (
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    META_SERVER_INFO,
    JsonId,
    Kind,
    Message,
    id_key,
)

LEGACY = "legacy"
MODERN = "modern"
UNKNOWN = "unknown"


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


@dataclass(slots=True)
class PendingRequest:
    id: JsonId
    method: str
    direction: Direction
    started_ns: int
    name: str | None = None


def _info(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None  # pyright: ignore[reportUnknownVariableType]


@dataclass
class Session:
    transport: str
    id: str = field(default_factory=new_session_id)
    started_ns: int = field(default_factory=time.time_ns)
    ended_ns: int | None = None
    era: str = UNKNOWN
    protocol_version: str | None = None
    client_info: dict[str, Any] | None = None
    server_info: dict[str, Any] | None = None
    method_counts: Counter[str] = field(default_factory=Counter[str])
    requests: int = 0
    errors: int = 0
    exit_status: int | None = None
    exit_reason: str | None = None
    pending: dict[tuple[bool, tuple[bool, JsonId]], PendingRequest] = field(
        default_factory=dict[tuple[bool, tuple[bool, JsonId]], PendingRequest]
    )
    revision: int = 0  # bumped whenever era, protocol version, client or server info change

    def observe(self, env: Envelope) -> None:
        """Update the session with a message that was just forwarded."""
        msg = env.msg
        kind = msg.kind
        if kind is Kind.REQUEST:
            assert msg.method is not None
            self.requests += 1
            self.method_counts[msg.method] += 1
            if msg.id is not None:
                self.pending[_key(env.direction, msg.id)] = PendingRequest(
                    msg.id, msg.method, env.direction, env.ts, msg.target_name
                )
            if env.direction is Direction.C2S:
                self._learn_from_request(msg)
        elif kind is Kind.NOTIFICATION:
            assert msg.method is not None
            self.method_counts[msg.method] += 1
        elif kind in (Kind.RESPONSE, Kind.ERROR):
            if kind is Kind.ERROR:
                self.errors += 1
            if msg.id is not None:
                env.request = self.pending.pop(_key(env.direction.reverse, msg.id), None)
            if env.request is not None and env.direction is Direction.S2C:
                self._learn_from_response(env.request, msg)
            elif env.request is None and kind is Kind.RESPONSE and msg.is_tool_error:
                self.errors += 1

    def _learn_from_request(self, msg: Message) -> None:
        params = msg.params
        if msg.method == "initialize" and params is not None:
            self._learn(LEGACY, params.get("protocolVersion"), client=params.get("clientInfo"))
            return
        meta = msg.meta
        if meta is not None and META_PROTOCOL_VERSION in meta:
            self._learn(MODERN, meta[META_PROTOCOL_VERSION], client=meta.get(META_CLIENT_INFO))
        elif msg.method == "server/discover" and self.era == UNKNOWN:
            self._learn(MODERN)

    def _learn_from_response(self, request: PendingRequest, msg: Message) -> None:
        result = msg.result
        if result is None:
            return
        if request.method == "initialize":
            self._learn(None, result.get("protocolVersion"), server=result.get("serverInfo"))
            return
        meta = _info(result.get("_meta"))
        if meta is not None:
            self._learn(None, server=meta.get(META_SERVER_INFO))

    def _learn(
        self, era: str | None, version: object = None, *, client: object = None,
        server: object = None,
    ) -> None:  # fmt: skip
        """Take what the traffic says of the session; `revision` counts the changes."""
        changed = False
        if era is not None and era != self.era:
            self.era, changed = era, True
        if isinstance(version, str) and version != self.protocol_version:
            self.protocol_version, changed = version, True
        client_info, server_info = _info(client), _info(server)
        if client_info is not None and client_info != self.client_info:
            self.client_info, changed = client_info, True
        if server_info is not None and server_info != self.server_info:
            self.server_info, changed = server_info, True
        if changed:
            self.revision += 1

    def pending_from(self, direction: Direction) -> list[PendingRequest]:
        """Requests sent in ``direction`` that have no response yet, oldest first."""
        return [p for p in self.pending.values() if p.direction is direction]


def _key(direction: Direction, msg_id: JsonId) -> tuple[bool, tuple[bool, JsonId]]:
    """Pending requests are keyed by the direction they were sent in plus the id."""
    return (direction is Direction.C2S, id_key(msg_id))
