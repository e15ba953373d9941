"""``helmet-otel serve``: a Streamable HTTP front for a stdio MCP server."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from helmet_otel.cli.naming import default_service_name
from helmet_otel.cli.options import (
    ConfigError,
    ProxyOptions,
    add_proxy_arguments,
    child_environment,
    environ,
    resolve,
)

SERVE_EPILOG = """\
examples:
  helmet-otel serve -- node server.js
  helmet-otel serve --listen 127.0.0.1:9000 --path /mcp -- python server.py
  helmet-otel serve --listen 0.0.0.0:8080 --auth-token-file tokens.txt -- uvx mcp-server-fetch

Clients connect to http://HOST:PORT/PATH with the Streamable HTTP transport. Each legacy session
(Mcp-Session-Id) gets its own server process; 2026-07-28 clients share one per client identity.
Binds 127.0.0.1 by default; Host and Origin are checked (403); a non-loopback --listen needs
--auth-token-file (or --insecure-no-auth). Stop with SIGINT or SIGTERM: every session ends as on
stdio (close stdin, grace, SIGTERM, grace, SIGKILL).
"""


def serve_parser(prog: str, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = parser_class(
        prog=prog,
        usage=f"{prog} [--listen HOST:PORT] [--path /mcp] [OPTIONS] -- CMD [ARGS...]",
        description="Serve a stdio MCP server over Streamable HTTP.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_proxy_arguments(parser, "serve")
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, help="the server command and its arguments"
    )
    return parser


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def main_serve(args: Sequence[str], prog: str, parser_class: type[argparse.ArgumentParser]) -> int:
    parsed = serve_parser(prog, parser_class).parse_args(list(args))
    command: list[str] = list(parsed.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        sys.stderr.write(f"helmet-otel: error: no server command given (see {prog} --help)\n")
        return 2
    env = environ()
    try:
        options = resolve(parsed, env)
    except ConfigError as exc:
        sys.stderr.write(f"helmet-otel: error: {exc}\n")
        return 2
    return run_serve(command, options, env)


def run_serve(command: list[str], options: ProxyOptions, env: dict[str, str]) -> int:
    import anyio

    from helmet_otel.cli.interceptors import build_interceptors
    from helmet_otel.core.interceptor import Interceptor, session_interceptors
    from helmet_otel.core.session import Session
    from helmet_otel.transports.child import ServerCommand
    from helmet_otel.transports.http_front import ServeSettings, serve
    from helmet_otel.transports.http_guard import Guard, TokenFileError, is_loopback, load_tokens
    from helmet_otel.transports.stdio import event_loop_options

    host, port = split_listen(options.listen)
    tokens: list[bytes] = []
    if options.auth_token_file is not None:
        try:
            tokens = load_tokens(options.auth_token_file)
        except TokenFileError as exc:
            sys.stderr.write(f"helmet-otel: error: --auth-token-file: {exc}\n")
            return 2
    elif not is_loopback(host) and not options.insecure_no_auth:
        sys.stderr.write(
            f"helmet-otel: error: --listen {options.listen} is not a loopback address: give "
            "--auth-token-file FILE (or --insecure-no-auth to serve without authentication)\n"
        )
        return 2
    server = ServerCommand(
        argv=command,
        env=child_environment(env, options.pass_otel_env),
        cwd=options.cwd,
        grace=options.grace,
    )
    guard = Guard(
        host, tokens, options.allowed_host, options.allowed_origin, options.auth_failure_limit
    )
    settings = ServeSettings(
        server, guard, host, port, options.path, options.max_message_size,
        options.session_idle_timeout,
        {"command": list(command), "cwd": options.cwd or os.getcwd()},
    )  # fmt: skip
    name = options.name or env.get("OTEL_SERVICE_NAME") or default_service_name(command)
    built = build_interceptors(options, env, service_name=name, transport="http")

    def interceptors_for(session: Session) -> list[Interceptor]:
        return session_interceptors(built.factories, session)

    stderr_file = open(2, "wb", buffering=0, closefd=False)  # noqa: SIM115

    async def main() -> int:
        from helmet_otel.transports.pipes import open_writer

        err = await open_writer(stderr_file)

        def stderr(data: bytes) -> None:
            try:
                err.write(data)
            except BrokenPipeError:
                pass

        def on_security(event: dict[str, object]) -> None:
            # No token ever reaches this record: the guard reports the address and a reason.
            stderr(
                b"helmet-otel: security: auth_failure from %s: %s\n"
                % (str(event["client.address"]).encode(), str(event["reason"]).encode())
            )

        def on_listening(bound_host: str, bound_port: int) -> None:
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            stderr(
                f"helmet-otel: serving {command[0]} on http://{shown}:{bound_port}{options.path}\n".encode()
            )

        try:
            status = await serve(
                settings, interceptors_for, on_security=on_security,
                stderr=stderr, on_listening=on_listening,
            )  # fmt: skip
        finally:
            with anyio.CancelScope(shield=True):
                await built.close("proxy stopped")
                await err.flush()
        return status

    try:
        return anyio.run(main, backend="asyncio", backend_options=event_loop_options())
    finally:
        built.kill()
