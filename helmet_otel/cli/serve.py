"""``helmet-otel serve``: a Streamable HTTP front for a stdio MCP server."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import cast

from helmet_otel import semconv as sc
from helmet_otel.cli.naming import default_service_name
from helmet_otel.cli.options import (
    ProxyOptions,
    add_proxy_arguments,
    child_environment,
    environ,
    resolve_or_report,
)
from helmet_otel.core.verdicts import Finding

SERVE_EPILOG = """\
examples:
  helmet-otel serve -- node server.js
  helmet-otel serve --listen 127.0.0.1:9000 --path /mcp -- python server.py
  helmet-otel serve --listen 0.0.0.0:8080 --auth-token-file tokens.txt -- uvx mcp-server-fetch
  helmet-otel serve --upstream https://mcp.example.com/mcp

Clients connect to http://HOST:PORT/PATH with the Streamable HTTP transport. Each legacy session
(Mcp-Session-Id) gets its own server process; 2026-07-28 clients share one per client identity.
Binds 127.0.0.1 by default; Host and Origin are checked (403); a non-loopback --listen needs
--auth-token-file (or --insecure-no-auth). Stop with SIGINT or SIGTERM: every session ends as on
stdio (close stdin, grace, SIGTERM, grace, SIGKILL).

With --upstream URL, serve is a reverse proxy in front of a remote Streamable HTTP server: the
client's headers (Authorization included) pass through, and so do the OAuth discovery paths
(/.well-known/oauth-protected-resource..., /.well-known/oauth-authorization-server) and
WWW-Authenticate; SSE answers are relayed event by event; each upstream Mcp-Session-Id is one
helmet session.
"""


def serve_parser(prog: str, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = parser_class(
        prog=prog,
        usage=f"{prog} [--listen HOST:PORT] [--path /mcp] [OPTIONS] (-- CMD [ARGS...] | --upstream URL)",
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
    env = environ()
    options = resolve_or_report(parsed, env, "serve")
    if options is None:
        return 2
    if options.upstream is not None:
        return serve_upstream(command, options, env)
    if not command:
        sys.stderr.write(f"helmet-otel: error: no server command given (see {prog} --help)\n")
        return 2
    return run_serve(command, options, env)


def _listen_check(host: str, options: ProxyOptions) -> list[bytes] | str:
    """The accepted token digests, or why serve must not start."""
    from helmet_otel.transports.http_guard import TokenFileError, is_loopback, load_tokens

    if options.auth_token_file is not None:
        try:
            return load_tokens(options.auth_token_file)
        except TokenFileError as exc:
            return f"--auth-token-file: {exc}"
    if not is_loopback(host) and not options.insecure_no_auth:
        return (
            f"--listen {options.listen} is not a loopback address: give "
            "--auth-token-file FILE (or --insecure-no-auth to serve without authentication)"
        )
    return []


def serve_upstream(command: list[str], options: ProxyOptions, env: dict[str, str]) -> int:
    from urllib.parse import urlsplit

    from helmet_otel.cli.connect import recorded_url

    url = options.upstream
    assert url is not None
    parts = urlsplit(url)
    problem = ""
    if command:
        problem = "give either --upstream URL or -- CMD, not both"
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        problem = f"--upstream: bad value {url!r}: expected an http:// or https:// URL"
    elif options.auth_token_file is not None:
        problem = (
            "--auth-token-file does not go with --upstream: the Authorization header is the "
            "upstream's (it passes through)"
        )
    host, port = split_listen(options.listen)
    checked = _listen_check(host, options)
    if not problem and isinstance(checked, str):
        problem = checked
    if problem:
        sys.stderr.write(f"helmet-otel: error: {problem}\n")
        return 2
    shown_url = recorded_url(url)
    name = options.name or env.get("OTEL_SERVICE_NAME") or parts.hostname or "mcp-server"
    return _run_front(options, env, name, host, port, url=url, shown_url=shown_url)


def auth_finding(event: dict[str, object]) -> Finding:
    """The ``auth_failure`` finding of a refused request (`McpFront` reports it): medium for
    a 401, high for the one that earns the address a block, low for each 429 while it lasts."""
    address = str(event["client.address"])
    reason = str(event["reason"])
    status = cast(int, event["status"])
    if status == 429:
        severity = "low"
        message = f"request from {address} refused (429): {reason}"
    else:
        severity = "high" if event["blocked"] else "medium"
        message = f"authentication failed from {address}: {reason}"
        if event["blocked"]:
            message += f"; the address gets 429 for {event['block_seconds']:g} s"
    attributes: dict[str, str | int] = {
        sc.CLIENT_ADDRESS: address,
        sc.CLIENT_PORT: cast(int, event["client.port"]),
        sc.HELMET_SECURITY_REASON: reason,
        sc.HTTP_RESPONSE_STATUS_CODE: status,
    }
    return Finding("auth_failure", severity, "auth_failure", None, message, attributes)


def run_serve(command: list[str], options: ProxyOptions, env: dict[str, str]) -> int:
    host, port = split_listen(options.listen)
    tokens = _listen_check(host, options)
    if isinstance(tokens, str):
        sys.stderr.write(f"helmet-otel: error: {tokens}\n")
        return 2
    name = options.name or env.get("OTEL_SERVICE_NAME") or default_service_name(command)
    return _run_front(options, env, name, host, port, command=command, tokens=tokens)


def _run_front(
    options: ProxyOptions, env: dict[str, str], name: str, host: str, port: int, *,
    command: list[str] | None = None, tokens: list[bytes] | None = None, url: str | None = None,
    shown_url: str = "",
) -> int:  # fmt: skip
    """Serve a command (one child per session) or, with ``url``, reverse-proxy that server."""
    import anyio
    from anyio.abc import TaskGroup

    from helmet_otel.cli.interceptors import build_interceptors
    from helmet_otel.core.interceptor import Interceptor, session_interceptors
    from helmet_otel.core.session import Session
    from helmet_otel.redaction import scrub_line
    from helmet_otel.transports.child import ServerCommand
    from helmet_otel.transports.http_front import Front, McpFront, ServeSettings, run_front
    from helmet_otel.transports.http_guard import Guard
    from helmet_otel.transports.http_reverse import ReverseFront, UpstreamSettings
    from helmet_otel.transports.mcp_client import upstream_info
    from helmet_otel.transports.stdio import event_loop_options

    guard = Guard(
        host, tokens or [], options.allowed_host, options.allowed_origin,
        options.auth_failure_limit,
    )  # fmt: skip
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

        feed = built.feed

        def on_security(event: dict[str, object]) -> None:
            # No token ever reaches this record: the guard reports the address and a reason.
            finding = auth_finding(event)
            if feed is not None:
                feed.process_finding(finding)
            if feed is None or event["blocked"]:  # else the record says it; no stderr flood
                stderr(b"helmet-otel: security: %s\n" % finding.message.encode())

        what = shown_url if url is not None else scrub_line((command or ["?"])[0])

        def on_listening(bound_host: str, bound_port: int) -> None:
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            stderr(
                f"helmet-otel: serving {what} on http://{shown}:{bound_port}{options.path}\n".encode()
            )

        if url is not None:
            upstream = UpstreamSettings(
                url, guard, host, port, options.path, options.max_message_size,
                options.session_idle_timeout, options.request_timeout,
                upstream_info(url, shown_url),
            )  # fmt: skip

            def make_front(tg: TaskGroup) -> Front:
                return ReverseFront(upstream, interceptors_for, stderr, tg)

            wait = 3.0
        else:
            assert command is not None
            server = ServerCommand(
                argv=command, env=child_environment(env, options.pass_otel_env),
                cwd=options.cwd, grace=options.grace,
            )  # fmt: skip
            settings = ServeSettings(
                server, guard, host, port, options.path, options.max_message_size,
                options.session_idle_timeout,
                {"command": list(command), "cwd": options.cwd or os.getcwd()},
                options.request_timeout,
            )  # fmt: skip

            def make_front(tg: TaskGroup) -> Front:
                return McpFront(
                    settings, interceptors_for, on_security, stderr, tg, scrub=scrub_line
                )

            wait = options.grace * 2 + 3.0
        try:
            status = await run_front(
                make_front, host, port, options.max_message_size, wait, on_listening
            )
        finally:
            with anyio.CancelScope(shield=True):
                await built.close("proxy stopped")
                await err.flush()
        return status

    try:
        return anyio.run(main, backend="asyncio", backend_options=event_loop_options())
    finally:
        built.kill()
