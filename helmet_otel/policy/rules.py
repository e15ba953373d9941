"""The policy's data model: a file-level mode and default, ordered rules, detector settings.

Evaluation order (`Policy.rules` is already in it): higher ``priority`` first, ties in file
order. The first rule that matches decides; when none does, ``default`` decides (tools/call
only: other methods are allowed unless a rule names them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from helmet_otel.policy.rates import RateSettings
from helmet_otel.policy.volumes import VolumeSettings

Mode = Literal["enforce", "shadow"]
Action = Literal["allow", "deny", "log"]
DriftAction = Literal["log", "block"]

ACTIONS: Final = ("allow", "deny", "log")
MODES: Final = ("enforce", "shadow")
DEFAULT_ERROR_CODE: Final = -32001
DENIED_MESSAGE: Final = "Tool access denied by policy"
DENIED_REQUEST_MESSAGE: Final = "Request denied by policy"

# Tool annotations and the value that counts when a server does not declare one: the unsafe
# one (these are also the MCP specification's defaults).
ANNOTATION_UNSAFE: Final = {
    "destructiveHint": True,
    "readOnlyHint": False,
    "openWorldHint": True,
    "idempotentHint": False,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """A test on one value in ``arguments`` (``path``: the dotted path's keys).

    The test holds when the value is there and satisfies every check given; ``negate`` turns
    the result around (a missing value then holds)."""

    path: tuple[str, ...]
    checks: tuple[Callable[[object], bool], ...]
    negate: bool = False
    line: int = 0

    def holds(self, arguments: dict[str, object]) -> bool:
        value: object = arguments
        for key in self.path:
            value = _member(value, key)
            if value is _MISSING:
                return self.negate
        for check in self.checks:
            if not check(value):
                return self.negate
        return not self.negate


_MISSING: Final = object()


def _member(container: object, key: str) -> object:
    """``container[key]``, or `_MISSING` when it is not an object or has no such key."""
    if type(container) is not dict:
        return _MISSING
    return cast(dict[str, object], container).get(key, _MISSING)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    action: Action
    priority: int
    index: int  # position in the file
    line: int
    tools: tuple[str, ...] = ()  # globs on params.name (tools/call)
    methods: tuple[str, ...] = ()  # globs on the method; empty: tools/call
    servers: tuple[str, ...] = ()  # globs on the server name; empty: any
    clients: tuple[str, ...] = ()  # globs on clientInfo.name; empty: any
    when: tuple[Condition, ...] = ()
    annotations: tuple[tuple[str, bool], ...] = ()  # (hint, value) as the server declared
    hide: bool = False
    tool_pattern: re.Pattern[str] | None = None
    method_pattern: re.Pattern[str] | None = None
    server_pattern: re.Pattern[str] | None = None
    client_pattern: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Detectors:
    """Which detectors run, and their settings (the ``[detectors]`` table)."""

    policy_block: bool = True
    tool_drift: bool = True
    new_tool: bool = True
    sensitive_argument: bool = True
    unusual_rate: bool = True
    data_volume: bool = True
    on_tool_drift: DriftAction = "log"
    rate: RateSettings = field(default_factory=RateSettings)
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    allowed_resources: tuple[str, ...] = ()  # globs; a resources/read outside them: data_volume
    resource_pattern: re.Pattern[str] | None = None

    def summary(self) -> dict[str, object]:
        rate, volume = self.rate, self.volume
        return {
            "policy_block": self.policy_block,
            "tool_drift": self.tool_drift,
            "new_tool": self.new_tool,
            "sensitive_argument": self.sensitive_argument,
            "unusual_rate": self.unusual_rate,
            "data_volume": self.data_volume,
            "on_tool_drift": self.on_tool_drift,
            "rate_window": rate.window,
            "rate_min_calls": rate.min_calls,
            "rate_factor": rate.factor,
            "burst_window": rate.burst_window,
            "burst_tools": rate.burst_tools,
            "volume_factor": volume.factor,
            "volume_min_bytes": volume.min_bytes,
            "volume_min_samples": volume.min_samples,
            "allowed_resources": list(self.allowed_resources),
        }


@dataclass(frozen=True, slots=True)
class Policy:
    mode: Mode = "enforce"
    default: Action = "allow"
    error_code: int = DEFAULT_ERROR_CODE
    rules: tuple[Rule, ...] = ()  # in evaluation order
    detectors: Detectors = field(default_factory=Detectors)
    source: str = ""  # the file it came from

    def summary(self) -> dict[str, object]:
        """What a ``helmet.configuration`` record says of it."""
        return {
            "policy_file": self.source,
            "mode": self.mode,
            "default": self.default,
            "error_code": self.error_code,
            "rules": [{"id": r.id, "action": r.action, "priority": r.priority} for r in self.rules],
            "detectors": self.detectors.summary(),
        }
