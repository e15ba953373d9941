"""The machine formats of a log export (json, ndjson, csv), written the same way everywhere:
``helmet-otel logs --format`` and the web viewer's download give the same bytes for the same
records. The record schemas are ``codec``'s; this module only frames them."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO, Final

import orjson

from helmet_otel.store import codec
from helmet_otel.store.query import LogEntry

__all__ = ["CONTENT_TYPES", "FORMATS", "ExportWriter"]

FORMATS: Final = ("json", "ndjson", "csv")
CONTENT_TYPES: Final = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
}


class ExportWriter:
    """Writes log entries as ``json`` (one array), ``ndjson`` or ``csv`` (with a header row):
    ``begin()``, any number of ``write(entries)``, ``end()``."""

    def __init__(self, fmt: str, stream: IO[str]) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r} (choose from: {', '.join(FORMATS)})")
        self.fmt = fmt
        self.stream = stream
        self.count = 0
        self._csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None

    def begin(self) -> None:
        if self._csv is not None:
            self._csv.writerow(codec.CSV_FIELDS)
        elif self.fmt == "json":
            self.stream.write("[")

    def write(self, entries: Iterable[LogEntry]) -> None:
        stream = self.stream
        for e in entries:
            if self._csv is not None:
                self._csv.writerow(codec.csv_row(e))
            elif self.fmt == "ndjson":
                stream.write(codec.ndjson_line(e).decode("utf-8"))
            else:
                stream.write(
                    ("\n" if self.count == 0 else ",\n")
                    + orjson.dumps(codec.export_record(e)).decode("utf-8")
                )
            self.count += 1

    def end(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
