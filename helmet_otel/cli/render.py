"""How the viewer commands write: colour, the output stream, terminal-safe text, aligned tables,
the log record formats (table, json, ndjson, csv) and JSON object lists."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
from collections.abc import Generator, Iterable, Sequence
from typing import IO, Final

import orjson

from helmet_otel import semconv as sc
from helmet_otel.store import codec
from helmet_otel.store.export import ExportWriter
from helmet_otel.store.query import LogEntry
from helmet_otel.store.schema import StoreError
from helmet_otel.store.timefmt import format_duration_ms, format_local

__all__ = [
    "LogTable",
    "LogWriter",
    "Style",
    "human_bytes",
    "is_tty",
    "output",
    "printable",
    "table",
    "use_colour",
    "write_objects",
]


class Style:
    """ANSI colour when enabled, plain text otherwise."""

    CODES: Final = {
        "dim": "2",
        "bold": "1",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "blue": "34",
        "magenta": "35",
        "cyan": "36",
    }
    SESSION_COLOURS: Final = ("36", "35", "34", "33", "32", "96", "95", "94")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *names: str) -> str:
        if not self.enabled or not names or not text:
            return text
        codes = ";".join(self.CODES[n] for n in names)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def session(self, text: str, session_id: str | None) -> str:
        if not self.enabled or not text or session_id is None:
            return text
        digest = hashlib.blake2b(session_id.encode(), digest_size=1).digest()[0]
        return f"\x1b[{self.SESSION_COLOURS[digest % len(self.SESSION_COLOURS)]}m{text}\x1b[0m"


def is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def use_colour(mode: str, stream: IO[str]) -> bool:
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return is_tty(stream)


@contextlib.contextmanager
def output(path: str | None, *, csv_mode: bool = False) -> Generator[IO[str], None, None]:
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        stream = open(path, "w", encoding="utf-8", newline="" if csv_mode else None)  # noqa: SIM115
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    with stream:
        yield stream


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` on one line and harmless to a terminal: control characters (newlines, ESC)
    shown as escapes (``\\n``, ``\\x1b``). Names and messages come from the wire."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0], f"\\x{ord(m[0]):02x}"), text)


def _fit(text: str, width: int, *, right: bool = False) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 0 else ""
    return text.rjust(width) if right else text.ljust(width)


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines: list[str] = []
    for row in (headers, *rows):
        cells = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


_LOG_COLUMNS: Final = (
    ("TIME", 23, False),
    ("SESSION", 8, False),
    ("EVENT", 14, False),
    ("DIR", 3, False),
    ("METHOD / TOOL", 30, False),
    ("LATENCY", 9, True),
    ("STATUS", 12, False),
)
_EVENT_STYLE: Final = {
    sc.EVENT_REQUEST: ("cyan",),
    sc.EVENT_RESPONSE: ("green",),
    sc.EVENT_NOTIFICATION: ("blue",),
    sc.EVENT_ERROR: ("red", "bold"),
    sc.EVENT_SERVER_STDERR: ("yellow",),
    sc.EVENT_SESSION_START: ("magenta",),
    sc.EVENT_SESSION_END: ("magenta",),
}


class LogTable:
    """Fixed-width rows, so a followed stream stays aligned."""

    def __init__(self, stream: IO[str], *, colour: bool, utc: bool) -> None:
        self.stream = stream
        self.style = Style(colour)
        self.utc = utc
        width = shutil.get_terminal_size((160, 24)).columns
        fixed = sum(w for _, w, _ in _LOG_COLUMNS) + 2 * len(_LOG_COLUMNS)
        self.body_width = max(20, width - fixed)

    def header(self) -> None:
        cells = [_fit(name, w, right=r) for name, w, r in _LOG_COLUMNS]
        self.stream.write(self.style("  ".join([*cells, "BODY"]), "bold") + "\n")

    def row(self, e: LogEntry) -> None:
        st = self.style
        event = (e.event or "").removeprefix("helmet.")
        direction = {sc.DIRECTION_C2S: "->", sc.DIRECTION_S2C: "<-"}.get(e.direction or "", "")
        what = " ".join(x for x in (e.method, e.target) if x)
        status = codec.status_text(e)
        latency = format_duration_ms(e.latency_ms)
        cells = [
            st(_fit(format_local(e.ts, utc=self.utc), 23), "dim"),
            st.session(_fit((e.session_id or "")[:8], 8), e.session_id),
            st(_fit(event, 14), *_EVENT_STYLE.get(e.event or "", ())),
            _fit(direction, 3),
            _fit(printable(what), 30),
            st(_fit(latency, 9, right=True), "yellow")
            if (e.latency_ms or 0) >= 1000
            else _fit(latency, 9, right=True),
            st(_fit(status, 12), "red", "bold") if e.is_error else _fit(status, 12),
            _fit(printable(codec.body_preview(e)), self.body_width).rstrip(),
        ]
        self.stream.write("  ".join(cells).rstrip() + "\n")


class LogWriter:
    """Writes log entries as a table or in a machine format (``store.export``); the same
    object serves --follow."""

    def __init__(
        self, fmt: str, stream: IO[str], *, colour: bool, utc: bool, follow: bool = False
    ) -> None:
        self.fmt = fmt
        self.stream = stream
        self.follow = follow
        self.table = LogTable(stream, colour=colour, utc=utc) if fmt == "table" else None
        self.export = None if fmt == "table" else ExportWriter(fmt, stream)
        self._rows = 0

    @property
    def count(self) -> int:
        return self.export.count if self.export is not None else self._rows

    def begin(self) -> None:
        if self.table is not None:
            self.table.header()
        elif self.export is not None:
            self.export.begin()

    def write(self, entries: Iterable[LogEntry]) -> None:
        if self.export is not None:
            self.export.write(entries)
        elif self.table is not None:
            for e in entries:
                self.table.row(e)
                self._rows += 1

    def end(self) -> None:
        if self.export is not None:
            self.export.end()


def write_objects(stream: IO[str], fmt: str, objects: Sequence[object]) -> None:
    if fmt == "ndjson":
        for obj in objects:
            stream.write(orjson.dumps(obj).decode("utf-8") + "\n")
    elif objects:
        stream.write("[\n" + ",\n".join(orjson.dumps(o).decode("utf-8") for o in objects) + "\n]\n")
    else:
        stream.write("[]\n")
