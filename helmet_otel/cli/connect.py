"""``helmet-otel connect``: a stdio front for a remote Streamable HTTP MCP server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from helmet_otel.cli.options import (
    ProxyOptions,
    add_proxy_arguments,
    environ,
    resolve_or_report,
)

CONNECT_EPILOG = """\
examples:
  helmet-otel connect https://mcp.example.com/mcp
  helmet-otel connect --header 'X-Api-Key: 123' http://127.0.0.1:3001/mcp
  helmet-otel connect --bearer-token-file ~/.config/acme/token https://mcp.acme.dev/mcp

For an MCP client that only launches commands, use
  "command": "helmet-otel", "args": ["connect", "https://mcp.example.com/mcp"]
Each message is POSTed; JSON and SSE answers reach the client message by message; the server's
GET stream is opened when it offers one. A server that forgot the session (404) is
re-initialized with the client's own handshake and the message retried, unseen by the client.
A server with only the deprecated HTTP+SSE transport is used through that. At exit the session
is DELETEd. The whole connection is one helmet session (transport http).
"""


def connect_parser(
    prog: str, parser_class: type[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    parser = parser_class(
        prog=prog,
        usage=f"{prog} [--header 'NAME: VALUE'] [OPTIONS] URL",
        description="Connect a stdio MCP client to a remote Streamable HTTP MCP server.",
        epilog=CONNECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_proxy_arguments(parser, "connect")
    parser.add_argument("url", help="the server's MCP endpoint (http:// or https://)")
    return parser


def recorded_url(url: str) -> str:
    """The URL as telemetry shows it: no user info, no query (either may hold a credential)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def request_headers(options: ProxyOptions) -> list[tuple[bytes, bytes]] | str:
    """The headers to send, or why they cannot be built (a token file that cannot be read)."""
    headers: list[tuple[bytes, bytes]] = []
    for header in options.header:
        name, _, value = header.partition(":")
        headers.append((name.strip().encode("latin-1"), value.strip().encode("latin-1")))
    if options.bearer_token_file is not None:
        try:
            with open(options.bearer_token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            return f"--bearer-token-file: cannot read {options.bearer_token_file}: {getattr(exc, 'strerror', None) or exc}"
        if not token or not token.isprintable():
            return f"--bearer-token-file: {options.bearer_token_file}: no token on its first line"
        headers.append((b"authorization", b"Bearer " + token.encode()))
    return headers


def main_connect(
    args: Sequence[str], prog: str, parser_class: type[argparse.ArgumentParser]
) -> int:
    parsed = connect_parser(prog, parser_class).parse_args(list(args))
    env = environ()
    options = resolve_or_report(parsed, env, "connect")
    if options is None:
        return 2
    url: str = parsed.url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        sys.stderr.write(
            f"helmet-otel: error: URL: bad value {url!r}: expected an http:// or https:// URL\n"
        )
        return 2
    headers = request_headers(options)
    if isinstance(headers, str):
        sys.stderr.write(f"helmet-otel: error: {headers}\n")
        return 2
    return run_connect(url, headers, options, env)


def run_connect(
    url: str, headers: list[tuple[bytes, bytes]], options: ProxyOptions, env: dict[str, str]
) -> int:
    import anyio

    from helmet_otel.cli.interceptors import build_interceptors
    from helmet_otel.core.interceptor import session_interceptors
    from helmet_otel.core.session import Session
    from helmet_otel.transports.connect import ConnectProxy
    from helmet_otel.transports.stdio import event_loop_options

    parts = urlsplit(url)
    name = options.name or env.get("OTEL_SERVICE_NAME") or parts.hostname or "mcp-server"
    built = build_interceptors(options, env, service_name=name, transport="http")
    session = Session(transport="http")

    async def main() -> int:
        interceptors = session_interceptors(built.factories, session)
        proxy = ConnectProxy(
            url, headers, session, interceptors, request_timeout=options.request_timeout,
            grace=options.grace, recorded_url=recorded_url(url),
        )  # fmt: skip
        try:
            return await proxy.run()
        finally:
            with anyio.CancelScope(shield=True):
                await built.close("proxy stopped")

    try:
        return anyio.run(main, backend="asyncio", backend_options=event_loop_options())
    finally:
        built.kill()
