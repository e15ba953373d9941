"""``helmet-otel logs / sessions / stats / trace``: the viewer commands' arguments.

``register(subparsers)`` adds the four subcommands to the main parser; each sets
``handler=fn`` where ``fn(args) -> int`` is the exit status: 0 ok, 1 not found or runtime error
(unknown session, unreadable store), 2 bad usage. Machine formats (json, ndjson, csv) go to
stdout or ``--output`` undecorated; notes and errors go to stderr. The commands themselves are
in ``cli.logs``, ``cli.sessions``, ``cli.stats`` and ``cli.trace``; how they write, in
``cli.render``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from helmet_otel import semconv as sc
from helmet_otel.cli.common import NotFound, UsageError
from helmet_otel.cli.logs import cmd_logs
from helmet_otel.cli.sessions import cmd_sessions
from helmet_otel.cli.show import cmd_show
from helmet_otel.cli.stats import cmd_stats
from helmet_otel.cli.trace import cmd_trace
from helmet_otel.store.paths import default_store_path
from helmet_otel.store.schema import StoreError
from helmet_otel.store.timefmt import parse_time

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]


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


_STATUSES: Final = ("active", "ended", "failed", "lost")


def _statuses(text: str) -> list[str]:
    found: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name not in _STATUSES:
            raise argparse.ArgumentTypeError(
                f"unknown status {part.strip()!r} (choose from: {', '.join(_STATUSES)})"
            )
        found.append(name)
    return found


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (a number >= 0; 0 = no limit)")
    return value


# --- registration --------------------------------------------------------------------------


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
    p.add_argument(
        "--wide",
        action="store_true",
        help="tables show every column in full (default: fit the terminal's width)",
    )
    p.add_argument(
        "--no-pager",
        action="store_true",
        help="never page a table (default: through $PAGER, else less, on a terminal)",
    )
    p.add_argument("--utc", action="store_true", help="times in UTC instead of local time")


def _server(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        action="append",
        metavar="GLOB",
        help="only this server (service name; a glob such as 'git*', any case; repeatable)",
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


_SHOW_EPILOG: Final = """\
examples:
  helmet-otel show 1234                    the record with ID 1234 (logs table)
  helmet-otel show 2000000000000001        the call whose span id this is (exports, trace)
  helmet-otel show 1234 --format json
"""

_P = TypeVar("_P", bound=argparse.ArgumentParser)


def register(subparsers: argparse._SubParsersAction[_P]) -> None:  # pyright: ignore[reportPrivateUsage]
    """Add ``logs``, ``sessions``, ``stats``, ``trace`` and ``show`` to the main parser."""
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
        help="session id or prefix, or last / last~N (repeatable)",
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
        help="MCP method or glob, any case, e.g. tools/call, 'tools/*'",
    )
    logs.add_argument(
        "-t",
        "--tool",
        action="append",
        metavar="NAME",
        help="tool, prompt or resource name or glob, any case, e.g. 'get-*'",
    )
    _server(logs)
    logs.add_argument(
        "-d", "--direction", type=_direction, help="client->server (c2s) or server->client (s2c)"
    )
    logs.add_argument("--since", type=_when, metavar="WHEN", help="records at or after WHEN")
    logs.add_argument("--until", type=_when, metavar="WHEN", help="records before WHEN")
    logs.add_argument("-g", "--grep", metavar="TEXT", help="full-text search over bodies")
    logs.add_argument(
        "--security",
        action="store_true",
        help="only security findings and policy blocks (helmet.security records)",
    )
    logs.add_argument(
        "--regex",
        metavar="PATTERN",
        help="a Python regular expression searched in the bodies' JSON text (a scan: slower)",
    )
    logs.add_argument(
        "--errors",
        action="store_true",
        help="only errors (with --calls: failed calls and the arguments that caused them)",
    )
    logs.add_argument(
        "--calls",
        action="store_true",
        help="one row per call: request and answer joined, in-flight calls as pending",
    )
    logs.add_argument(
        "--all",
        action="store_true",
        help="the table also shows bookkeeping events (configuration, initialization, "
        "performance, proxy_close)",
    )
    logs.add_argument(
        "-n", "--limit", type=_count, metavar="N", help="the newest N records (0 = no limit)"
    )
    logs.add_argument(
        "--import",
        dest="import_file",
        metavar="FILE",
        help="import an ndjson/json export into --store and exit",
    )
    logs.set_defaults(handler=_guard("logs", cmd_logs))

    sessions = subparsers.add_parser(
        "sessions",
        help="one row per session: server, client, start, duration, requests, errors, status",
        description="One row per session in the local store, newest first.",
        epilog=_SESSIONS_EPILOG,
        formatter_class=_FORMATTER,
    )
    _common(sessions, ("table", "json", "ndjson", "csv"))
    sessions.add_argument(
        "--active",
        action="store_true",
        help="only the sessions still running, each with its pending calls and their age",
    )
    sessions.add_argument(
        "--status",
        action="extend",
        type=_statuses,
        metavar="STATUS",
        help="only these statuses: active, ended, failed, lost (comma-separated or repeated)",
    )
    sessions.add_argument(
        "-n",
        "--limit",
        type=_count,
        metavar="N",
        help="the newest N sessions (default on a terminal: 20; 0 = all)",
    )
    _server(sessions)
    sessions.add_argument(
        "--since", type=_when, metavar="WHEN", help="sessions active at or after WHEN"
    )
    sessions.set_defaults(handler=_guard("sessions", cmd_sessions))

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
    stats.add_argument(
        "-s",
        "--session",
        action="append",
        metavar="SESSION",
        help="only this session: an id, a prefix of one, or last / last~N (repeatable)",
    )
    _server(stats)
    stats.set_defaults(handler=_guard("stats", cmd_stats))

    trace = subparsers.add_parser(
        "trace",
        help="a session's span tree with durations and statuses",
        description="Print a session's span tree: name, kind, duration and status of every span.",
        epilog=_TRACE_EPILOG,
        formatter_class=_FORMATTER,
    )
    trace.add_argument(
        "session_id", metavar="SESSION", help="session id, unique prefix, or last / last~N"
    )
    _common(trace, ("table", "json"))
    _server(trace)
    trace.set_defaults(handler=_guard("trace", cmd_trace))

    show = subparsers.add_parser(
        "show",
        help="one record or call in full: body, attributes, span and trace ids, its answer",
        description="Print one record or call in full: the redacted body pretty-printed, the "
        "attributes, the span and trace ids, and the related request or response.",
        epilog=_SHOW_EPILOG,
        formatter_class=_FORMATTER,
    )
    show.add_argument(
        "id", metavar="ID", help="a record id (ID column of logs) or a span id (16 hex digits)"
    )
    _common(show, ("table", "json"))
    show.set_defaults(handler=_guard("show", cmd_show))

    from helmet_otel.cli import store_command

    store_command.register(subparsers, _guard)
