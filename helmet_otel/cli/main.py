"""The ``helmet-otel`` command."""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
from collections.abc import Sequence

from helmet_otel import __version__
from helmet_otel.cli.naming import default_service_name
from helmet_otel.cli.options import (
    ProxyOptions,
    add_proxy_arguments,
    child_environment,
    environ,
    resolve_or_report,
)

PROG = "helmet-otel"
VIEWER_COMMANDS = ("logs", "sessions", "stats", "trace", "show", "store")
SECURITY_COMMANDS = ("policy", "tools", "security")

DESCRIPTION = """\
An OpenTelemetry-native, drop-in proxy for MCP servers.

Put it in front of any stdio MCP server: every session becomes a trace, every message a log
record, and MCP metrics are recorded. Telemetry goes to the local store (read it with
`helmet-otel logs`) and, when OTEL_EXPORTER_OTLP_ENDPOINT or --otlp-endpoint is set, over OTLP.

commands:
  CMD [ARGS...]        wrap a stdio MCP server (same as `run -- CMD ARGS...`)
  run -- CMD [ARGS...] wrap a stdio MCP server
  serve -- CMD         serve a stdio MCP server over Streamable HTTP (or --upstream URL)
  connect URL          a stdio front for a remote Streamable HTTP MCP server
  logs                 show, follow, search and export recorded messages
  sessions             list sessions
  stats                latency, errors and sizes per method and tool
  trace SESSION        a session's span tree (SESSION: an id, a prefix, last, last~N)
  show ID              one record or call in full
  ui                   the web viewer: servers, live logs, sessions, stats, export
  security             security findings and policy blocks
  policy check FILE    check a policy file (policy test FILE --tool NAME --args JSON)
  tools list           pinned tool definitions (tools approve SERVER [TOOL])
  doctor               check the configuration, the store and the OTLP endpoint
  store info|prune|vacuum|delete   look after the local store
"""

EPILOG = """\
examples:
  helmet-otel python server.py
  helmet-otel --name weather npx -y @acme/weather-mcp
  OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 helmet-otel node server.js
  helmet-otel run --capture metadata -- uvx mcp-server-fetch
  helmet-otel logs -f
  helmet-otel logs --tool search --errors --since 1h
  helmet-otel ui --open
  helmet-otel --policy policy.toml node server.js
  helmet-otel --restart on-failure python server.py   # a crashed server is started again
  helmet-otel logs --security

In an MCP client config, replace
  "command": "python", "args": ["server.py"]
with
  "command": "helmet-otel", "args": ["python", "server.py"]
"""

RUN_EPILOG = """\
examples:
  helmet-otel run -- python server.py --port 3
  helmet-otel run --no-store --otlp-endpoint http://collector:4318 -- node dist/index.js
  helmet-otel run --redact customer_id --redact 're:ACME-[0-9]{8}' -- python server.py

Options may also come from HELMET_<OPTION> environment variables (e.g. HELMET_CAPTURE=none,
HELMET_NO_STORE=1) and from a TOML --config file whose keys are the long option names.
Precedence: flag > environment > config file > default.
Exit status: the server's (128+N when signal N ended it); 127 when the command is not found;
2 on bad usage.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _top_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} [OPTIONS] CMD [ARGS...]\n       {PROG} COMMAND [OPTIONS]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    add_proxy_arguments(parser)
    return parser


def _run_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [OPTIONS] -- CMD [ARGS...]",
        description="Wrap a stdio MCP server.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_proxy_arguments(parser)
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, help="the server command and its arguments"
    )
    return parser


def _viewer_parser() -> argparse.ArgumentParser:
    from helmet_otel.cli import viewer

    parser = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="subcommand", parser_class=_Parser)
    viewer.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in VIEWER_COMMANDS:
        parsed = _viewer_parser().parse_args(args)
        return int(parsed.handler(parsed))
    if args and args[0] in SECURITY_COMMANDS:
        from helmet_otel.cli import security

        parser = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter)
        security.register(parser.add_subparsers(dest="subcommand", parser_class=_Parser))
        parsed = parser.parse_args(args)
        return int(parsed.handler(parsed))
    if args and args[0] == "serve":
        from helmet_otel.cli.serve import main_serve

        return main_serve(args[1:], f"{PROG} serve", _Parser)
    if args and args[0] == "doctor":
        from helmet_otel.cli.doctor import main_doctor

        return main_doctor(args[1:], f"{PROG} doctor", _Parser)
    if args and args[0] == "ui":
        from helmet_otel.cli.ui import main_ui

        return main_ui(args[1:], f"{PROG} ui", _Parser)
    if args and args[0] == "connect":
        from helmet_otel.cli.connect import main_connect

        return main_connect(args[1:], f"{PROG} connect", _Parser)
    if args and args[0] == "run":
        parsed = _run_parser(f"{PROG} run").parse_args(args[1:])
    elif not args or args[0] in ("-h", "--help", "-V", "--version"):
        _top_parser().parse_args(args or ["--help"])
        return 0
    else:
        parsed = _run_parser(PROG).parse_args(args)
    command: list[str] = list(parsed.command)
    if command and command[0] == "--":
        command = command[1:]
    if command and command[0] == "run" and not shutil.which("run"):  # `--no-store run -- CMD`
        command = command[2:] if command[1:2] == ["--"] else command[1:]
    if command and command[0] in VIEWER_COMMANDS and not shutil.which(command[0]):
        sys.stderr.write(
            f"{PROG}: error: {command[0]!r} is a command of its own: put it first, "
            f"e.g. {PROG} {command[0]} --store PATH\n"
        )
        return 2
    if not command:
        sys.stderr.write(f"{PROG}: error: no server command given (see {PROG} --help)\n")
        return 2
    env = environ()
    options = resolve_or_report(parsed, env, "run")
    if options is None:
        return 2
    return run_proxy(command, options, env)


def run_proxy(command: list[str], options: ProxyOptions, env: dict[str, str]) -> int:
    from helmet_otel import memtrace
    from helmet_otel.cli.interceptors import build_interceptors
    from helmet_otel.core.interceptor import session_interceptors
    from helmet_otel.core.session import Session
    from helmet_otel.redaction import scrub_line
    from helmet_otel.transports.stdio import ServerCommand, StdioProxy, run_stdio

    memtrace.start_from_env("proxy", env)  # a diagnostic; off unless asked
    server = ServerCommand(
        argv=command,
        env=child_environment(env, options.pass_otel_env),
        cwd=options.cwd,
        grace=options.grace,
    )
    name = options.name or env.get("OTEL_SERVICE_NAME") or default_service_name(command)
    built = build_interceptors(options, env, service_name=name, transport="stdio")
    session = Session(transport="stdio")
    try:
        interceptors = session_interceptors(built.factories, session)
        if options.restart == "on-failure":
            from helmet_otel.transports.restart import RestartingStdioProxy

            proxy = functools.partial(
                RestartingStdioProxy, max_restarts=options.max_restarts, scrub=scrub_line
            )
        else:
            proxy = functools.partial(StdioProxy, scrub=scrub_line)
        return run_stdio(server, session, interceptors, after=built.close, proxy_class=proxy)
    finally:
        built.kill()
