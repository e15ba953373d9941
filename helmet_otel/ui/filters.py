"""The log view's filters as they travel in a URL query, and what they select in the store.

The names are those of ``helmet-otel logs`` (``session``, ``event``, ``method``, ``tool``,
``direction``, ``since``, ``until``, ``errors``) plus ``server`` and ``q`` (``--grep``). A list
is comma-separated or the parameter repeated; ``since``/``until`` take what ``--since`` takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from helmet_otel import semconv as sc
from helmet_otel.store.query import LogFilter, fts_query
from helmet_otel.store.timefmt import parse_time

__all__ = ["EVENTS", "LogQuery", "Params", "parse_params"]

EVENTS: Final = (*sc.ALL_EVENTS, sc.EVENT_SECURITY)
_SHORT: Final = {e.removeprefix("helmet."): e for e in EVENTS}
_DIRECTIONS: Final = {
    sc.DIRECTION_C2S: sc.DIRECTION_C2S,
    "c2s": sc.DIRECTION_C2S,
    sc.DIRECTION_S2C: sc.DIRECTION_S2C,
    "s2c": sc.DIRECTION_S2C,
}


class Params:
    """A URL query: the last value of a parameter, or every value split at commas."""

    def __init__(self, query: str) -> None:
        self._values: Mapping[str, list[str]] = parse_qs(query, keep_blank_values=False)

    def one(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[-1].strip() or None if values else None

    def many(self, name: str) -> tuple[str, ...]:
        items = [p.strip() for v in self._values.get(name, ()) for p in v.split(",")]
        return tuple(dict.fromkeys(i for i in items if i))

    def number(self, name: str, default: int, low: int, high: int) -> int:
        text = self.one(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{name}: expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{name}: expected {low} to {high}, got {value}")
        return value


@dataclass(frozen=True, slots=True)
class LogQuery:
    filter: LogFilter
    servers: tuple[str, ...]


def _events(names: Sequence[str]) -> tuple[str, ...]:
    events: list[str] = []
    for name in names:
        full = name if name in EVENTS else _SHORT.get(name)
        if full is None:
            raise ValueError(f"event: unknown event {name!r} (choose from: {', '.join(_SHORT)})")
        events.append(full)
    return tuple(events)


def _when(params: Params, name: str, now_ns: int | None) -> int | None:
    text = params.one(name)
    if text is None:
        return None
    try:
        return parse_time(text, now_ns=now_ns)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def parse_params(params: Params, *, now_ns: int | None = None) -> LogQuery:
    """The filters in ``params``; ``ValueError`` (a message for users) for a bad one."""
    direction_text = params.one("direction")
    direction = None
    if direction_text is not None:
        direction = _DIRECTIONS.get(direction_text.lower())
        if direction is None:
            raise ValueError(
                f"direction: expected client->server or server->client, got {direction_text!r}"
            )
    grep = params.one("q")
    if grep is not None and fts_query(grep) is None:
        raise ValueError(f"q: {grep!r} has no words to search for")
    flt = LogFilter(
        session_prefixes=params.many("session"),
        events=_events(params.many("event")),
        methods=params.many("method"),
        tools=params.many("tool"),
        direction=direction,
        since_ns=_when(params, "since", now_ns),
        until_ns=_when(params, "until", now_ns),
        grep=grep,
        errors=params.one("errors") in ("1", "true", "on", "yes"),
    )
    return LogQuery(flt, params.many("server"))
