"""What ``helmet-otel logs --import`` reads: the exports of ``logs`` and ``trace``.

- ``logs --format ndjson`` (one record per line) and ``--format json`` (an array of records);
- ``logs --calls --format json|ndjson``: calls, each with its ``request`` and ``response``
  record (those two records are imported);
- ``trace --format json``: a session's span trees (the spans are imported).

Anything else is refused with a message that says what it is and what is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, cast

import orjson

from helmet_otel import semconv as sc
from helmet_otel.store import codec
from helmet_otel.store.model import LogRow, SpanRow

__all__ = ["ACCEPTED", "ImportData", "NotAnExport", "parse_export"]

ACCEPTED: Final = (
    "what `helmet-otel logs --format ndjson|json` wrote (records, or calls with --calls) or "
    "`helmet-otel trace --format json` wrote (spans)"
)


class NotAnExport(ValueError):
    """The text is not an export ``--import`` reads (the message says why and what is)."""


@dataclass(slots=True)
class ImportData:
    rows: list[LogRow] = field(default_factory=list[LogRow])
    spans: list[SpanRow] = field(default_factory=list[SpanRow])
    kinds: set[str] = field(default_factory=set[str])  # "records", "calls", "trace"


def _object(value: object) -> dict[str, object] | None:
    return cast("dict[str, object]", value) if isinstance(value, dict) else None


def _spans(node: dict[str, object], session_id: str | None) -> Iterator[SpanRow]:
    def text(key: str) -> str | None:
        value = node.get(key)
        return value if isinstance(value, str) else None

    def number(key: str) -> int | None:
        value = node.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    trace_id, span_id, name, start = (
        text("trace_id"),
        text("span_id"),
        text("name"),
        number("start_unix_nano"),
    )
    if trace_id is None or span_id is None or name is None or start is None:
        raise NotAnExport("a span needs trace_id, span_id, name and start_unix_nano")
    attrs = _object(node.get("attributes")) or {}
    segment = attrs.get(sc.HELMET_TRACE_SEGMENT)
    links = node.get("links")
    yield SpanRow(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=text("parent_span_id"),
        name=name,
        kind=text("kind") or "INTERNAL",
        start_ts=start,
        end_ts=number("end_unix_nano"),
        status=text("status") or "UNSET",
        status_message=text("status_message"),
        session_id=session_id,
        segment=segment if isinstance(segment, int) and not isinstance(segment, bool) else None,
        service=None,
        attrs=dict(attrs),
        links=[
            cast("dict[str, object]", x) for x in cast("list[object]", links) if isinstance(x, dict)
        ]
        if isinstance(links, list)
        else [],
    )
    children = node.get("children")
    for child in cast("list[object]", children) if isinstance(children, list) else []:
        entry = _object(child)
        if entry is not None:
            yield from _spans(entry, session_id)


def _trace(doc: dict[str, object], data: ImportData) -> None:
    session_id = doc.get("session_id")
    traces = doc.get("traces")
    assert isinstance(traces, list)
    for tree in cast("list[object]", traces):
        entry = _object(tree)
        roots = entry.get("spans") if entry is not None else None
        if not isinstance(roots, list):
            raise NotAnExport("a trace export's traces each need their spans")
        for root in cast("list[object]", roots):
            node = _object(root)
            if node is None:
                raise NotAnExport("a span must be a JSON object")
            data.spans.extend(_spans(node, session_id if isinstance(session_id, str) else None))
    data.kinds.add("trace")


def _item(obj: object, data: ImportData) -> None:
    entry = _object(obj)
    if entry is not None and "status" in entry and ("request" in entry or "response" in entry):
        for key in ("request", "response"):  # a call: its two records
            if entry.get(key) is not None:
                data.rows.append(codec.import_record(entry[key]))
        data.kinds.add("calls")
        return
    data.rows.append(codec.import_record(obj))
    data.kinds.add("records")


def _describe(doc: dict[str, object]) -> str:
    """What other export an object is ("" when it is none of them)."""
    if ("rows" in doc and "by" in doc) or ("method" in doc and "p50_ms" in doc):
        return "a stats export"
    if "session_id" in doc and "status" in doc and "requests" in doc:
        return "a sessions export"
    return ""


def parse_export(text: str) -> ImportData:
    """The records and spans of an export. Raises `NotAnExport`."""
    data = ImportData()
    numbered: list[tuple[int, object]]
    try:
        whole: object = orjson.loads(text)  # json (an array, a trace, or one ndjson line)
    except orjson.JSONDecodeError:
        try:
            numbered = [
                (n, orjson.loads(line))
                for n, line in enumerate(text.splitlines(), 1)
                if line.strip()
            ]
        except orjson.JSONDecodeError as exc:
            raise NotAnExport(f"not JSON ({exc}); --import takes {ACCEPTED}") from None
    else:
        doc = _object(whole)
        if doc is not None and isinstance(doc.get("traces"), list):
            _trace(doc, data)
            return data
        if doc is not None and "time_unix_nano" not in doc:
            kind = _describe(doc) or "a JSON object that is no export"
            raise NotAnExport(f"this is {kind}; --import takes {ACCEPTED}")
        items = cast("list[object]", whole) if isinstance(whole, list) else [whole]
        numbered = list(enumerate(items, 1))
    for n, obj in numbered:
        try:
            _item(obj, data)
        except NotAnExport:
            raise
        except ValueError as exc:
            entry = _object(obj)
            kind = _describe(entry) if entry is not None else ""
            what = f"is {kind}" if kind else f"is not a log record ({exc})"
            raise NotAnExport(f"record {n} {what}; --import takes {ACCEPTED}") from None
    return data
