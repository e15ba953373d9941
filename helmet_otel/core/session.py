"""The session model: what the proxy observes of one conversation."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from helmet_otel.core.envelope import C2S, S2C, Direction, Envelope
from helmet_otel.protocol.message import (
    ERROR,
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    META_SERVER_INFO,
    NAMED_METHODS,
    NOTIFICATION,
    REQUEST,
    RESPONSE,
    JsonId,
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
    cancelled: bool = False  # the sender cancelled it: it expects no response
    span_id: int = 0  # the SERVER span telemetry gave it; 0 when telemetry does not trace it


class ProcessUsage(NamedTuple):
    """What an exited server process used, as its parent reaped it (``wait4``): its own CPU
    time and that of the children it waited for, and its largest resident set."""

    cpu_user_s: float
    cpu_system_s: float
    max_rss_bytes: int


def add_usage(total: ProcessUsage | None, more: ProcessUsage | None) -> ProcessUsage | None:
    """What the servers of a session used together: CPU times add up, the peak is the largest."""
    if total is None or more is None:
        return more or total
    return ProcessUsage(
        total.cpu_user_s + more.cpu_user_s,
        total.cpu_system_s + more.cpu_system_s,
        max(total.max_rss_bytes, more.max_rss_bytes),
    )


class Restart(NamedTuple):
    """A crashed server was replaced by a new one (``--restart on-failure``)."""

    number: int  # restarts in the session so far, this one included
    upstream: dict[str, object]  # the new server, as for a session's start (command, pid, cwd)
    previous: str  # how the server before it ended (its exit, as a sentence)
    replayed: bool  # the client's initialize went to the new server again
    failure: str | None  # why the new server cannot take over the session, or None
    usage: ProcessUsage | None  # what the servers of the session used so far, all together


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
    upstream_usage: ProcessUsage | None = None  # the server processes', once they exited
    # The protocol's own session id (Streamable HTTP, legacy era: ``Mcp-Session-Id``); None where
    # the protocol has none (stdio, the 2026-07-28 revision). ``id`` is the proxy's grouping.
    mcp_session_id: str | None = None
    # Requests waiting for an answer, keyed by the direction they were sent in (is it
    # client->server?) plus `id_key` of the id; `observe` builds the key inline.
    pending: dict[tuple[bool, tuple[bool, JsonId]], PendingRequest] = field(
        default_factory=dict[tuple[bool, tuple[bool, JsonId]], PendingRequest]
    )
    revision: int = 0  # bumped whenever era, protocol version, client or server info change

    def observe(self, env: Envelope) -> None:
        """Update the session with a message that was just forwarded."""
        msg = env.msg
        kind = msg.kind
        if kind is REQUEST:
            method = msg.method
            assert method is not None
            self.requests += 1
            self.method_counts[method] += 1
            payload = msg.payload  # params read once here (the Message properties re-read them)
            params = _info(payload.get("params")) if payload is not None else None
            msg_id = msg.id
            direction = env.direction
            c2s = direction is C2S
            if msg_id is not None:
                name = (
                    params.get("name") if params is not None and method in NAMED_METHODS else None
                )
                self.pending[(c2s, (isinstance(msg_id, str), msg_id))] = PendingRequest(
                    msg_id, method, direction, env.ts, name if isinstance(name, str) else None,
                    False, env.server_span_id,
                )  # fmt: skip
            if c2s:
                self._learn_from_request(method, params)
        elif kind is NOTIFICATION:
            method = msg.method
            assert method is not None
            self.method_counts[method] += 1
            if method == "notifications/cancelled":
                self._cancel(env)
        elif kind is RESPONSE or kind is ERROR:
            if kind is ERROR:
                self.errors += 1
            msg_id = msg.id
            s2c = env.direction is S2C
            if msg_id is not None:  # the request went the other way
                key = (s2c, (isinstance(msg_id, str), msg_id))
                env.request = self.pending.pop(key, None)
            if env.request is not None and s2c:
                self._learn_from_response(env.request, msg)
            elif env.request is None and kind is RESPONSE and msg.is_tool_error:
                self.errors += 1

    def _learn_from_request(self, method: str, params: dict[str, Any] | None) -> None:
        if params is None:
            if method == "server/discover" and self.era == UNKNOWN:
                self._learn(MODERN)
            return
        if method == "initialize":
            self._learn(LEGACY, params.get("protocolVersion"), client=params.get("clientInfo"))
            return
        meta = _info(params.get("_meta"))
        if meta is not None and META_PROTOCOL_VERSION in meta:
            self._learn(MODERN, meta[META_PROTOCOL_VERSION], client=meta.get(META_CLIENT_INFO))
        elif method == "server/discover" and self.era == UNKNOWN:
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
        """Requests sent in ``direction`` that still wait for a response, oldest first (a
        cancelled request waits for none, though the other side may still answer it)."""
        return [p for p in self.pending.values() if p.direction is direction and not p.cancelled]

    def _cancel(self, env: Envelope) -> None:
        payload = env.msg.payload
        params = _info(payload.get("params")) if payload is not None else None
        request_id: object = params.get("requestId") if params is not None else None
        if isinstance(request_id, str | int) and not isinstance(request_id, bool):
            c2s = env.direction is C2S  # cancels a request sent the same way
            pending = self.pending.get((c2s, id_key(request_id)))
            if pending is not None and not pending.cancelled:
                pending.cancelled = True
                env.request = pending  # the first cancellation of it (repeats name none)
