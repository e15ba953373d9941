"""Security findings in the store (``helmet.security`` records): counts by type and the latest.

The detectors that write them are DESIGN.md's "Security monitoring"; this module only reads
what a store holds, so the viewers show findings from any writer of the taxonomy.
"""

from __future__ import annotations

from dataclasses import dataclass

from helmet_otel import semconv as sc
from helmet_otel.store.pages import page, read_rows
from helmet_otel.store.query import LogEntry, LogFilter, Reader

__all__ = ["FindingCount", "SecuritySummary", "finding_type", "security_summary"]

POLICY_BLOCK = "policy_block"
_TYPE = f"coalesce(json_extract(attrs, '$.\"{sc.HELMET_SECURITY_TYPE}\"'), 'unknown')"


@dataclass(frozen=True, slots=True)
class FindingCount:
    type: str
    count: int
    last_ts: int


@dataclass(frozen=True, slots=True)
class SecuritySummary:
    by_type: list[FindingCount]  # the most frequent first
    total: int
    blocks: int  # policy blocks
    latest: list[LogEntry]  # newest first


def finding_type(entry: LogEntry) -> str:
    value = entry.extra_attributes.get(sc.HELMET_SECURITY_TYPE)
    return value if isinstance(value, str) else "unknown"


def security_summary(
    reader: Reader, *, since_ns: int | None = None, latest: int = 50
) -> SecuritySummary:
    sql = f"SELECT {_TYPE}, count(*), max(ts) FROM logs WHERE event = ?"
    args: list[object] = [sc.EVENT_SECURITY]
    if since_ns is not None:
        sql += " AND ts >= ?"
        args.append(since_ns)
    counts = [
        FindingCount(str(kind), int(n), int(ts))  # pyright: ignore[reportArgumentType]
        for kind, n, ts in read_rows(reader, sql + " GROUP BY 1", args)
    ]
    counts.sort(key=lambda c: (-c.count, c.type))
    newest = page(reader, LogFilter(events=(sc.EVENT_SECURITY,), since_ns=since_ns), limit=latest)
    return SecuritySummary(
        by_type=counts,
        total=sum(c.count for c in counts),
        blocks=sum(c.count for c in counts if c.type == POLICY_BLOCK),
        latest=newest.entries,
    )
