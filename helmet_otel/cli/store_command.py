"""``helmet-otel store info | prune --older-than WHEN | vacuum | delete --session ID``.

``info`` reads (also a read-only store); the others write through the store's own writer
connection in short transactions, so proxies recording at the same time carry on. Exit
status: 0 ok, 1 no such store or session or the store refused, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import orjson

from helmet_otel.cli.common import NotFound, UsageError, note
from helmet_otel.cli.render import human_bytes
from helmet_otel.store.paths import default_store_path, retention_from_env
from helmet_otel.store.query import Reader
from helmet_otel.store.timefmt import format_rfc3339, parse_time

__all__ = ["register"]

_EPILOG: Final = """\
examples:
  helmet-otel store info
  helmet-otel store info --format json
  helmet-otel store prune --older-than 7d       delete records, spans and sessions before then
  helmet-otel store delete --session 3fZ9       everything of one session (prefix, last, last~N)
  helmet-otel store vacuum                      give the free space back to the file system
"""

_P = TypeVar("_P", bound=argparse.ArgumentParser)
Handler = Callable[[argparse.Namespace], int]


def _path(args: argparse.Namespace) -> Path:
    return Path(args.store).expanduser()


def cmd_info(args: argparse.Namespace) -> int:
    from helmet_otel.store.maintenance import store_info

    info = store_info(_path(args))
    max_bytes, max_age, _ = retention_from_env()
    doc: dict[str, object] = {
        "path": str(info.path),
        "bytes": info.file_bytes + info.wal_bytes,
        "file_bytes": info.file_bytes,
        "wal_bytes": info.wal_bytes,
        "free_bytes": info.free_bytes,
        "schema_version": info.schema_version,
        "records": info.records,
        "spans": info.spans,
        "sessions": info.sessions,
        "oldest": format_rfc3339(info.oldest_ns) if info.oldest_ns is not None else None,
        "newest": format_rfc3339(info.newest_ns) if info.newest_ns is not None else None,
        "retention_max_bytes": max_bytes,
        "retention_max_age_s": max_age,
    }
    if args.format == "json":
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    rows = [
        ("path", str(info.path)),
        ("size", f"{human_bytes(info.file_bytes + info.wal_bytes)} (file "
                 f"{human_bytes(info.file_bytes)}, WAL {human_bytes(info.wal_bytes)}, "
                 f"free inside {human_bytes(info.free_bytes)})"),
        ("schema", str(info.schema_version)),
        ("records", str(info.records)),
        ("spans", str(info.spans)),
        ("sessions", str(info.sessions)),
        ("oldest", str(doc["oldest"] or "-")),
        ("newest", str(doc["newest"] or "-")),
        ("retention", f"{human_bytes(max_bytes) if max_bytes else 'no size cap'}, "
                      f"{f'{max_age / 86400:g} days' if max_age else 'no age cap'} "
                      "(HELMET_STORE_MAX_BYTES, HELMET_STORE_MAX_AGE)"),
    ]  # fmt: skip
    for name, value in rows:
        sys.stdout.write(f"{name:<10} {value}\n")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from helmet_otel.store.maintenance import prune_before

    cutoff = args.older_than
    if cutoff > time.time_ns():
        raise UsageError(f"--older-than {format_rfc3339(cutoff)} is in the future")
    deleted = prune_before(_path(args), cutoff)
    note(
        f"deleted {deleted.logs} records, {deleted.spans} spans and {deleted.sessions} sessions "
        f"older than {format_rfc3339(cutoff)} from {_path(args)}"
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from helmet_otel.store.maintenance import delete_sessions

    path = _path(args)
    ids: list[str] = []
    with Reader.open(path) as reader:
        for ref in args.session:
            if not ref.strip():
                raise UsageError("--session needs a session id, a prefix of one, or last / last~N")
            found = reader.resolve_session_ref(ref)
            if not found:
                raise NotFound(f"no session matching {ref!r} in {path}")
            if len(found) > 1:
                raise NotFound(
                    f"session prefix {ref!r} is ambiguous: {len(found)} sessions match "
                    f"({', '.join(found[:5])}{', ...' if len(found) > 5 else ''})"
                )
            ids.extend(i for i in found if i not in ids)
    deleted = delete_sessions(path, ids)
    note(
        f"deleted session {', '.join(ids)}: {deleted.logs} records, {deleted.spans} spans"
        f" from {path}"
    )
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    from helmet_otel.store.maintenance import vacuum

    before, after = vacuum(_path(args))
    note(f"vacuumed {_path(args)}: {human_bytes(before)} -> {human_bytes(after)}")
    return 0


def _when(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(
    subparsers: argparse._SubParsersAction[_P],  # pyright: ignore[reportPrivateUsage]
    wrap: Callable[[str, Handler], Handler],
) -> None:
    """Add ``store`` with its four subcommands; ``wrap(name, fn)`` guards each handler."""
    store = subparsers.add_parser(
        "store",
        help="the local store: info, prune, vacuum, delete a session",
        description="Look after the local store: what it holds, delete old or one session's "
        "data, give free space back.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = store.add_subparsers(dest="action", required=True, parser_class=type(store))

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store",
            metavar="PATH",
            default=str(default_store_path()),
            help="the store (default: $HELMET_STORE or %(default)s)",
        )

    info = actions.add_parser("info", help="path, size, schema, records, sessions, retention")
    common(info)
    info.add_argument("--format", choices=("table", "json"), default="table")
    info.set_defaults(handler=wrap("store info", cmd_info))
    prune = actions.add_parser("prune", help="delete everything older than WHEN")
    common(prune)
    prune.add_argument(
        "--older-than",
        required=True,
        type=_when,
        metavar="WHEN",
        help="a duration ago (7d, 12h) or a timestamp (2026-11-24T10:00:00Z)",
    )
    prune.set_defaults(handler=wrap("store prune", cmd_prune))
    delete = actions.add_parser("delete", help="delete a session: its records, spans and row")
    common(delete)
    delete.add_argument(
        "-s",
        "--session",
        action="append",
        required=True,
        metavar="SESSION",
        help="session id, unique prefix, or last / last~N (repeatable)",
    )
    delete.set_defaults(handler=wrap("store delete", cmd_delete))
    vacuum = actions.add_parser("vacuum", help="rebuild the file without its free space")
    common(vacuum)
    vacuum.set_defaults(handler=wrap("store vacuum", cmd_vacuum))
