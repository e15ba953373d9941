"""``helmet-otel trace SESSION``: a session's span tree, as a table or json."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson

from helmet_otel.cli.common import NotFound, UsageError
from helmet_otel.cli.render import Style, colour_wanted, output, printable, wants_pager
from helmet_otel.store.calls import pending_calls
from helmet_otel.store.query import LogEntry, Reader
from helmet_otel.store.timefmt import format_duration_ms, format_rfc3339
from helmet_otel.store.traces import SpanNode, TraceTree

__all__ = ["cmd_trace", "resolve_one_session"]


def _span_object(node: SpanNode) -> dict[str, object]:
    s = node.span
    return {
        "name": s.name,
        "kind": s.kind,
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "start": format_rfc3339(s.start_ts),
        "start_unix_nano": s.start_ts,
        "end_unix_nano": s.end_ts,
        "duration_ms": s.duration_ms,
        "status": s.status,
        "status_message": s.status_message,
        "attributes": s.attributes,
        "links": s.links,
        "children": [_span_object(c) for c in node.children],
    }


def _tree_lines(
    node: SpanNode, prefix: str, last: bool, root: bool, glyphs: tuple[str, ...]
) -> Iterator[tuple[str, SpanNode]]:
    tee, elbow, pipe, blank = glyphs
    yield prefix + ("" if root else (elbow if last else tee)), node
    child_prefix = prefix + ("" if root else (blank if last else pipe))
    for i, child in enumerate(node.children):
        yield from _tree_lines(child, child_prefix, i == len(node.children) - 1, False, glyphs)


def _glyphs(stream: IO[str]) -> tuple[str, str, str, str]:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "├└│─".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ("|- ", "`- ", "|  ", "   ")
    return ("├─ ", "└─ ", "│  ", "   ")


def resolve_one_session(reader: Reader, ref: str, servers: Sequence[str], store: str) -> str:
    """``last``, ``last~N`` or a unique id prefix -> the session id (NotFound otherwise)."""
    if not ref.strip():
        raise UsageError("SESSION must be a session id, a prefix of one, or last / last~N")
    matches = reader.resolve_session_ref(ref, servers=servers)
    if servers and matches:
        allowed = {s.session_id for s in reader.sessions(servers=servers, session_ids=matches)}
        matches = [m for m in matches if m in allowed]
    if not matches:
        raise NotFound(f"no session matching {ref!r} in {store}")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise NotFound(
            f"session prefix {ref!r} is ambiguous: {len(matches)} sessions match ({shown})"
        )
    return matches[0]


def cmd_trace(args: argparse.Namespace) -> int:
    servers = tuple(args.server or ())
    with Reader.open(Path(args.store)) as reader:
        session_id = resolve_one_session(reader, args.session_id, servers, args.store)
        traces = reader.traces(session_id)
        info = reader.sessions(session_ids=[session_id])
        live = bool(info) and info[0].status == "active"
        pending = pending_calls(reader, session_id) if live else []
        has_records = bool(
            reader.run("SELECT 1 FROM logs WHERE session_id = ? LIMIT 1", (session_id,))
        )
    imported = bool(info) and info[0].imported_ts is not None
    if not traces and not pending:
        if has_records and (
            imported or (info and info[0].proxy_pid is None and info[0].start_ts is None)
        ):
            raise NotFound(
                f"session {session_id} was imported from a log export: its records are in the "
                f"store (helmet-otel logs -s {session_id}), its spans are not (log exports hold "
                "no spans; import a `helmet-otel trace --format json` export for them)"
            )
        raise NotFound(
            f"session {session_id} has no spans in the store yet (spans are stored when they end)"
        )
    now = time.time_ns()
    with output(args.output, page=wants_pager(args)) as stream:
        if args.format == "json":
            doc = {
                "session_id": session_id,
                **({"imported": True} if imported else {}),
                "traces": [
                    {
                        "trace_id": t.trace_id,
                        "segment": t.segment,
                        "spans": [_span_object(r) for r in t.roots],
                    }
                    for t in traces
                ],
                "pending": [_open_span_object(p, now) for p in pending],
            }
            stream.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode("utf-8") + "\n")
        else:
            style = Style(colour_wanted(args))
            _trace_table(stream, session_id + ("  (imported)" if imported else ""), traces, style)
            if pending:
                stream.write("\n" + style("open spans (calls in flight)", "bold") + "\n")
                for p in pending:
                    name = " ".join(x for x in (p.method, p.target) if x)
                    age = format_duration_ms((now - p.ts) / 1e6)
                    line = (
                        f"{printable(name)}  SERVER  open {age}  id {printable(p.request_id or '')}"
                    )
                    stream.write(style(line, "yellow") + "\n")
    return 0


def _open_span_object(p: LogEntry, now: int) -> dict[str, object]:
    return {
        "name": " ".join(x for x in (p.method, p.target) if x),
        "kind": "SERVER",
        "trace_id": p.trace_id,
        "span_id": p.span_id,
        "start": format_rfc3339(p.ts),
        "start_unix_nano": p.ts,
        "end_unix_nano": None,
        "age_ms": round((now - p.ts) / 1e6, 3),
        "status": "OPEN",
        "request_id": p.request_id,
    }


def _trace_table(
    stream: IO[str], session_id: str, traces: Sequence[TraceTree], style: Style
) -> None:
    glyphs = _glyphs(stream)
    for index, tree in enumerate(traces):
        if index:
            stream.write("\n")
        title = f"trace {tree.trace_id}"
        if tree.segment is not None:
            title += f"  segment {tree.segment}"
        stream.write(style(title, "bold") + f"  session {session_id}\n")
        lines = [
            (lead + printable(node.span.name), node)
            for i, root in enumerate(tree.roots)
            for lead, node in _tree_lines(root, "", i == len(tree.roots) - 1, True, glyphs)
        ]
        width = max(len(label) for label, _ in lines)
        for label, node in lines:
            s = node.span
            status = s.status + (f": {printable(s.status_message)}" if s.status_message else "")
            text = (
                f"{label.ljust(width)}  {s.kind.ljust(8)}  "
                f"{format_duration_ms(s.duration_ms).rjust(9)}  {status}"
            )
            stream.write((style(text, "red") if s.status == "ERROR" else text).rstrip() + "\n")
