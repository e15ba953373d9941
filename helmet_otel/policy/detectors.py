"""Pure security checks the interceptor runs on the relay's loop.

- `sensitive_arguments`: what in a tools/call's arguments looks like data that should not
  leave toward a server: path traversal (``../``), well-known sensitive paths, shell
  metacharacters in command-like fields, a secret the redaction rules recognise.
- `tool_definition` / `changed_fields`: the pinned form of a tool (name, description,
  input schema, annotations) and what changed between two of them (tool drift).

Thresholds: at most `MAX_VALUES` string values and `MAX_DEPTH` levels of an arguments object
are looked at (the rest is not scanned); a finding names the argument's path and the kind of
match, never the value.
"""

from __future__ import annotations

import re
from typing import Any, Final, cast

import orjson

from helmet_otel.redaction import Redactor

MAX_VALUES: Final = 64
MAX_DEPTH: Final = 6
MAX_SCANNED_CHARS: Final = 4096  # of one value

_TRAVERSAL = re.compile(r"(?:^|[/\\])\.\.(?:[/\\]|$)")
_SENSITIVE_PATH = re.compile(
    r"(?:^|[/\\~])(?:\.ssh(?:[/\\]|$)|\.aws[/\\]credentials|\.env(?:\.[\w-]+)?$|\.netrc$"
    r"|\.git-credentials$|\.kube[/\\]config$|\.gnupg(?:[/\\]|$)|id_rsa|id_ed25519)"
    r"|^/etc/(?:shadow|gshadow|sudoers)(?:$|[/\\])|^/proc/(?:self|\d+)/environ$"
)
_COMMAND_KEY = re.compile(r"(?i)^(?:cmd|command|commands|shell|script|exec|run|bash|sh|argv|args)$")
_SHELL_META = re.compile(r"[;|`]|&&|\$\(|\$\{|>\s*\S|<\s*\S|\n")

TOOL_FIELDS: Final = ("name", "description", "inputSchema", "annotations")


# Necessary conditions, tested before the patterns (a substring test costs a few dozen
# nanoseconds, a search of these alternations a microsecond or more): every alternative of
# `_SENSITIVE_PATH` holds a "." or "id_", or starts the value with one of `_ROOTS`; a
# `_TRAVERSAL` match holds "..".
_ROOTS: Final = ("/etc/", "/proc/")
_KEY_CACHE_MAX: Final = 4096
CLEAN_TEXT_MAX: Final = 256  # characters of a text remembered as clean, at most
_CLEAN_CACHE_MAX: Final = 4096  # texts remembered as clean (then forgotten all at once)
_PATH, _TRAVERSAL_FOUND, _SECRET = 1, 2, 4  # what `ArgumentScanner._text_bits` finds
_PLAIN: Final = (False, False)  # a key that names no command and whose values are not secret
_SCANNED: Final = (dict, list, str)


def _strings(value: object, path: str, depth: int, out: list[tuple[str, str]]) -> None:
    """Append (path, text) for the string values in ``value``, depth first, until `MAX_VALUES`
    are there and at most `MAX_DEPTH` levels down. (A function that appends, not a generator:
    this runs for every tools/call, and a generator per value costs more than the checks.)"""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        out.append((path, value))
    elif isinstance(value, dict):
        deeper = depth + 1
        members: dict[str, object] = value  # pyright: ignore[reportUnknownVariableType]
        for key, item in members.items():
            if len(out) >= MAX_VALUES:
                return
            if type(item) is str:
                if deeper <= MAX_DEPTH:
                    out.append((f"{path}.{key}" if path else str(key), item))
            elif isinstance(item, _SCANNED):
                _strings(item, f"{path}.{key}" if path else str(key), deeper, out)  # pyright: ignore[reportUnknownArgumentType]
    elif isinstance(value, list):
        items: list[object] = value  # pyright: ignore[reportUnknownVariableType]
        for i, item in enumerate(items):
            if len(out) >= MAX_VALUES:
                return
            if isinstance(item, _SCANNED):
                _strings(item, f"{path}[{i}]", depth + 1, out)  # pyright: ignore[reportUnknownArgumentType]


class ArgumentScanner:
    """`sensitive_arguments` for one redactor, with what it learns kept: of each argument key,
    whether it names a command and whether the redactor hides its values (one dict lookup
    instead of two matches); the short texts in which nothing was found (a set lookup instead
    of the patterns and the scrubber). Arguments whose values are all strings at the top level
    (the common call) are read in place, without collecting their paths first."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._keys: dict[str, tuple[bool, bool]] = {}  # key -> (names a command, is secret)
        self._clean: set[str] = set()  # short texts none of the text checks fires on

    def _key(self, key: str) -> tuple[bool, bool]:
        """(names a command, its values are secret) for the last part of a value's path."""
        command = _COMMAND_KEY.match(key.split("[", 1)[0]) is not None
        secret = self._redactor.is_secret_key(key)
        facts = (command, secret) if command or secret else _PLAIN
        if len(self._keys) >= _KEY_CACHE_MAX:
            self._keys.clear()
        self._keys[key] = facts
        return facts

    def scan(self, arguments: dict[str, Any]) -> list[tuple[str, str]]:
        """(severity, reason) for each sensitive value found; empty for ordinary arguments."""
        found: list[tuple[str, str]] = []
        if len(arguments) <= MAX_VALUES:
            # strings at the top (each key is its own path); a clean text under a plain key
            # (the usual argument) costs two lookups
            clean, keys = self._clean, self._keys
            for key, text in arguments.items():
                if type(text) is not str:
                    found.clear()  # (the general way below, from the start)
                    break
                if text in clean and keys.get(key) is _PLAIN:
                    continue
                self._check(key, key if "." not in key else key.rsplit(".", 1)[-1], text, found)
            else:
                return found
        values: list[tuple[str, str]] = []
        _strings(arguments, "", 0, values)
        for path, text in values:
            self._check(path, path.rsplit(".", 1)[-1], text, found)
        return found

    def _check(self, path: str, key: str, text: str, found: list[tuple[str, str]]) -> None:
        facts = self._keys.get(key)
        if facts is None:
            facts = self._key(key)
        if len(text) > MAX_SCANNED_CHARS:
            text = text[:MAX_SCANNED_CHARS]
        bits = 0 if text in self._clean else self._text_bits(text)
        if bits & _PATH:
            found.append(("high", f"argument {path!r} names a sensitive path"))
        elif bits & _TRAVERSAL_FOUND:
            found.append(("medium", f"argument {path!r} has a path traversal ('../')"))
        if facts[0] and _SHELL_META.search(text):
            found.append(("medium", f"argument {path!r} has shell metacharacters"))
        if text and (facts[1] or bits & _SECRET):
            found.append(("high", f"argument {path!r} carries a secret"))

    def _text_bits(self, text: str) -> int:
        """What the checks of a text itself find (`_PATH` or `_TRAVERSAL_FOUND`, and
        `_SECRET`). A short text they find nothing in is remembered as clean: an ordinary value
        that repeats (the same path, the same query) then costs a set lookup. Texts with a
        finding are never kept."""
        bits = 0
        if "." in text:
            if _SENSITIVE_PATH.search(text):
                bits = _PATH
            elif ".." in text and _TRAVERSAL.search(text):
                bits = _TRAVERSAL_FOUND
        elif ("id_" in text or text.startswith(_ROOTS)) and _SENSITIVE_PATH.search(text):
            bits = _PATH
        if self._redactor.scrub_text(text) != text:
            bits |= _SECRET
        if not bits and len(text) <= CLEAN_TEXT_MAX:
            clean = self._clean
            if len(clean) >= _CLEAN_CACHE_MAX:
                clean.clear()
            clean.add(text)
        return bits


def sensitive_arguments(arguments: dict[str, Any], redactor: Redactor) -> list[tuple[str, str]]:
    """(severity, reason) for each sensitive value found; empty for ordinary arguments. (The
    interceptor keeps an `ArgumentScanner` per redactor; this makes one per call.)"""
    return ArgumentScanner(redactor).scan(arguments)


def tool_definition(tool: dict[str, Any]) -> str:
    """The pinned form of a tool: its fields of `TOOL_FIELDS`, as canonical JSON."""
    pinned = {key: tool[key] for key in TOOL_FIELDS if key in tool}
    return orjson.dumps(pinned, option=orjson.OPT_SORT_KEYS).decode()


def changed_fields(pinned: str, current: str) -> list[str]:
    """Which of `TOOL_FIELDS` differ between two pinned forms."""
    try:
        before = cast(dict[str, object], orjson.loads(pinned))
        after = cast(dict[str, object], orjson.loads(current))
    except orjson.JSONDecodeError:
        return ["definition"]
    return [key for key in TOOL_FIELDS if before.get(key) != after.get(key)]
