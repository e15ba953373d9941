"""``helmet-otel policy check|test``, ``tools list|approve`` and ``security``.

Exit statuses as the viewer commands: 0 ok, 1 a problem found (a policy file that does not
load, an unreadable store, nothing to approve), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import orjson

from helmet_otel import semconv as sc
from helmet_otel.cli.common import note
from helmet_otel.policy.detectors import changed_fields
from helmet_otel.policy.engine import TOOLS_CALL, Engine
from helmet_otel.policy.loader import PolicyError, load_policy
from helmet_otel.store.paths import default_store_path
from helmet_otel.store.pins import REMOVED, PinTable, read_pins
from helmet_otel.store.query import LogFilter, Reader
from helmet_otel.store.schema import StoreError
from helmet_otel.store.timefmt import parse_duration

__all__ = ["COMMANDS", "register"]

COMMANDS: Final = ("policy", "tools", "security")
LATEST: Final = 10  # findings listed by `security`
TOP: Final = 10  # rules and tools listed by `security`

_P = TypeVar("_P", bound=argparse.ArgumentParser)


def _out(text: str) -> None:
    """A line of the command's output (stdout: these commands never run on the wire)."""
    sys.stdout.write(text + "\n")


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="PATH", default=str(default_store_path()),
        help="the store (default: $HELMET_STORE or %(default)s)",
    )  # fmt: skip


def _format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )


def register(subparsers: argparse._SubParsersAction[_P]) -> None:  # pyright: ignore[reportPrivateUsage]
    policy = subparsers.add_parser(
        "policy", help="check a policy file, or test a call against it",
        description="Check a policy file, or show what it decides for a call.",
        epilog="examples:\n  helmet-otel policy check policy.toml\n"
               "  helmet-otel policy test policy.toml --tool echo --args '{\"message\": \"hi\"}'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    actions = policy.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="exit 0, or print FILE:LINE: message per problem")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=cmd_policy_check)
    test = actions.add_parser("test", help="print the decision on one tools/call and its rule")
    test.add_argument("file", metavar="FILE")
    test.add_argument("--tool", required=True, metavar="NAME")
    test.add_argument("--args", default="{}", metavar="JSON", help="the call's arguments")
    test.add_argument("--server", default="", metavar="NAME", help="the server's name")
    test.add_argument("--client", default="", metavar="NAME", help="the client's name")
    test.add_argument(
        "--annotations", default=None, metavar="JSON",
        help="the tool's annotations as the server lists them (default: none, i.e. unsafe)",
    )  # fmt: skip
    test.set_defaults(handler=cmd_policy_test)

    tools = subparsers.add_parser(
        "tools", help="pinned tool definitions (tool drift): list, approve",
        description="The tool definitions pinned per server, and approving changed ones.",
        epilog="examples:\n  helmet-otel tools list\n  helmet-otel tools approve weather\n"
               "  helmet-otel tools approve weather get_forecast",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    tool_actions = tools.add_subparsers(dest="action", required=True)
    listing = tool_actions.add_parser("list", help="the pins, and which tools drifted")
    listing.add_argument("server", nargs="?", metavar="SERVER")
    _store_arg(listing)
    _format_arg(listing)
    listing.set_defaults(handler=cmd_tools_list)
    approve = tool_actions.add_parser("approve", help="pin the changed definitions")
    approve.add_argument("server", metavar="SERVER")
    approve.add_argument("tool", nargs="?", metavar="TOOL")
    _store_arg(approve)
    approve.set_defaults(handler=cmd_tools_approve)

    security = subparsers.add_parser(
        "security", help="security findings and policy blocks: counts, top rules and tools",
        description="Security findings (helmet.security records) in the local store: counts by "
        "type and severity, the top rules and tools, the latest findings.",
        epilog="examples:\n  helmet-otel security\n  helmet-otel security --since 1h\n"
               "  helmet-otel logs --security -f",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    security.add_argument(
        "--since", metavar="DURATION", help="only findings this recent (e.g. 30m, 24h, 7d)"
    )
    _store_arg(security)
    _format_arg(security)
    security.set_defaults(handler=cmd_security)


# -- policy ------------------------------------------------------------------------------------
def cmd_policy_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        for line in exc.lines():
            _out(line)
        return 1
    note(f"{args.file}: ok ({len(policy.rules)} rules, mode {policy.mode}, "
         f"default {policy.default})")  # fmt: skip
    return 0


def _json_object(text: str, what: str) -> dict[str, Any] | None:
    try:
        value: object = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        note(f"policy test: error: {what}: not JSON ({exc})")
        return None
    if not isinstance(value, dict):
        note(f"policy test: error: {what}: expected a JSON object")
        return None
    return cast(dict[str, Any], value)


def cmd_policy_test(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        for line in exc.lines():
            _out(line)
        return 1
    arguments = _json_object(args.args, "--args")
    annotations = _json_object(args.annotations, "--annotations") if args.annotations else {}
    if arguments is None or annotations is None:
        return 2
    engine = Engine(policy, args.server)
    decision = engine.decide(
        TOOLS_CALL, args.tool, arguments, args.client, annotations if args.annotations else None
    )
    if decision is None:
        _out(f"allow (default) tool={args.tool}")
        return 0
    rule = next((r for r in policy.rules if r.id == decision.rule_id), None)
    where = f" ({args.file}:{rule.line})" if rule is not None else ""
    shadow = " [shadow: recorded, not enforced]" if decision.shadow else ""
    by = "default" if rule is None else f"rule {decision.rule_id}"
    _out(f"{decision.action} by {by}{where} tool={args.tool}{shadow}")
    return 0


# -- tools -------------------------------------------------------------------------------------
def _ns_text(ns: int | None) -> str:
    if ns is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def _pin_status(seen: str | None) -> str:
    if seen is None:
        return "pinned"
    return "removed" if seen == REMOVED else "drifted"


def cmd_tools_list(args: argparse.Namespace) -> int:
    try:
        rows = read_pins(Path(args.store), args.server)
    except StoreError as exc:
        note(f"tools list: error: {exc}")
        return 1
    items = [
        {
            "server": r.server, "tool": r.tool, "pinned": _ns_text(r.pinned_ns),
            "status": _pin_status(r.seen),
            "changed": changed_fields(r.definition, r.seen) if r.seen else [],
            "first_called": _ns_text(r.called_ns),
        }
        for r in rows
    ]  # fmt: skip
    if args.format == "json":
        sys.stdout.write(orjson.dumps(items, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not items:
        note("no pinned tools yet (a proxy pins what a server lists in tools/list)")
        return 0
    width = max(len(i["server"]) for i in items)
    tool_width = max(len(i["tool"]) for i in items)
    for item in items:
        changed = f" ({', '.join(item['changed'])} changed)" if item["changed"] else ""
        _out(f"{item['server']:<{width}}  {item['tool']:<{tool_width}}  {item['status']:<7}  "
              f"pinned {item['pinned']}{changed}")  # fmt: skip
    return 0


def cmd_tools_approve(args: argparse.Namespace) -> int:
    path = Path(args.store)
    if not path.exists():
        note(f"tools approve: error: no store at {path}")
        return 1
    try:
        table = PinTable(path, busy_timeout_ms=5000)
        try:
            approved = table.approve(args.server, args.tool)
        finally:
            table.close()
    except (sqlite3.Error, StoreError, OSError) as exc:
        note(f"tools approve: error: {exc}")
        return 1
    if not approved:
        which = f"tool {args.tool!r} of " if args.tool else ""
        note(f"tools approve: nothing to approve: {which}server {args.server!r} has no changed "
             "definitions (see helmet-otel tools list)")  # fmt: skip
        return 1
    for tool in approved:
        _out(f"approved {args.server} {tool}")
    return 0


# -- security ----------------------------------------------------------------------------------
def cmd_security(args: argparse.Namespace) -> int:
    since_ns = None
    if args.since is not None:
        try:
            since_ns = time.time_ns() - int(parse_duration(args.since) * 1e9)
        except ValueError:
            note(f"security: error: --since {args.since!r}: expected a duration such as 30m or 7d")
            return 2
    try:
        with Reader.open(Path(args.store)) as reader:
            entries = list(
                reader.iter_logs(LogFilter(events=(sc.EVENT_SECURITY,), since_ns=since_ns))
            )
    except StoreError as exc:
        note(f"security: error: {exc}")
        return 1
    by_kind: Counter[tuple[str, str]] = Counter()
    rules: Counter[str] = Counter()
    tools: Counter[str] = Counter()
    latest: list[dict[str, Any]] = []
    for entry in entries:
        attrs = cast(dict[str, Any], orjson.loads(entry.attrs_json or "{}"))
        kind = str(attrs.get(sc.HELMET_SECURITY_TYPE, "?"))
        severity = str(attrs.get(sc.HELMET_SECURITY_SEVERITY, "?"))
        by_kind[(kind, severity)] += 1
        rules[str(attrs.get(sc.HELMET_SECURITY_RULE, "?"))] += 1
        tool = attrs.get(sc.GEN_AI_TOOL_NAME)
        if tool is not None:
            tools[str(tool)] += 1
        body: object = orjson.loads(entry.body_json) if entry.body_json else ""
        latest.append({
            "time": _ns_text(entry.ts), "type": kind, "severity": severity,
            "rule": attrs.get(sc.HELMET_SECURITY_RULE), "tool": tool,
            "session_id": entry.session_id, "trace_id": entry.trace_id, "message": body,
        })  # fmt: skip
    latest = latest[-LATEST:]
    if args.format == "json":
        report = {
            "findings": len(entries),
            "by_type": [{"type": k, "severity": s, "count": n}
                        for (k, s), n in sorted(by_kind.items())],
            "top_rules": [{"rule": r, "count": n} for r, n in rules.most_common(TOP)],
            "top_tools": [{"tool": t, "count": n} for t, n in tools.most_common(TOP)],
            "latest": latest,
        }  # fmt: skip
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    _out(f"{len(entries)} findings" + (f" in the last {args.since}" if args.since else ""))
    if not entries:
        return 0
    _out("\nby type and severity:")
    for (kind, severity), count in sorted(by_kind.items()):
        _out(f"  {kind:<20} {severity:<8} {count}")
    _out("\ntop rules and detectors:")
    for rule, count in rules.most_common(TOP):
        _out(f"  {rule:<28} {count}")
    if tools:
        _out("\ntop tools:")
        for tool, count in tools.most_common(TOP):
            _out(f"  {tool:<28} {count}")
    _out("\nlatest:")
    for item in latest:
        session = (item["session_id"] or "-")[:8]
        _out(f"  {item['time']}  {item['severity']:<6} {item['type']:<18} {session}  "
              f"{item['message']}")  # fmt: skip
    return 0
