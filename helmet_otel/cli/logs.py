"""``helmet-otel logs``: list, export, follow (``-f``) and import (``--import``) log records."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import orjson

from helmet_otel import semconv as sc
from helmet_otel.cli.common import (
    DEFAULT_FOLLOW_BACKLOG,
    DEFAULT_TABLE_LIMIT,
    FOLLOW_INTERVAL_S,
    NotFound,
    UsageError,
    note,
)
from helmet_otel.cli.render import LogWriter, is_tty, output, use_colour
from helmet_otel.store import codec
from helmet_otel.store.query import LogEntry, LogFilter, Reader, fts_query
from helmet_otel.store.schema import StoreError

__all__ = ["cmd_logs"]


def _log_filter(args: argparse.Namespace) -> LogFilter:
    return LogFilter(
        session_prefixes=tuple(args.session or ()),
        events=tuple(
            dict.fromkeys([*(args.event or ()), *((sc.EVENT_SECURITY,) if args.security else ())])
        ),
        methods=tuple(dict.fromkeys(args.method or ())),
        tools=tuple(dict.fromkeys(args.tool or ())),
        direction=args.direction,
        since_ns=args.since,
        until_ns=args.until,
        grep=args.grep,
        errors=args.errors,
    )


def _log_writer(args: argparse.Namespace, stream: IO[str], *, follow: bool = False) -> LogWriter:
    """A writer in ``--format``, coloured (``--color``) only when it writes to stdout."""
    return LogWriter(
        args.format,
        stream,
        colour=args.output is None and use_colour(args.color, stream),
        utc=args.utc,
        follow=follow,
    )


def cmd_logs(args: argparse.Namespace) -> int:
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
        with output(args.output, csv_mode=args.format == "csv") as stream:
            writer = _log_writer(args, stream)
            writer.begin()
            writer.write(entries)
            writer.end()
        if (
            args.limit is None
            and args.format == "table"
            and writer.count == DEFAULT_TABLE_LIMIT
            and is_tty(sys.stdout)
        ):
            note(f"showing the newest {DEFAULT_TABLE_LIMIT} records; --limit N (0 = all) for more")
    return 0


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
    from helmet_otel.store.importer import import_logs
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
        counts = import_logs(store, rows)
    finally:
        store.close()
    if counts is None:
        raise StoreError(
            f"imported {store.written_logs} of {len(rows)} records into {store.path}: "
            f"{store.last_error}"
        )
    written, skipped = counts
    message = f"imported {written} records into {store.path}"
    if skipped:
        message += f"; skipped {skipped} already in the store"
    note(message)
    return 0
