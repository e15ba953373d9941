"""``helmet-otel trace SESSION``: a session's span tree, as a table or json."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson

from helmet_otel.cli.common import NotFound
from helmet_otel.cli.render import Style, output, printable, use_colour
from helmet_otel.store.query import Reader, SpanNode, TraceTree
from helmet_otel.store.timefmt import format_duration_ms, format_rfc3339

__all__ = ["cmd_trace"]


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


def cmd_trace(args: argparse.Namespace) -> int:
    prefix: str = args.session_id
    with Reader.open(Path(args.store)) as reader:
        matches = reader.resolve_sessions(prefix, include_spans=True)
        if not matches:
            raise NotFound(f"no session matching {prefix!r} in {args.store}")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise NotFound(
                f"session prefix {prefix!r} is ambiguous: {len(matches)} sessions match ({shown})"
            )
        session_id = matches[0]
        traces = reader.traces(session_id)
    if not traces:
        raise NotFound(
            f"session {session_id} has no spans in the store yet (spans are stored when they end)"
        )
    with output(args.output) as stream:
        if args.format == "json":
            doc = {
                "session_id": session_id,
                "traces": [
                    {
                        "trace_id": t.trace_id,
                        "segment": t.segment,
                        "spans": [_span_object(r) for r in t.roots],
                    }
                    for t in traces
                ],
            }
            stream.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode("utf-8") + "\n")
        else:
            _trace_table(
                stream,
                session_id,
                traces,
                Style(args.output is None and use_colour(args.color, stream)),
            )
    return 0


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
