"""The servers seen in the store, one summary each, and log filters narrowed to servers.

A server is what its sessions call it (``SessionInfo.server``: the service name, else the
server name, else the name the server gave in its handshake). Its numbers add up its sessions
(``Reader.sessions``, so live sessions count what they have done so far); its p95 latency is
over its latest ``LATENCY_SAMPLE`` answers, read newest first through the session index, so the
summary costs the same on a store of any size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from helmet_otel import semconv as sc
from helmet_otel.percentile import percentile
from helmet_otel.store.pages import read_rows
from helmet_otel.store.query import LogFilter, Reader, SessionInfo
from helmet_otel.store.schema import RARE_EVENT

__all__ = [
    "LATENCY_SAMPLE",
    "UNKNOWN_SERVER",
    "ServerSummary",
    "restrict_to_servers",
    "server_latencies",
    "server_name",
    "summarize_servers",
]

LATENCY_SAMPLE: Final = 1000
UNKNOWN_SERVER: Final = "(unknown)"


@dataclass(frozen=True, slots=True)
class ServerSummary:
    name: str
    command: str | None  # the newest session's command line or URL
    transport: str | None
    sessions: int
    active: int
    calls: int
    errors: int
    p95_ms: float | None
    last_seen_ns: int
    findings: int  # helmet.security records

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


def server_name(info: SessionInfo) -> str:
    return info.server or UNKNOWN_SERVER


def _latencies(reader: Reader, newest_first: Iterable[str], want: int) -> list[float]:
    values: list[float] = []
    for session_id in newest_first:
        if len(values) >= want:
            break
        rows = read_rows(
            reader,
            "SELECT latency_ms FROM logs INDEXED BY logs_session_ts WHERE session_id = ? AND event = ?"
            " AND latency_ms IS NOT NULL ORDER BY ts DESC LIMIT ?",
            (session_id, sc.EVENT_RESPONSE, want - len(values)),
        )
        values.extend(float(r[0]) for r in rows)  # pyright: ignore[reportArgumentType]
    return values


def _findings(reader: Reader, server_of: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for session_id, service, n in read_rows(
        reader,
        f"SELECT session_id, service, count(*) FROM logs WHERE event = ? AND {RARE_EVENT}"
        " GROUP BY 1, 2",
        (sc.EVENT_SECURITY,),
    ):
        name = server_of.get(str(session_id)) if session_id is not None else None
        name = name or (str(service) if service is not None else UNKNOWN_SERVER)
        counts[name] = counts.get(name, 0) + int(n)  # pyright: ignore[reportArgumentType]
    return counts


def _groups(infos: Sequence[SessionInfo]) -> dict[str, list[SessionInfo]]:
    """Sessions by server, each server's newest first."""
    groups: dict[str, list[SessionInfo]] = {}
    for info in infos:
        groups.setdefault(server_name(info), []).append(info)
    for members in groups.values():
        members.sort(key=lambda i: (i.last_ts, i.session_id), reverse=True)
    return groups


def server_latencies(reader: Reader, sessions: Sequence[SessionInfo]) -> dict[str, float | None]:
    """Each server's p95 latency (ms) over its latest ``LATENCY_SAMPLE`` answers."""
    result: dict[str, float | None] = {}
    for name, members in _groups(sessions).items():
        values = sorted(_latencies(reader, (m.session_id for m in members), LATENCY_SAMPLE))
        result[name] = percentile(values, 0.95) if values else None
    return result


def summarize_servers(
    reader: Reader, sessions: Sequence[SessionInfo] | None = None, *, latency: bool = True
) -> list[ServerSummary]:
    """Every server seen, the most recently seen first; without ``latency`` no p95 (it costs
    the most: ask ``server_latencies`` separately)."""
    infos = list(reader.sessions() if sessions is None else sessions)
    groups = _groups(infos)
    latencies = server_latencies(reader, infos) if latency else {}
    findings = _findings(reader, {i.session_id: server_name(i) for i in infos})
    result: list[ServerSummary] = []
    for name, members in groups.items():
        newest = members[0]
        result.append(
            ServerSummary(
                name=name,
                command=next((m.server_command for m in members if m.server_command), None),
                transport=newest.transport,
                sessions=len(members),
                active=sum(1 for m in members if m.status == "active"),
                calls=sum(m.requests or 0 for m in members),
                errors=sum(m.errors or 0 for m in members),
                p95_ms=latencies.get(name),
                last_seen_ns=newest.last_ts,
                findings=findings.pop(name, 0),
            )
        )
    for name, count in findings.items():  # findings of a server with no session (auth failures)
        result.append(ServerSummary(name, None, None, 0, 0, 0, 0, None, 0, count))
    result.sort(key=lambda s: (-s.last_seen_ns, s.name))
    return result


def restrict_to_servers(
    flt: LogFilter, servers: Sequence[str], sessions: Sequence[SessionInfo]
) -> LogFilter | None:
    """``flt`` narrowed to the sessions of ``servers`` (and still to its own session prefixes);
    None when no session is left, so nothing can match."""
    if not servers:
        return flt
    wanted = set(servers)
    ids = [i.session_id for i in sessions if server_name(i) in wanted]
    if flt.session_prefixes:
        ids = [i for i in ids if i.startswith(flt.session_prefixes)]
    if not ids:
        return None
    return dataclasses.replace(flt, session_prefixes=tuple(ids))
