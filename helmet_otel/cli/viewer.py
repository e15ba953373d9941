"""``helmet-otel logs / sessions / stats / trace``: the viewer commands over the local store.

``register(subparsers)`` adds the four subcommands to the main parser; each sets
``handler=fn`` where ``fn(args) -> int`` is the exit status: 0 ok, 1 not found or runtime error
(unknown session, unreadable store), 2 bad usage. Machine formats (json, ndjson, csv) go to
stdout or ``--output`` undecorated; notes and errors go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final, TypeVar

import orjson

from helmet_otel import semconv as sc
from helmet_otel.store import codec
from helmet_otel.store.paths import default_store_path
from helmet_otel.store.query import (
    LogEntry,
    LogFilter,
    Reader,
    SessionInfo,
    SpanNode,
    Stats,
    TraceTree,
    fts_query,
)
from helmet_otel.store.schema import StoreError
from helmet_otel.store.timefmt import format_duration_ms, format_local, format_rfc3339, parse_time

__all__ = ["register"]

FOLLOW_INTERVAL_S: Final = 0.2
DEFAULT_TABLE_LIMIT: Final = 100
DEFAULT_FOLLOW_BACKLOG: Final = 10

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad combination of options: exit status 2."""


# --- argument types ------------------------------------------------------------------------


def _when(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_EVENT_SHORT: Final = {e.removeprefix("helmet."): e for e in sc.ALL_EVENTS}


def _events(text: str) -> list[str]:
    events: list[str] = []
    for part in text.split(","):
        name = part.strip()
        full = name if name in sc.ALL_EVENTS else _EVENT_SHORT.get(name)
        if full is None:
            raise argparse.ArgumentTypeError(
                f"unknown event {name!r} (choose from: {', '.join(_EVENT_SHORT)})"
            )
        events.append(full)
    return events


def _methods(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


_DIRECTIONS: Final = {
    sc.DIRECTION_C2S: sc.DIRECTION_C2S,
    "c2s": sc.DIRECTION_C2S,
    "in": sc.DIRECTION_C2S,
    sc.DIRECTION_S2C: sc.DIRECTION_S2C,
    "s2c": sc.DIRECTION_S2C,
    "out": sc.DIRECTION_S2C,
}


def _direction(text: str) -> str:
    value = _DIRECTIONS.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(
            f"invalid direction {text!r} (choose from: client->server, server->client, c2s, s2c)"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (a number >= 0; 0 = no limit)")
    return value


# --- output --------------------------------------------------------------------------------


class Style:
    """ANSI colour when enabled, plain text otherwise."""

    CODES: Final = {
        "dim": "2",
        "bold": "1",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "blue": "34",
        "magenta": "35",
        "cyan": "36",
    }
    SESSION_COLOURS: Final = ("36", "35", "34", "33", "32", "96", "95", "94")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *names: str) -> str:
        if not self.enabled or not names or not text:
            return text
        codes = ";".join(self.CODES[n] for n in names)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def session(self, text: str, session_id: str | None) -> str:
        if not self.enabled or not text or session_id is None:
            return text
        digest = hashlib.blake2b(session_id.encode(), digest_size=1).digest()[0]
        return f"\x1b[{self.SESSION_COLOURS[digest % len(self.SESSION_COLOURS)]}m{text}\x1b[0m"


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _use_colour(mode: str, stream: IO[str]) -> bool:
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return _is_tty(stream)


@contextlib.contextmanager
def _output(path: str | None, *, csv_mode: bool = False) -> Generator[IO[str], None, None]:
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        stream = open(path, "w", encoding="utf-8", newline="" if csv_mode else None)  # noqa: SIM115
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    with stream:
        yield stream


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _printable(text: str) -> str:
    """``text`` on one line and harmless to a terminal: control characters (newlines, ESC)
    shown as escapes (``\\n``, ``\\x1b``). Names and messages come from the wire."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0], f"\\x{ord(m[0]):02x}"), text)


def _fit(text: str, width: int, *, right: bool = False) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 0 else ""
    return text.rjust(width) if right else text.ljust(width)


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines: list[str] = []
    for row in (headers, *rows):
        cells = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


# --- logs ----------------------------------------------------------------------------------

_LOG_COLUMNS: Final = (
    ("TIME", 23, False),
    ("SESSION", 8, False),
    ("EVENT", 14, False),
    ("DIR", 3, False),
    ("METHOD / TOOL", 30, False),
    ("LATENCY", 9, True),
    ("STATUS", 12, False),
)
_EVENT_STYLE: Final = {
    sc.EVENT_REQUEST: ("cyan",),
    sc.EVENT_RESPONSE: ("green",),
    sc.EVENT_NOTIFICATION: ("blue",),
    sc.EVENT_ERROR: ("red", "bold"),
    sc.EVENT_SERVER_STDERR: ("yellow",),
    sc.EVENT_SESSION_START: ("magenta",),
    sc.EVENT_SESSION_END: ("magenta",),
}


class LogTable:
    """Fixed-width rows, so a followed stream stays aligned."""

    def __init__(self, stream: IO[str], *, colour: bool, utc: bool) -> None:
        self.stream = stream
        self.style = Style(colour)
        self.utc = utc
        width = shutil.get_terminal_size((160, 24)).columns
        fixed = sum(w for _, w, _ in _LOG_COLUMNS) + 2 * len(_LOG_COLUMNS)
        self.body_width = max(20, width - fixed)

    def header(self) -> None:
        cells = [_fit(name, w, right=r) for name, w, r in _LOG_COLUMNS]
        self.stream.write(self.style("  ".join([*cells, "BODY"]), "bold") + "\n")

    def row(self, e: LogEntry) -> None:
        st = self.style
        event = (e.event or "").removeprefix("helmet.")
        direction = {sc.DIRECTION_C2S: "->", sc.DIRECTION_S2C: "<-"}.get(e.direction or "", "")
        what = " ".join(x for x in (e.method, e.target) if x)
        status = codec.status_text(e)
        latency = format_duration_ms(e.latency_ms)
        cells = [
            st(_fit(format_local(e.ts, utc=self.utc), 23), "dim"),
            st.session(_fit((e.session_id or "")[:8], 8), e.session_id),
            st(_fit(event, 14), *_EVENT_STYLE.get(e.event or "", ())),
            _fit(direction, 3),
            _fit(_printable(what), 30),
            st(_fit(latency, 9, right=True), "yellow")
            if (e.latency_ms or 0) >= 1000
            else _fit(latency, 9, right=True),
            st(_fit(status, 12), "red", "bold") if e.is_error else _fit(status, 12),
            _fit(_printable(codec.body_preview(e)), self.body_width).rstrip(),
        ]
        self.stream.write("  ".join(cells).rstrip() + "\n")


class LogWriter:
    """Writes log entries in one of the formats; the same object serves --follow."""

    def __init__(
        self, fmt: str, stream: IO[str], *, colour: bool, utc: bool, follow: bool = False
    ) -> None:
        self.fmt = fmt
        self.stream = stream
        self.follow = follow
        self.count = 0
        self.table = LogTable(stream, colour=colour, utc=utc) if fmt == "table" else None
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None

    def begin(self) -> None:
        if self.table is not None:
            self.table.header()
        elif self.csv is not None:
            self.csv.writerow(codec.CSV_FIELDS)
        elif self.fmt == "json":
            self.stream.write("[")

    def write(self, entries: Iterable[LogEntry]) -> None:
        stream = self.stream
        for e in entries:
            if self.fmt == "ndjson":
                stream.write(codec.ndjson_line(e).decode("utf-8"))
            elif self.fmt == "json":
                stream.write(
                    ("\n" if self.count == 0 else ",\n")
                    + orjson.dumps(codec.export_record(e)).decode("utf-8")
                )
            elif self.csv is not None:
                self.csv.writerow(codec.csv_row(e))
            elif self.table is not None:
                self.table.row(e)
            self.count += 1

    def end(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")


def _log_filter(args: argparse.Namespace) -> LogFilter:
    return LogFilter(
        session_prefixes=tuple(args.session or ()),
        events=tuple(dict.fromkeys(args.event or ())),
        methods=tuple(dict.fromkeys(args.method or ())),
        tools=tuple(dict.fromkeys(args.tool or ())),
        direction=args.direction,
        since_ns=args.since,
        until_ns=args.until,
        grep=args.grep,
        errors=args.errors,
    )


def _cmd_logs(args: argparse.Namespace) -> int:
    if args.import_file is not None:
        return _import(args)
    if args.follow:
        if args.until is not None:
            raise UsageError("--until cannot be combined with --follow")
        if args.format == "json":
            raise UsageError("--format json cannot be combined with --follow (use ndjson)")
        return _follow(args)
    if args.grep is not None and fts_query(args.grep) is None:
        raise UsageError(f"--grep {args.grep!r} has no words to search for")
    flt = _log_filter(args)
    path = Path(args.store)
    with Reader.open(path) as reader:
        for prefix in flt.session_prefixes:
            if not reader.resolve_sessions(prefix):
                raise NotFound(f"no session matching {prefix!r} in {path}")
        limit: int | None = args.limit
        if limit is None and args.format == "table":
            limit = DEFAULT_TABLE_LIMIT
        entries: Iterable[LogEntry] = (
            reader.iter_logs(flt) if not limit else reader.logs(flt, limit=limit)
        )
        with _output(args.output, csv_mode=args.format == "csv") as stream:
            writer = LogWriter(
                args.format,
                stream,
                colour=args.output is None and _use_colour(args.color, stream),
                utc=args.utc,
            )
            writer.begin()
            writer.write(entries)
            writer.end()
        if (
            args.limit is None
            and args.format == "table"
            and writer.count == DEFAULT_TABLE_LIMIT
            and _is_tty(sys.stdout)
        ):
            _note(f"showing the newest {DEFAULT_TABLE_LIMIT} records; --limit N (0 = all) for more")
    return 0


def _follow(args: argparse.Namespace) -> int:
    flt = _log_filter(args)
    path = Path(args.store)
    backlog: int | None = args.limit
    if backlog is None:
        backlog = 0 if args.since is not None else DEFAULT_FOLLOW_BACKLOG
    if path.exists():
        Reader.open(path).close()  # an unreadable store fails before any output
    with _output(args.output, csv_mode=args.format == "csv") as stream:
        writer = LogWriter(
            args.format,
            stream,
            colour=args.output is None and _use_colour(args.color, stream),
            utc=args.utc,
            follow=True,
        )
        writer.begin()
        stream.flush()
        try:
            reader, cursor = _wait_for_store(path)
            with reader:
                if cursor > 0:
                    top = reader.max_log_id()
                    if backlog:
                        writer.write(reader.logs(flt, limit=backlog, max_id=top))
                    elif args.since is not None:
                        writer.write(reader.logs(flt, max_id=top))
                    cursor = top
                    stream.flush()
                while True:
                    top = reader.max_log_id()
                    if top > cursor:
                        writer.write(reader.logs_after(flt, cursor, top))
                        cursor = top
                        stream.flush()
                    time.sleep(FOLLOW_INTERVAL_S)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
            return 0


def _wait_for_store(path: Path) -> tuple[Reader, int]:
    """Open the store; if it does not exist yet, wait for a proxy to create it.

    Returns the reader and 1 if the store existed (show a backlog), 0 if it was created while
    we waited (everything in it is new).
    """
    if path.exists():
        return Reader.open(path), 1
    _note(f"waiting for a proxy to create the store at {path} (Ctrl-C to stop)")
    while True:
        time.sleep(FOLLOW_INTERVAL_S)
        if path.exists():
            try:
                return Reader.open(path), 0
            except StoreError:
                continue  # still being created


def _import(args: argparse.Namespace) -> int:
    from helmet_otel.store.model import LogRow
    from helmet_otel.store.writer import Store

    source: str = args.import_file
    rows: list[LogRow] = []
    try:
        stream = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from None
    with stream:
        text = stream.read()
    try:
        if text.lstrip().startswith("["):
            items = orjson.loads(text)
            numbered = list(enumerate(items if isinstance(items, list) else [items], 1))  # pyright: ignore[reportUnknownArgumentType]
        else:
            numbered = [
                (n, orjson.loads(line))
                for n, line in enumerate(text.splitlines(), 1)
                if line.strip()
            ]
    except orjson.JSONDecodeError as exc:
        raise StoreError(f"{source}: not JSON: {exc}") from None
    for n, obj in numbered:
        try:
            rows.append(codec.import_record(obj))
        except ValueError as exc:
            raise StoreError(f"{source}: record {n}: not a helmet-otel log record: {exc}") from None
    reports: list[str] = []  # the proxy's wording; the error below says it for a command
    store = Store.open(args.store, max_bytes=0, max_age_s=0, report=reports.append)
    try:
        if store.degraded:
            raise StoreError(f"cannot write to {store.path}: {store.last_error}")
        counts = store.import_logs(rows)
    finally:
        store.close()
    if counts is None:
        raise StoreError(
            f"imported {store.written_logs} of {len(rows)} records into {store.path}: "
            f"{store.last_error}"
        )
    written, skipped = counts
    note = f"imported {written} records into {store.path}"
    if skipped:
        note += f"; skipped {skipped} already in the store"
    _note(note)
    return 0


# --- sessions ------------------------------------------------------------------------------


def _session_record(s: SessionInfo) -> dict[str, object]:
    return {
        "session_id": s.session_id,
        "status": s.status,
        "service": s.service,
        "server_name": s.server_name,
        "server_command": s.server_command,
        "server_info_name": s.server_info_name,
        "server_version": s.server_version,
        "client_name": s.client_name,
        "client_version": s.client_version,
        "transport": s.transport,
        "protocol_version": s.protocol_version,
        "era": s.era,
        "proxy_pid": s.proxy_pid,
        "proxy_host": s.proxy_host,
        "start": format_rfc3339(s.started_ts),
        "start_unix_nano": s.started_ts,
        "end": format_rfc3339(s.end_ts) if s.end_ts is not None else None,
        "end_unix_nano": s.end_ts,
        "last_seen_unix_nano": s.last_ts,
        "duration_ms": s.duration_ms,
        "requests": s.requests,
        "errors": s.errors,
        "exit_status": s.exit_status,
        "exit_reason": s.exit_reason,
    }


_SESSION_CSV: Final = (
    "session_id",
    "status",
    "service",
    "client_name",
    "client_version",
    "start",
    "end",
    "duration_ms",
    "requests",
    "errors",
    "exit_status",
    "exit_reason",
)


def _cmd_sessions(args: argparse.Namespace) -> int:
    with Reader.open(Path(args.store)) as reader:
        sessions = reader.sessions(since_ns=args.since)
    if args.active:
        sessions = [s for s in sessions if s.status == "active"]
    with _output(args.output, csv_mode=args.format == "csv") as stream:
        if args.format in ("json", "ndjson"):
            _write_objects(stream, args.format, [_session_record(s) for s in sessions])
        elif args.format == "csv":
            out = csv.writer(stream, lineterminator="\n")
            out.writerow(_SESSION_CSV)
            for s in sessions:
                rec = _session_record(s)
                out.writerow(["" if rec[k] is None else str(rec[k]) for k in _SESSION_CSV])
        else:
            style = Style(args.output is None and _use_colour(args.color, stream))
            rows = [
                [
                    s.session_id,
                    _printable(s.server or ""),
                    _printable(s.client or ""),
                    format_local(s.started_ts, utc=args.utc),
                    format_duration_ms(s.duration_ms),
                    str(s.requests or 0),
                    str(s.errors or 0),
                    s.status,
                ]
                for s in sessions
            ]
            headers = (
                "SESSION",
                "SERVER",
                "CLIENT",
                "START",
                "DURATION",
                "REQUESTS",
                "ERRORS",
                "STATUS",
            )
            lines = _table(headers, rows, right={4, 5, 6})
            stream.write(style(lines[0], "bold") + "\n")
            for line, s in zip(lines[1:], sessions, strict=True):
                colour = {"active": "green", "failed": "red", "lost": "yellow"}.get(s.status)
                stream.write((style(line, colour) if colour else line) + "\n")
    return 0


def _write_objects(stream: IO[str], fmt: str, objects: Sequence[object]) -> None:
    if fmt == "ndjson":
        for obj in objects:
            stream.write(orjson.dumps(obj).decode("utf-8") + "\n")
    elif objects:
        stream.write("[\n" + ",\n".join(orjson.dumps(o).decode("utf-8") for o in objects) + "\n]\n")
    else:
        stream.write("[]\n")


# --- stats ---------------------------------------------------------------------------------


def _stat_objects(stats: Stats) -> list[dict[str, object]]:
    return [
        {
            "method": r.method,
            **({"tool": r.target} if stats.by == "tool" else {}),
            "calls": r.calls,
            "errors": r.errors,
            "error_rate": round(r.error_rate, 6),
            "p50_ms": r.p50_ms,
            "p95_ms": r.p95_ms,
            "p99_ms": r.p99_ms,
            "max_ms": r.max_ms,
            "bytes": r.bytes,
        }
        for r in stats.rows
    ]


def _cmd_stats(args: argparse.Namespace) -> int:
    with Reader.open(Path(args.store)) as reader:
        stats = reader.stats(by=args.by, since_ns=args.since, until_ns=args.until)
    objects = _stat_objects(stats)
    with _output(args.output, csv_mode=args.format == "csv") as stream:
        if args.format == "json":
            doc = {
                "by": stats.by,
                "since": format_rfc3339(stats.since_ns) if stats.since_ns is not None else None,
                "until": format_rfc3339(stats.until_ns) if stats.until_ns is not None else None,
                "rows": objects,
                "errors": [
                    {
                        "method": e.method,
                        **({"tool": e.target} if stats.by == "tool" else {}),
                        "error": e.error,
                        "count": e.count,
                        "last": format_rfc3339(e.last_ts),
                    }
                    for e in stats.errors
                ],
            }
            stream.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode("utf-8") + "\n")
        elif args.format == "ndjson":
            _write_objects(stream, "ndjson", objects)
        elif args.format == "csv":
            out = csv.writer(stream, lineterminator="\n")
            fields = list(objects[0]) if objects else _stat_fields(stats.by)
            out.writerow(fields)
            for obj in objects:
                out.writerow(["" if obj[k] is None else str(obj[k]) for k in fields])
        else:
            _stats_table(
                stream, stats, Style(args.output is None and _use_colour(args.color, stream))
            )
    return 0


def _stat_fields(by: str) -> list[str]:
    head = ["method", "tool"] if by == "tool" else ["method"]
    return [*head, "calls", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "bytes"]


def _stats_table(stream: IO[str], stats: Stats, style: Style) -> None:
    tool = stats.by == "tool"
    headers = [
        "METHOD",
        *(["TOOL"] if tool else []),
        "CALLS",
        "ERRORS",
        "ERR%",
        "P50",
        "P95",
        "P99",
        "BYTES",
    ]
    rows = [
        [
            r.method,
            *([r.target or ""] if tool else []),
            str(r.calls),
            str(r.errors),
            f"{100 * r.error_rate:.1f}%",
            format_duration_ms(r.p50_ms),
            format_duration_ms(r.p95_ms),
            format_duration_ms(r.p99_ms),
            _human_bytes(r.bytes),
        ]
        for r in stats.rows
    ]
    first = 2 if tool else 1
    lines = _table(headers, rows, right=set(range(first, len(headers))))
    stream.write(style(lines[0], "bold") + "\n")
    for line, r in zip(lines[1:], stats.rows, strict=True):
        stream.write((style(line, "red") if r.errors else line) + "\n")
    if stats.errors:
        headers_e = ["COUNT", "METHOD", *(["TOOL"] if tool else []), "ERROR"]
        rows_e = [
            [str(e.count), e.method, *([e.target or ""] if tool else []), e.error]
            for e in stats.errors
        ]
        stream.write("\n" + style("MOST FREQUENT ERRORS", "bold") + "\n")
        lines_e = _table(headers_e, rows_e, right={0})
        stream.write(style(lines_e[0], "bold") + "\n")
        for line in lines_e[1:]:
            stream.write(line + "\n")


# --- trace ---------------------------------------------------------------------------------


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


def _cmd_trace(args: argparse.Namespace) -> int:
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
    with _output(args.output) as stream:
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
                Style(args.output is None and _use_colour(args.color, stream)),
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
            (lead + _printable(node.span.name), node)
            for i, root in enumerate(tree.roots)
            for lead, node in _tree_lines(root, "", i == len(tree.roots) - 1, True, glyphs)
        ]
        width = max(len(label) for label, _ in lines)
        for label, node in lines:
            s = node.span
            status = s.status + (f": {_printable(s.status_message)}" if s.status_message else "")
            text = (
                f"{label.ljust(width)}  {s.kind.ljust(8)}  "
                f"{format_duration_ms(s.duration_ms).rjust(9)}  {status}"
            )
            stream.write((style(text, "red") if s.status == "ERROR" else text).rstrip() + "\n")


# --- registration --------------------------------------------------------------------------


class NotFound(Exception):
    """Something the user named does not exist: exit status 1."""


def _note(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"helmet-otel: {message}\n")
        sys.stderr.flush()


def _guard(command: str, fn: Handler) -> Handler:
    """Turn expected failures into a message and an exit status; never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except UsageError as exc:
            _note_error(command, str(exc))
            return 2
        except (StoreError, NotFound) as exc:
            _note_error(command, str(exc))
            return 1
        except BrokenPipeError:
            # the reader went away (| head): stop quietly, and keep Python's exit flush quiet
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:
            return 130

    return run


def _note_error(command: str, message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"helmet-otel {command}: error: {message}\n")


def _common(p: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    p.add_argument(
        "--store",
        metavar="PATH",
        default=str(default_store_path()),
        help="the store to read (default: $HELMET_STORE or %(default)s)",
    )
    p.add_argument(
        "--format",
        choices=formats,
        default="table",
        help="output format (default: table; machine formats are never decorated)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument(
        "--color",
        "--colour",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour in tables: auto = only on a terminal, and not with NO_COLOR set",
    )


_FORMATTER: Final = argparse.RawDescriptionHelpFormatter

_LOGS_EPILOG: Final = """\
WHEN is a duration ago (30s, 5m, 2h, 7d, 1h30m) or a timestamp (2026-11-24,
2026-11-24T10:00:00, 2026-11-24T09:00:00Z; without a zone it is local time).
--grep matches words and word prefixes in the bodies, case-insensitively.
The table shows the newest 100 records unless --limit says otherwise; json, ndjson
and csv export everything the filters select. Exit status: 0 ok, 1 unknown session
or unreadable store, 2 bad usage.

examples:
  helmet-otel logs -f                              stream new records as proxies write them
  helmet-otel logs --since 1h --errors             the last hour's errors
  helmet-otel logs --session 3fZ --event request,response
  helmet-otel logs --tool search --grep "rate limit"
  helmet-otel logs --session 3fZ --format ndjson -o session.ndjson
  helmet-otel logs --import session.ndjson --store /tmp/other.db
"""

_SESSIONS_EPILOG: Final = """\
status: active (no session end and, on this host, its proxy is still running),
ended, failed (the server exited with a non-zero status), lost (the proxy went
away without ending the session).

examples:
  helmet-otel sessions
  helmet-otel sessions --active
  helmet-otel sessions --since 1d --format json
"""

_STATS_EPILOG: Final = """\
Per method (or per method and tool): calls, errors, error rate, latency p50/p95/p99
and bytes on the wire; the slowest first, then the most frequent errors.

examples:
  helmet-otel stats --since 1h
  helmet-otel stats --by tool --since 1d
  helmet-otel stats --format csv -o stats.csv
"""

_TRACE_EPILOG: Final = """\
SESSION may be any unique prefix of a session id (see `helmet-otel sessions`).
A long session that rolled over into several traces prints them in order.

examples:
  helmet-otel trace 3fZ9
  helmet-otel trace 3fZ9 --format json
"""


_P = TypeVar("_P", bound=argparse.ArgumentParser)


def register(subparsers: argparse._SubParsersAction[_P]) -> None:  # pyright: ignore[reportPrivateUsage]
    """Add ``logs``, ``sessions``, ``stats`` and ``trace`` to the main parser."""
    logs = subparsers.add_parser(
        "logs",
        help="show, search, follow and export the log records in the local store",
        description="Show, search, follow and export the log records in the local store, newest last.",
        epilog=_LOGS_EPILOG,
        formatter_class=_FORMATTER,
    )
    _common(logs, ("table", "json", "ndjson", "csv"))
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new records until interrupted"
    )
    logs.add_argument(
        "-s",
        "--session",
        action="append",
        metavar="PREFIX",
        help="session id or prefix (repeatable)",
    )
    logs.add_argument(
        "-e",
        "--event",
        action="extend",
        type=_events,
        metavar="EVENT",
        help="event name, e.g. request, response, error, server_stderr (comma-separated or repeated)",
    )
    logs.add_argument(
        "-m",
        "--method",
        action="extend",
        type=_methods,
        metavar="METHOD",
        help="MCP method, e.g. tools/call",
    )
    logs.add_argument(
        "-t", "--tool", action="append", metavar="NAME", help="tool, prompt or resource name"
    )
    logs.add_argument(
        "-d", "--direction", type=_direction, help="client->server (c2s) or server->client (s2c)"
    )
    logs.add_argument("--since", type=_when, metavar="WHEN", help="records at or after WHEN")
    logs.add_argument("--until", type=_when, metavar="WHEN", help="records before WHEN")
    logs.add_argument("-g", "--grep", metavar="TEXT", help="full-text search over bodies")
    logs.add_argument("--errors", action="store_true", help="only errors")
    logs.add_argument(
        "-n", "--limit", type=_count, metavar="N", help="the newest N records (0 = no limit)"
    )
    logs.add_argument(
        "--utc", action="store_true", help="times in UTC instead of local time (table)"
    )
    logs.add_argument(
        "--import",
        dest="import_file",
        metavar="FILE",
        help="import an ndjson/json export into --store and exit",
    )
    logs.set_defaults(handler=_guard("logs", _cmd_logs))

    sessions = subparsers.add_parser(
        "sessions",
        help="one row per session: server, client, start, duration, requests, errors, status",
        description="One row per session in the local store, oldest first.",
        epilog=_SESSIONS_EPILOG,
        formatter_class=_FORMATTER,
    )
    _common(sessions, ("table", "json", "ndjson", "csv"))
    sessions.add_argument("--active", action="store_true", help="only the sessions still running")
    sessions.add_argument(
        "--since", type=_when, metavar="WHEN", help="sessions active at or after WHEN"
    )
    sessions.add_argument(
        "--utc", action="store_true", help="times in UTC instead of local time (table)"
    )
    sessions.set_defaults(handler=_guard("sessions", _cmd_sessions))

    stats = subparsers.add_parser(
        "stats",
        help="calls, error rate, latency percentiles and bytes per method or tool",
        description="Calls, error rate, latency percentiles and bytes per method or per tool.",
        epilog=_STATS_EPILOG,
        formatter_class=_FORMATTER,
    )
    _common(stats, ("table", "json", "ndjson", "csv"))
    stats.add_argument("--since", type=_when, metavar="WHEN", help="only records at or after WHEN")
    stats.add_argument("--until", type=_when, metavar="WHEN", help="only records before WHEN")
    stats.add_argument(
        "--by",
        choices=("method", "tool"),
        default="method",
        help="group by method (default) or by tool",
    )
    stats.set_defaults(handler=_guard("stats", _cmd_stats))

    trace = subparsers.add_parser(
        "trace",
        help="a session's span tree with durations and statuses",
        description="Print a session's span tree: name, kind, duration and status of every span.",
        epilog=_TRACE_EPILOG,
        formatter_class=_FORMATTER,
    )
    trace.add_argument("session_id", metavar="SESSION", help="session id or unique prefix")
    _common(trace, ("table", "json"))
    trace.set_defaults(handler=_guard("trace", _cmd_trace))


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="helmet-otel")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(_main())
