"""The viewer's HTTP handler on ``transports.http_server`` and the loop that serves it.

Static files are answered on the event loop from memory. A JSON route or an export runs in a
worker thread (at most ``QUERY_THREADS`` at once), each thread with its own query-only store
connection, so a slow query never holds up the live stream or another request. An export is
streamed in batches as a chunked response, waiting for the client to drain each.
"""

from __future__ import annotations

import io
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Final

import anyio
import anyio.from_thread
import anyio.to_thread
import orjson
from anyio.abc import TaskGroup

from helmet_otel.store.export import CONTENT_TYPES, ExportWriter
from helmet_otel.store.query import Reader
from helmet_otel.store.schema import StoreError
from helmet_otel.transports.http_server import Early, Exchange, Headers, Request, start_server
from helmet_otel.ui import api
from helmet_otel.ui.assets import build_shell
from helmet_otel.ui.cancel import Cancel, CancelledError
from helmet_otel.ui.filters import Params, parse_params
from helmet_otel.ui.gate import Gate

__all__ = ["CSP", "UiSettings", "serve_ui"]

QUERY_THREADS: Final = 3
EXPORT_BATCH: Final = 2000
CSP: Final = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON: Final[Headers] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
SECURITY_HEADERS: Final[Headers] = [(b"content-security-policy", CSP), *_COMMON]
JSON: Final[Headers] = [(b"content-type", b"application/json"), *SECURITY_HEADERS]
TEXT: Final[Headers] = [(b"content-type", b"text/plain; charset=utf-8"), *SECURITY_HEADERS]


@dataclass
class UiSettings:
    store: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None


def _error(status: int, message: str) -> tuple[int, Headers, bytes]:
    return status, JSON, orjson.dumps({"error": message})


class UiApp:
    """The `http_server.Handler` of the viewer."""

    def __init__(self, settings: UiSettings, tg: TaskGroup) -> None:
        self.settings = settings
        self.gate = Gate(settings.host, settings.port, settings.token)
        shell = build_shell(api.page_meta(settings.store))
        self.page_headers: Headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-security-policy", shell.csp),
            *_COMMON,
        ]
        self.page = shell.body
        self._tg = tg
        self._limiter = anyio.CapacityLimiter(QUERY_THREADS)
        self._local = threading.local()

    # -- the gate (request head) -----------------------------------------------------------
    def check(self, request: Request, length: int | None) -> Early | None:
        refusal = self.gate.refusal(request)
        if refusal is not None:
            status, why = refusal
            return Early(status, list(TEXT), why.encode() + b"\n")
        if request.method != "GET":
            return Early(405, [(b"allow", b"GET"), *TEXT], b"the viewer is read-only\n")
        if length:
            return Early(413, list(TEXT), b"no request bodies\n")
        return None

    # -- requests --------------------------------------------------------------------------
    def handle(self, request: Request, exchange: Exchange) -> None:
        path = request.path
        if path == "/":
            headers = self.page_headers
            if self.gate.token is not None and self.gate.url_token(request):
                # the printed URL: the token goes into a cookie, and the page drops it from the
                # address (no redirect: a round trip less before the first paint)
                headers = [(b"set-cookie", self.gate.set_cookie()), *headers]
            exchange.respond(200, headers, self.page)
        elif path == "/api/export":
            self._tg.start_soon(self._export, request, exchange)
        elif path in api.ROUTES:
            self._tg.start_soon(self._route, api.ROUTES[path], request, exchange)
        else:
            exchange.respond(*_error(404, f"no such page: {path}"))

    def _reader(self) -> Reader:
        """This worker thread's store connection (opened on first use)."""
        reader: Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = Reader.open(self.settings.store)
            self._local.reader = reader
        return reader

    def _answer(
        self, fn: Callable[[Reader, Params], object], query: str, cancel: Cancel
    ) -> tuple[int, Headers, bytes]:
        """In a worker thread: run a route, and turn failures into answers."""
        try:
            reader = self._reader()
            with cancel.running(reader.conn):
                result = fn(reader, Params(query))
        except CancelledError:
            return _error(503, "cancelled")  # (nobody is listening)
        except api.NotFoundError as exc:
            return _error(404, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        except StoreError as exc:
            if cancel.cancelled:
                return _error(503, "cancelled")  # interrupted: the connection is fine
            self._forget_reader()
            return _error(503, str(exc))
        return 200, JSON, orjson.dumps(result)

    def _forget_reader(self) -> None:
        reader: Reader | None = getattr(self._local, "reader", None)
        if reader is not None:
            reader.close()
            self._local.reader = None

    async def _route(
        self, fn: Callable[[Reader, Params], object], request: Request, exchange: Exchange
    ) -> None:
        cancel = Cancel()
        exchange.on_close = cancel.cancel
        answer = await anyio.to_thread.run_sync(
            self._answer, fn, request.query, cancel, limiter=self._limiter,
            abandon_on_cancel=True,
        )  # fmt: skip
        exchange.respond(*answer)

    async def _export(self, request: Request, exchange: Exchange) -> None:
        await anyio.to_thread.run_sync(
            self._export_in_thread, request, exchange, limiter=self._limiter,
            abandon_on_cancel=True,
        )  # fmt: skip

    def _export_in_thread(self, request: Request, exchange: Exchange) -> None:
        """Stream the records the filters select, oldest first, as ``helmet-otel logs`` would."""

        def on_loop(fn: Callable[[], None]) -> None:
            anyio.from_thread.run_sync(fn)

        params = Params(request.query)
        fmt = params.one("format") or "ndjson"
        try:
            if fmt not in CONTENT_TYPES:
                raise ValueError(f"format: expected json, ndjson or csv, got {fmt!r}")
            reader = self._reader()
            flt = api.log_filter(reader, parse_params(params))
        except ValueError as exc:
            refusal = _error(400, str(exc))
            on_loop(lambda: exchange.respond(*refusal))
            return
        except StoreError as exc:
            self._forget_reader()
            refusal = _error(503, str(exc))
            on_loop(lambda: exchange.respond(*refusal))
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        headers: Headers = [
            (b"content-type", CONTENT_TYPES[fmt].encode()),
            (b"content-disposition", f'attachment; filename="helmet-logs-{stamp}.{fmt}"'.encode()),
            *SECURITY_HEADERS,
        ]
        buffer = io.StringIO()
        writer = ExportWriter(fmt, buffer)
        writer.begin()
        on_loop(lambda: exchange.start(200, headers))

        def flush() -> bool:
            data = buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            on_loop(lambda: exchange.send(data))
            anyio.from_thread.run(exchange.drain)
            return not exchange.closed

        try:
            entries = reader.iter_logs(flt, batch=EXPORT_BATCH) if flt is not None else iter(())
            while batch := list(islice(entries, EXPORT_BATCH)):
                writer.write(batch)
                if not flush():
                    return
        except (StoreError, sqlite3.Error):
            on_loop(exchange.finish)  # a cut export: the client sees a short file
            return
        writer.end()
        flush()
        on_loop(exchange.finish)


async def serve_ui(
    settings: UiSettings,
    *,
    on_listening: Callable[[str, int], None],
    stop: anyio.Event | None = None,
) -> int:
    """Serve the viewer until SIGINT/SIGTERM/SIGHUP (or ``stop``)."""
    async with anyio.create_task_group() as tg:
        app = UiApp(settings, tg)
        server = await start_server(app, settings.host, settings.port, max_body=0)
        host, port = server.sockets[0].getsockname()[:2]
        app.gate.port = int(port)  # port 0 asked for any: the cookie is named for the real one
        on_listening(str(host), int(port))
        stopped = stop or anyio.Event()
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:

            async def watch() -> None:
                async for _ in signals:
                    stopped.set()
                    return

            tg.start_soon(watch)
            await stopped.wait()
        server.close()
        tg.cancel_scope.cancel()
    return 0
