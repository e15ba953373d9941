"""A session's spans as the viewers read them (`SpanEntry`), and their traces nested
(`build_traces`): the part of the read API (``query``) that ``trace`` and the web viewer draw."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from helmet_otel.store.model import decode


@dataclass(frozen=True, slots=True)
class SpanEntry:
    id: int
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ts: int
    end_ts: int | None
    status: str
    status_message: str | None
    session_id: str | None
    segment: int | None
    service: str | None
    attrs_json: str | None
    links_json: str | None

    @property
    def duration_ms(self) -> float | None:
        return None if self.end_ts is None else (self.end_ts - self.start_ts) / 1e6

    @property
    def attributes(self) -> dict[str, object]:
        value = decode(self.attrs_json)
        return value if isinstance(value, dict) else {}  # pyright: ignore[reportUnknownVariableType]

    @property
    def links(self) -> list[object]:
        value = decode(self.links_json)
        return value if isinstance(value, list) else []  # pyright: ignore[reportUnknownVariableType]


@dataclass(slots=True)
class SpanNode:
    span: SpanEntry
    children: list[SpanNode] = field(default_factory=list["SpanNode"])

    def walk(self, depth: int = 0) -> Iterator[tuple[int, SpanNode]]:
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)


@dataclass(slots=True)
class TraceTree:
    trace_id: str
    segment: int | None
    roots: list[SpanNode]


def span_entries(rows: Iterable[Sequence[object]]) -> list[SpanEntry]:
    """Entries from ``spans`` rows (their 15 columns, then ``client_span_id``): a row holding a
    call's CLIENT/SERVER pair (schema 5) gives both, the SERVER span first."""
    entries: list[SpanEntry] = []
    for row in rows:
        entries.append(SpanEntry(*row[:15]))  # pyright: ignore[reportArgumentType]
        client = row[15]
        if client is not None:  # the same but for its id, parent (the SERVER) and kind
            pair = (row[0], row[1], client, row[2], row[4], "CLIENT", *row[6:15])
            entries.append(SpanEntry(*pair))  # pyright: ignore[reportArgumentType]
    return entries


def build_traces(spans: Iterable[SpanEntry]) -> list[TraceTree]:
    """Group spans by trace and nest them; traces in segment order, children by start time."""
    by_trace: dict[str, list[SpanEntry]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    trees: list[TraceTree] = []
    for trace_id, members in by_trace.items():
        nodes = {s.span_id: SpanNode(s) for s in members}
        roots: list[SpanNode] = []
        for span in sorted(members, key=lambda s: (s.start_ts, s.id)):
            node = nodes[span.span_id]
            parent = nodes.get(span.parent_span_id) if span.parent_span_id else None
            if parent is None or parent is node:
                roots.append(node)
            else:
                parent.children.append(node)
        segments = [s.segment for s in members if s.segment is not None]
        trees.append(
            TraceTree(trace_id=trace_id, segment=min(segments) if segments else None, roots=roots)
        )
    trees.sort(
        key=lambda t: (
            t.segment if t.segment is not None else math.inf,
            min(r.span.start_ts for r in t.roots) if t.roots else 0,
        )
    )
    return trees
