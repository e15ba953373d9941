"""Security findings in the store (``helmet.security`` records): counts by type and severity,
policy blocks by rule, tool and server, and the latest findings.

The detectors that write them are described in docs/policies.md; this module only reads what a
store holds, so the viewers show findings from any writer of the taxonomy. A ``policy_block``
of a rule in shadow mode is written with severity ``low`` (it was decided, not enforced): it is
counted apart from the enforced blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from helmet_otel import semconv as sc
from helmet_otel.store.pages import page
from helmet_otel.store.query import LogEntry, LogFilter, Reader
from helmet_otel.store.rows import read_rows
from helmet_otel.store.schema import RARE_EVENT

__all__ = [
    "BlockCount",
    "FindingCount",
    "SecuritySummary",
    "finding_type",
    "security_summary",
]

POLICY_BLOCK: Final = "policy_block"
SHADOW_SEVERITY: Final = "low"


def _attr(key: str) -> str:
    return f"json_extract(attrs, '$.\"{key}\"')"


_TYPE: Final = f"coalesce({_attr(sc.HELMET_SECURITY_TYPE)}, 'unknown')"
_SEVERITY: Final = _attr(sc.HELMET_SECURITY_SEVERITY)
_RULE: Final = _attr(sc.HELMET_SECURITY_RULE)


@dataclass(frozen=True, slots=True)
class FindingCount:
    type: str
    severity: str | None
    count: int
    last_ts: int


@dataclass(frozen=True, slots=True)
class BlockCount:
    rule: str | None
    tool: str | None
    server: str | None
    enforced: int
    shadow: int  # decided by a rule in shadow mode: recorded, not blocked
    last_ts: int


@dataclass(frozen=True, slots=True)
class SecuritySummary:
    by_type: list[FindingCount]  # the most frequent first
    blocks_by_rule: list[BlockCount]  # the most frequent first
    total: int
    blocks: int  # enforced policy blocks
    shadow_blocks: int
    latest: list[LogEntry]  # newest first


def finding_type(entry: LogEntry) -> str:
    value = entry.extra_attributes.get(sc.HELMET_SECURITY_TYPE)
    return value if isinstance(value, str) else "unknown"


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def security_summary(
    reader: Reader, *, since_ns: int | None = None, latest: int = 50
) -> SecuritySummary:
    where = f"event = ? AND {RARE_EVENT}"
    args: list[object] = [sc.EVENT_SECURITY]
    if since_ns is not None:
        where += " AND ts >= ?"
        args.append(since_ns)
    counts = [
        FindingCount(str(kind), _text(severity), _int(n), _int(ts))
        for kind, severity, n, ts in read_rows(
            reader,
            f"SELECT {_TYPE}, {_SEVERITY}, count(*), max(ts) FROM logs WHERE {where} GROUP BY 1, 2",
            args,
        )
    ]
    counts.sort(key=lambda c: (-c.count, c.type, c.severity or ""))
    blocks = [
        BlockCount(
            _text(rule), _text(tool), _text(server), _int(n) - _int(shadow), _int(shadow), _int(ts)
        )
        for rule, tool, server, n, shadow, ts in read_rows(
            reader,
            f"SELECT {_RULE}, target, service, count(*), total({_SEVERITY} = ?), max(ts)"
            f" FROM logs WHERE {where} AND {_TYPE} = ? GROUP BY 1, 2, 3",
            [SHADOW_SEVERITY, *args, POLICY_BLOCK],
        )
    ]
    blocks.sort(
        key=lambda b: (-(b.enforced + b.shadow), b.rule or "", b.tool or "", b.server or "")
    )
    newest = page(reader, LogFilter(events=(sc.EVENT_SECURITY,), since_ns=since_ns), limit=latest)
    return SecuritySummary(
        by_type=counts,
        blocks_by_rule=blocks,
        total=sum(c.count for c in counts),
        blocks=sum(b.enforced for b in blocks),
        shadow_blocks=sum(b.shadow for b in blocks),
        latest=newest.entries,
    )
