"""Tables that fit the terminal: column widths from the content, the terminal's width and
each column's limits.

A column has a minimum, a preferred maximum and a drop rank. Widths start at the content's
width, capped at the maximum (``--wide``: no caps, no terminal limit). When the row is wider
than the terminal, the flexible column (BODY) gives way first, down to its minimum; then
columns are dropped, highest drop rank first; then the widest columns shrink towards their
minimums (rank 0 never goes). Dropping comes before shrinking: a whole column beats
several cut ones. Nothing is wrapped: a cell wider than its column ends in
``…``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["SEP", "Column", "fit", "fit_cell", "terminal_width"]

SEP: Final = "  "
_DEFAULT_WIDTH: Final = 80


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    min: int
    max: int | None = None  # None: as wide as the content
    right: bool = False
    flex: bool = False  # takes what is left of the line (BODY)
    drop: int = 0  # dropped first when even the minimums do not fit (0: never)


def terminal_width() -> int:
    """``COLUMNS``, else the terminal's width, else 80 (a pipe: nothing to fit, but a file
    read later in a terminal is read in one)."""
    return shutil.get_terminal_size((_DEFAULT_WIDTH, 24)).columns


def fit(columns: Sequence[Column], natural: Sequence[int], width: int | None) -> list[int | None]:
    """Each column's width (None: dropped). ``width`` None: no limit (``--wide``)."""
    widths: list[int | None] = []
    for col, n in zip(columns, natural, strict=True):
        w = max(n, len(col.name)) if n else len(col.name)
        if width is not None and col.max is not None:
            w = min(w, max(col.max, col.min))
        widths.append(w)
    if width is None:
        return widths

    def total() -> int:
        shown = [w for w in widths if w is not None]
        return sum(shown) + len(SEP) * (len(shown) - 1)

    # 1. the flexible column gives way, 2. columns are dropped, 3. the widest others shrink
    for i, col in enumerate(columns):
        w = widths[i]
        if col.flex and w is not None and total() > width:
            widths[i] = max(col.min, w - (total() - width))
    for _rank, i in sorted(
        ((col.drop, i) for i, col in enumerate(columns) if col.drop), reverse=True
    ):
        if total() <= width:
            break
        widths[i] = None
    while total() > width:
        shrinkable = [
            i
            for i, col in enumerate(columns)
            if not col.flex and (w := widths[i]) is not None and w > col.min
        ]
        if not shrinkable:
            break
        i = max(shrinkable, key=lambda j: (widths[j] or 0) - columns[j].min)
        w = widths[i] or 0
        widths[i] = max(columns[i].min, w - (total() - width))
    # what the dropped columns freed goes back to the flexible column, up to its content
    for i, col in enumerate(columns):
        w = widths[i]
        if col.flex and w is not None and total() < width:
            wanted = max(natural[i], len(col.name))
            widths[i] = min(wanted, w + (width - total()))
    return widths


def fit_cell(text: str, width: int, *, right: bool = False) -> str:
    """``text`` padded or cut (with ``…``) to ``width``."""
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 0 else ""
    return text.rjust(width) if right else text.ljust(width)
