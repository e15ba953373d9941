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
_SCANNED: Final = (dict, list, str)
_command_keys: dict[str, bool] = {}  # argument key -> whether it names a command


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


def _command_key(key: str) -> bool:
    try:
        return _command_keys[key]
    except KeyError:
        pass
    found = _COMMAND_KEY.match(key.split("[", 1)[0]) is not None
    if len(_command_keys) >= _KEY_CACHE_MAX:
        _command_keys.clear()
    _command_keys[key] = found
    return found


def sensitive_arguments(arguments: dict[str, Any], redactor: Redactor) -> list[tuple[str, str]]:
    """(severity, reason) for each sensitive value found; empty for ordinary arguments."""
    found: list[tuple[str, str]] = []
    values: list[tuple[str, str]] = []
    _strings(arguments, "", 0, values)
    for path, text in values:
        text = text[:MAX_SCANNED_CHARS]
        key = path.rsplit(".", 1)[-1]
        dotted = "." in text
        if (dotted or "id_" in text or text.startswith(_ROOTS)) and _SENSITIVE_PATH.search(text):
            found.append(("high", f"argument {path!r} names a sensitive path"))
        elif dotted and ".." in text and _TRAVERSAL.search(text):
            found.append(("medium", f"argument {path!r} has a path traversal ('../')"))
        if _command_key(key) and _SHELL_META.search(text):
            found.append(("medium", f"argument {path!r} has shell metacharacters"))
        if text and (redactor.is_secret_key(key) or redactor.scrub_text(text) != text):
            found.append(("high", f"argument {path!r} carries a secret"))
    return found


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
