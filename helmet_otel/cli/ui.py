"""``helmet-otel ui``: the web viewer over the local store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from helmet_otel.cli.options import add_proxy_arguments, environ, resolve_or_report
from helmet_otel.cli.serve import split_listen

UI_EPILOG = """\
The first line on stdout is the viewer's URL with its access token (a new one each run); every
request needs it (the page keeps it in a cookie), unless --no-token on a loopback --listen.
Read-only over the store; binds 127.0.0.1 by default; Host and Origin are checked.

examples:
  helmet-otel ui
  helmet-otel ui --open
  helmet-otel ui --listen 127.0.0.1:0 --store /tmp/helmet/store.db
"""


def ui_parser(prog: str, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = parser_class(
        prog=prog,
        usage=f"{prog} [--listen 127.0.0.1:8765] [--store PATH] [--open] [--no-token]",
        description="Browse, search, follow and export the local store in a web browser.",
        epilog=UI_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_proxy_arguments(parser, "ui")
    return parser


def main_ui(args: Sequence[str], prog: str, parser_class: type[argparse.ArgumentParser]) -> int:
    import anyio

    from helmet_otel.store.paths import default_store_path
    from helmet_otel.transports.http_guard import is_loopback
    from helmet_otel.transports.stdio import event_loop_options
    from helmet_otel.ui.app import UiSettings, serve_ui
    from helmet_otel.ui.gate import new_token

    parsed = ui_parser(prog, parser_class).parse_args(list(args))
    options = resolve_or_report(parsed, environ())
    if options is None:
        return 2
    host, port = split_listen(options.ui_listen)
    if options.ui_no_token and not is_loopback(host):
        sys.stderr.write(
            f"helmet-otel: error: --no-token needs a loopback --listen, not {options.ui_listen}\n"
        )
        return 2
    store = Path(options.store) if options.store else default_store_path()
    token = None if options.ui_no_token else new_token()
    settings = UiSettings(store, host, port, token)

    def on_listening(bound_host: str, bound_port: int) -> None:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{shown}:{bound_port}/" + (f"?token={token}" if token else "")
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        sys.stderr.write(f"helmet-otel ui: viewing {store} (Ctrl-C to stop)\n")
        if options.ui_open:
            import webbrowser

            webbrowser.open(url)

    try:
        return anyio.run(
            lambda: serve_ui(settings, on_listening=on_listening),
            backend="asyncio",
            backend_options=event_loop_options(),
        )
    except OSError as exc:
        sys.stderr.write(
            f"helmet-otel: error: cannot listen on {options.ui_listen}: {exc.strerror or exc}\n"
        )
        return 1
