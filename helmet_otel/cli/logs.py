"""``helmet-otel logs``: list, export, follow (``-f``) and import (``--import``) log records."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Final

from helmet_otel import semconv as sc
from helmet_otel.cli.calls import write_calls
from helmet_otel.cli.common import (
    DEFAULT_FOLLOW_BACKLOG,
    DEFAULT_TABLE_LIMIT,
    FOLLOW_INTERVAL_S,
    NotFound,
    UsageError,
    note,
)
from helmet_otel.cli.progress import Progress
from helmet_otel.cli.render import LogWriter, colour_wanted, is_tty, output, wants_pager
from helmet_otel.store.names import NAME_COLUMNS, close_names, name_matches
from helmet_otel.store.query import LogEntry, LogFilter, Reader, fts_query
from helmet_otel.store.schema import StoreError
from helmet_otel.store.timefmt import format_rfc3339

__all__ = ["BOOKKEEPING_EVENTS", "check_window", "cmd_logs", "highlighter", "no_match"]


# Bookkeeping events: in the machine formats always, in the table only with --all or --event.
BOOKKEEPING_EVENTS: Final = (
    sc.EVENT_CONFIGURATION,
    sc.EVENT_INITIALIZATION,
    sc.EVENT_PERFORMANCE,
    sc.EVENT_PROXY_CLOSE,
)


def check_window(args: argparse.Namespace) -> None:
    """``--since`` after ``--until`` selects nothing: say so instead of printing nothing."""
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since >= until:
        raise UsageError(
            f"--since ({format_rfc3339(since)}) is not before --until ({format_rfc3339(until)})"
        )


def _log_filter(args: argparse.Namespace) -> LogFilter:
    hide = args.format == "table" and not args.all and not args.event
    return LogFilter(
        session_prefixes=tuple(args.session or ()),
        events=tuple(
            dict.fromkeys([*(args.event or ()), *((sc.EVENT_SECURITY,) if args.security else ())])
        ),
        exclude_events=BOOKKEEPING_EVENTS if hide else (),
        methods=tuple(dict.fromkeys(args.method or ())),
        tools=tuple(dict.fromkeys(args.tool or ())),
        servers=tuple(dict.fromkeys(args.server or ())),
        direction=args.direction,
        since_ns=args.since,
        until_ns=args.until,
        grep=args.grep,
        regex=args.regex,
        errors=args.errors,
    )


def highlighter(args: argparse.Namespace) -> Callable[[str], str] | None:
    """Marks what ``--grep`` or ``--regex`` matched in a table cell (reverse video)."""
    if args.regex is not None:
        pattern = re.compile(args.regex)
    elif args.grep is not None:
        words = [re.escape(w) for w in re.findall(r"[^\W_]+", args.grep)]
        if not words:
            return None
        pattern = re.compile(r"(?<![^\W_])(?:" + "|".join(words) + ")", re.IGNORECASE)
    else:
        return None

    def mark(text: str) -> str:
        return pattern.sub(lambda m: f"\x1b[7m{m[0]}\x1b[27m" if m[0] else "", text)

    return mark


def _log_writer(args: argparse.Namespace, stream: IO[str], *, follow: bool = False) -> LogWriter:
    """A writer in ``--format``, coloured (``--color``) only when it writes to stdout."""
    return LogWriter(
        args.format,
        stream,
        colour=colour_wanted(args),
        utc=args.utc,
        follow=follow,
        wide=args.wide,
        highlight=highlighter(args),
    )


def _check(args: argparse.Namespace) -> None:
    check_window(args)
    for prefix in args.session or ():
        if not prefix.strip():
            raise UsageError("--session needs a session id, a prefix of one, or last / last~N")
    if args.grep is not None and fts_query(args.grep) is None:
        raise UsageError(f"--grep {args.grep!r} has no words to search for")
    if args.regex is not None:
        try:
            re.compile(args.regex)
        except re.error as exc:
            raise UsageError(f"--regex {args.regex!r} is not a regular expression: {exc}") from None


def cmd_logs(args: argparse.Namespace) -> int:
    if args.import_file is not None:
        return _import(args)
    _check(args)
    if args.follow:
        if args.until is not None:
            raise UsageError("--until cannot be combined with --follow")
        if args.format == "json":
            raise UsageError("--format json cannot be combined with --follow (use ndjson)")
        if args.calls:
            raise UsageError("--calls cannot be combined with --follow")
        return _follow(args)
    if args.calls and args.event:
        raise UsageError("--calls lists requests with their answers; it takes no --event")
    flt = _log_filter(args)
    path = Path(args.store)
    with Reader.open(path) as reader:
        for prefix in flt.session_prefixes:
            if not reader.resolve(LogFilter(session_prefixes=(prefix,))).session_ids:
                raise NotFound(f"no session matching {prefix!r} in {path}")
        limit: int | None = args.limit
        if limit is None and args.format == "table":
            limit = DEFAULT_TABLE_LIMIT
        page = wants_pager(args)
        if args.calls:
            count = write_calls(args, reader, flt, limit)
        else:
            entries: Iterable[LogEntry] = (
                reader.iter_logs(flt) if not limit else reader.logs(flt, limit=limit)
            )
            progress = Progress("exporting") if args.output is not None else None
            if progress is not None:
                entries = progress.counted(entries)
            try:
                with output(args.output, csv_mode=args.format == "csv", page=page) as stream:
                    writer = _log_writer(args, stream)
                    writer.begin()
                    writer.write(entries)
                    writer.end()
            finally:
                if progress is not None:
                    progress.done()
            count = writer.count
        if count == 0:
            no_match(reader, flt)
        elif args.output is not None and is_tty(sys.stderr):
            note(f"wrote {count} {'calls' if args.calls else 'records'} to {args.output}")
    full = args.limit is None and args.format == "table" and count == DEFAULT_TABLE_LIMIT
    if full and is_tty(sys.stdout):
        what = "calls" if args.calls else "records"
        note(f"showing the newest {DEFAULT_TABLE_LIMIT} {what}; --limit N (0 = all) for more")
    return 0


def no_match(reader: Reader, flt: LogFilter) -> None:
    """``no records match``, and for a name filter that names nothing the store knows, the
    known names that look like it."""
    hints: list[str] = []
    for column, patterns in (
        ("target", flt.tools),
        ("method", flt.methods),
        ("service", flt.servers),
    ):
        if not patterns:
            continue
        known = reader.names(column)  # pyright: ignore[reportArgumentType]
        label = NAME_COLUMNS[column]  # pyright: ignore[reportArgumentType]
        for pattern in patterns:
            if any(name_matches([pattern], k) for k in known):
                continue
            close = close_names(pattern, known)
            hint = f"no {label} matches {pattern!r}"
            hints.append(hint + (f" (did you mean: {', '.join(close)}?)" if close else ""))
    note("no records match" + (": " + "; ".join(hints) if hints else ""))


def _follow(args: argparse.Namespace) -> int:
    flt = _log_filter(args)
    path = Path(args.store)
    backlog: int | None = args.limit
    if backlog is None:
        backlog = 0 if args.since is not None else DEFAULT_FOLLOW_BACKLOG
    if path.exists():
        Reader.open(path).close()  # an unreadable store fails before any output
    with output(args.output, csv_mode=args.format == "csv") as stream:
        writer = _log_writer(args, stream, follow=True)
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
    note(f"waiting for a proxy to create the store at {path} (Ctrl-C to stop)")
    while True:
        time.sleep(FOLLOW_INTERVAL_S)
        if path.exists():
            try:
                return Reader.open(path), 0
            except StoreError:
                continue  # still being created


def _import(args: argparse.Namespace) -> int:
    from helmet_otel.store.import_formats import NotAnExport, parse_export
    from helmet_otel.store.importer import import_logs, import_spans, mark_imported
    from helmet_otel.store.writer import Store

    source: str = args.import_file
    try:
        stream = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from None
    with stream:
        text = stream.read()
    try:
        data = parse_export(text)
    except NotAnExport as exc:
        raise StoreError(f"{source}: {exc}") from None
    rows = data.rows
    reports: list[str] = []  # the proxy's wording; the error below says it for a command
    store = Store.open(args.store, max_bytes=0, max_age_s=0, report=reports.append)
    progress = Progress("importing", len(rows))
    try:
        if store.degraded:
            raise StoreError(f"cannot write to {store.path}: {store.last_error}")
        counts = import_logs(store, rows, progress=progress.update)
        spans = import_spans(store, data.spans) if counts is not None else None
        if counts is not None:
            mark_imported(store, {r.session_id for r in rows if r.session_id is not None})
    finally:
        progress.done()
        store.close()
    if counts is None or spans is None:
        raise StoreError(
            f"imported {store.written_logs} of {len(rows)} records and {store.written_spans} of "
            f"{len(data.spans)} spans into {store.path}: {store.last_error}"
        )
    written, skipped = counts
    parts = [f"{written} records"] if rows or not data.spans else []
    if data.spans:
        parts.append(f"{spans[0]} spans")
    message = f"imported {' and '.join(parts)} into {store.path}"
    if skipped or spans[1]:
        message += f"; skipped {skipped + spans[1]} already in the store"
    note(message)
    return 0
