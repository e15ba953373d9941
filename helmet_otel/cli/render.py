"""How the viewer commands write: colour, the output stream, terminal-safe text, aligned tables,
the log record formats (table, json, ndjson, csv) and JSON object lists."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import IO, Final

import orjson

from helmet_otel import semconv as sc
from helmet_otel.cli.layout import SEP, Column, fit, fit_cell, terminal_width
from helmet_otel.cli.pager import paged
from helmet_otel.store import codec
from helmet_otel.store.export import ExportWriter
from helmet_otel.store.query import LogEntry
from helmet_otel.store.schema import StoreError
from helmet_otel.store.timefmt import format_duration_ms, format_local

__all__ = [
    "Cell",
    "Grid",
    "LogTable",
    "LogWriter",
    "Style",
    "colour_wanted",
    "human_bytes",
    "is_tty",
    "output",
    "printable",
    "table",
    "use_colour",
    "wants_pager",
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


def colour_wanted(args: argparse.Namespace) -> bool:
    """Colour for a command's table: ``--color``, and only on stdout (a pager keeps it)."""
    return args.output is None and use_colour(args.color, sys.stdout)


def wants_pager(args: argparse.Namespace) -> bool:
    """A table goes through the pager (on a terminal) unless ``--no-pager``."""
    return args.format == "table" and not args.no_pager and not getattr(args, "follow", False)


@contextlib.contextmanager
def output(
    path: str | None, *, csv_mode: bool = False, page: bool = False
) -> Generator[IO[str], None, None]:
    """stdout (through a pager when ``page`` and stdout is a terminal), or a new file ``path``,
    created ``0600`` like the store: an export holds the same private bodies."""
    if path is None or path == "-":
        with paged(page and is_tty(sys.stdout)) as stream:
            yield stream
            stream.flush()
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stream = open(fd, "w", encoding="utf-8", newline="" if csv_mode else None)  # noqa: SIM115
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


_EVENT_STYLE: Final = {
    sc.EVENT_REQUEST: ("cyan",),
    sc.EVENT_RESPONSE: ("green",),
    sc.EVENT_NOTIFICATION: ("blue",),
    sc.EVENT_ERROR: ("red", "bold"),
    sc.EVENT_SERVER_STDERR: ("yellow",),
    sc.EVENT_SESSION_START: ("magenta",),
    sc.EVENT_SESSION_END: ("magenta",),
}
_FULL_TIME: Final = 23  # 2026-11-24 10:56:01.123
_SHORT_TIME: Final = 12  # 10:56:01.123
_WIDE_ENOUGH_FOR_DATES: Final = 120

Cell = tuple[str, tuple[str, ...]]  # text, style names


def time_cell(ts: int, *, utc: bool, short: bool) -> str:
    text = format_local(ts, utc=utc)
    return text[-_SHORT_TIME:] if short else text


def short_times(width: int | None) -> bool:
    """Times without the date on a narrow terminal."""
    return width is not None and width < _WIDE_ENOUGH_FOR_DATES


class Grid:
    """Rows of cells laid out by ``layout.fit`` (see there)."""

    def __init__(self, columns: Sequence[Column], style: Style, width: int | None) -> None:
        self.columns = columns
        self.style = style
        self.width = width
        self.widths: list[int | None] = [c.max or c.min for c in columns]
        self.highlight: Callable[[str], str] | None = None  # applied to the flexible column

    def fit(self, rows: Sequence[Sequence[Cell]], *, fixed: bool = False) -> None:
        """Widths for ``rows`` (``fixed``: from the columns' limits alone, for a stream)."""
        natural = [
            (c.max or c.min) if fixed else max((len(r[i][0]) for r in rows), default=0)
            for i, c in enumerate(self.columns)
        ]
        if fixed:
            natural = [
                n if not c.flex else 10_000 for n, c in zip(natural, self.columns, strict=True)
            ]
        self.widths = fit(self.columns, natural, self.width)

    def header(self) -> str:
        cells = [
            fit_cell(c.name, w, right=c.right)
            for c, w in zip(self.columns, self.widths, strict=True)
            if w is not None
        ]
        return self.style(SEP.join(cells).rstrip(), "bold")

    def line(self, row: Sequence[Cell], *, whole: tuple[str, ...] = ()) -> str:
        cells: list[str] = []
        for c, w, (text, names) in zip(self.columns, self.widths, row, strict=True):
            if w is None:
                continue
            cell = fit_cell(text, w, right=c.right)
            if c.flex:
                cell = cell.rstrip()
                if self.highlight is not None:
                    cell = self.highlight(cell)
            cells.append(self.style(cell, *names) if names and not whole else cell)
        text = SEP.join(cells).rstrip()
        return self.style(text, *whole) if whole else text


_LOG_COLUMNS: Final = (
    Column("ID", 2, drop=6),
    Column("TIME", _SHORT_TIME, _FULL_TIME),
    Column("SERVER", 6, 16, drop=1),
    Column("SESSION", 8, 8, drop=5),
    Column("EVENT", 8, 14, drop=3),
    Column("DIR", 3, 3, drop=7),
    Column("RPC", 3, 8, drop=2),
    Column("METHOD / TOOL", 12, 48),
    Column("LATENCY", 8, 9, right=True, drop=4),
    Column("STATUS", 5, 14),
    Column("BODY", 10, flex=True),
)


class LogTable:
    """The records table: columns fitted to the rows and the terminal (``--wide``: no
    limit); a followed stream gets fixed widths, so it stays aligned."""

    def __init__(self, stream: IO[str], *, colour: bool, utc: bool, wide: bool = False) -> None:
        self.stream = stream
        self.style = Style(colour)
        self.utc = utc
        width = None if wide else terminal_width()
        self.short = short_times(width)
        self.grid = Grid(_LOG_COLUMNS, self.style, width)

    def cells(self, e: LogEntry) -> list[Cell]:
        event = (e.event or "").removeprefix("helmet.")
        direction = {sc.DIRECTION_C2S: "->", sc.DIRECTION_S2C: "<-"}.get(e.direction or "", "")
        what = " ".join(x for x in (e.method, e.target) if x)
        slow = ("yellow",) if (e.latency_ms or 0) >= 1000 else ()
        return [
            (str(e.id), ("dim",)),
            (time_cell(e.ts, utc=self.utc, short=self.short), ("dim",)),
            (printable(e.service or ""), ()),
            ((e.session_id or "")[:8], ()),
            (event, _EVENT_STYLE.get(e.event or "", ())),
            (direction, ()),
            (printable(e.request_id or ""), ()),
            (printable(what), ()),
            (format_duration_ms(e.latency_ms), slow),
            (codec.status_text(e), ("red", "bold") if e.is_error else ()),
            (printable(codec.body_preview(e)), ()),
        ]

    def write(self, entries: Sequence[LogEntry], *, header: bool, fixed: bool) -> None:
        rows = [self.cells(e) for e in entries]
        if header or not fixed:
            self.grid.fit(rows, fixed=fixed)
        if header:
            self.stream.write(self.grid.header() + "\n")
        st = self.style
        for e, row in zip(entries, rows, strict=True):
            line = self.grid.line(row)
            if st.enabled and e.session_id:  # colour the session cell by session
                short = (e.session_id or "")[:8]
                line = line.replace(short, st.session(short, e.session_id), 1)
            self.stream.write(line + "\n")


class LogWriter:
    """Writes log entries as a table or in a machine format (``store.export``); the same
    object serves --follow."""

    def __init__(
        self,
        fmt: str,
        stream: IO[str],
        *,
        colour: bool,
        utc: bool,
        follow: bool = False,
        wide: bool = False,
        highlight: Callable[[str], str] | None = None,
    ) -> None:
        self.fmt = fmt
        self.stream = stream
        self.follow = follow
        self.table = LogTable(stream, colour=colour, utc=utc, wide=wide) if fmt == "table" else None
        if self.table is not None and colour:
            self.table.grid.highlight = highlight
        self.pending: list[LogEntry] = []  # a table's rows, laid out together at the end
        self.export = None if fmt == "table" else ExportWriter(fmt, stream)
        self._rows = 0

    @property
    def count(self) -> int:
        return self.export.count if self.export is not None else self._rows

    def begin(self) -> None:
        if self.table is not None:
            if self.follow:
                self.table.write([], header=True, fixed=True)
        elif self.export is not None:
            self.export.begin()

    def write(self, entries: Iterable[LogEntry]) -> None:
        if self.export is not None:
            self.export.write(entries)
            return
        for e in entries:
            self.pending.append(e)
            self._rows += 1
        if self.table is not None and self.follow and self.pending:
            self.table.write(self.pending, header=False, fixed=True)
            self.pending.clear()

    def end(self) -> None:
        if self.table is not None and not self.follow:
            self.table.write(self.pending, header=True, fixed=False)
            self.pending.clear()
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
