"""A session's server stderr as records: lines that belong together become one record.

A line joins the record being gathered when it comes within `GAP_NS` of the previous line and

- it is indented (a stack's frames, a wrapped message, an indented block), or
- the record is a Python traceback and the line is its next part: the exception line that ends
  it, or the "During handling of the above exception..." / "The above exception was the direct
  cause..." and "Traceback (most recent call last):" lines of a chained one, or
- it came in the same read as the previous line (a banner written in one burst), unless it
  announces its own level (``INFO ...``, ``level=warn``): log lines stay records of their own.

A record is written when a line does not join it, when nothing joined it for `GAP_NS`
(`StderrGroup.due`), or when the session ends. Blank lines are dropped, as before. The
record's severity is the highest its lines announce; a traceback is at least ERROR.
"""

from __future__ import annotations

import re
from typing import Final

from opentelemetry._logs import SeverityNumber

from helmet_otel.telemetry.severity import has_level, stderr_severity

__all__ = ["GAP_NS", "StderrGroup"]

GAP_NS: Final = 100_000_000  # 100 ms
MAX_LINES: Final = 500  # a record never grows past this (nor past MAX_CHARS)
MAX_CHARS: Final = 64 * 1024
_TRACEBACK: Final = "Traceback (most recent call last):"
_CHAINED: Final = (
    "During handling of the above exception",
    "The above exception was the direct cause",
    _TRACEBACK,
)
_EXCEPTION_LINE: Final = re.compile(r"[A-Za-z_][\w.]*(?::|$)")


class StderrGroup:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.first_ts = 0
        self.last_ts = 0
        self._chars = 0
        self._traceback = False  # the record is a traceback still waiting for its last line

    def add(self, ts: int, text: str) -> tuple[int, str, SeverityNumber] | None:
        """Take a line; returns the record it completed (first ts, body, severity), if any."""
        done = None
        if self.lines and not self._joins(ts, text):
            done = self.take()
        if not self.lines:
            self.first_ts = ts
            self._traceback = text.startswith(_TRACEBACK)
        elif text.startswith(_CHAINED):
            self._traceback = True  # a chained traceback goes on
        elif self._traceback and not text[:1].isspace():
            self._traceback = False  # the exception line: the traceback is complete
        self.lines.append(text)
        self._chars += len(text) + 1
        self.last_ts = ts
        return done

    def _joins(self, ts: int, text: str) -> bool:
        if ts - self.last_ts > GAP_NS or len(self.lines) >= MAX_LINES or self._chars > MAX_CHARS:
            return False
        if text[:1].isspace():
            return True
        if self._traceback:
            return True  # the exception line, or a chained traceback's next part
        if self.lines[0].startswith(_TRACEBACK) and text.startswith(_CHAINED):
            return True
        return ts == self.last_ts and not has_level(text)

    def due(self, now_ns: int) -> bool:
        """Nothing joined the record for `GAP_NS`: write it."""
        return bool(self.lines) and now_ns - self.last_ts > GAP_NS

    def take(self) -> tuple[int, str, SeverityNumber] | None:
        """The record gathered so far (and start afresh); None when there is none."""
        if not self.lines:
            return None
        lines, self.lines, self._chars = self.lines, [], 0
        value = max(stderr_severity(line).value for line in lines)
        if lines[0].startswith(_TRACEBACK):
            value = max(value, SeverityNumber.ERROR.value)
        severity = SeverityNumber(value)
        self._traceback = False
        return self.first_ts, "\n".join(lines), severity
