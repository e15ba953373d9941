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
from collections.abc import Iterator
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


def _strings(value: object, path: str, depth: int) -> Iterator[tuple[str, str, str]]:
    """(path, key, text) of the string values in ``value``, depth first, bounded."""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        yield path, path.rsplit(".", 1)[-1], value
    elif isinstance(value, dict):
        for key, item in cast(dict[str, object], value).items():
            yield from _strings(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(cast(list[object], value)):
            yield from _strings(item, f"{path}[{i}]", depth + 1)


def sensitive_arguments(arguments: dict[str, Any], redactor: Redactor) -> list[tuple[str, str]]:
    """(severity, reason) for each sensitive value found; empty for ordinary arguments."""
    found: list[tuple[str, str]] = []
    for count, (path, key, text) in enumerate(_strings(arguments, "", 0)):
        if count >= MAX_VALUES:
            break
        text = text[:MAX_SCANNED_CHARS]
        if _SENSITIVE_PATH.search(text):
            found.append(("high", f"argument {path!r} names a sensitive path"))
        elif _TRAVERSAL.search(text):
            found.append(("medium", f"argument {path!r} has a path traversal ('../')"))
        if _COMMAND_KEY.match(key.split("[", 1)[0]) and _SHELL_META.search(text):
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
