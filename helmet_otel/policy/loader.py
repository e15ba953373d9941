"""Read a TOML policy file into a `Policy`, or report every problem with its line.

The format (the README's "Policies" section documents it)::

    mode = "enforce"            # or "shadow"
    default = "allow"           # or "deny"
    error_code = -32001         # the JSON-RPC code of a block

    [[rule]]
    id = "no-passwords"
    tools = ["echo"]            # globs on the tool name
    action = "deny"             # allow | deny | log
    priority = 10               # higher first; ties in file order
    when = [{ arg = "message", regex = "(?i)password" }]

    [detectors]
    on_tool_drift = "log"       # or "block"

``tomllib`` gives no positions, so the lines of keys are found in the text: the ``[[rule]]``
header that opens the rule, then the key's own line inside it.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from helmet_otel.policy.rates import RateSettings
from helmet_otel.policy.rules import (
    ACTIONS,
    ANNOTATION_UNSAFE,
    MODES,
    Action,
    Condition,
    Detectors,
    Mode,
    Policy,
    Rule,
)
from helmet_otel.policy.volumes import VolumeSettings

_TOP_KEYS = ("mode", "default", "error_code", "rule", "detectors")
_RULE_KEYS = (
    "id", "tools", "methods", "servers", "clients", "when", "annotations", "action", "priority",
    "hide", "description",
)  # fmt: skip
_CHECK_KEYS = ("equals", "regex", "max_length", "min", "max", "in")
_CONDITION_KEYS = ("arg", "not", *_CHECK_KEYS)
_DETECTOR_SWITCHES = (
    "policy_block", "tool_drift", "new_tool", "sensitive_argument", "unusual_rate", "data_volume",
)  # fmt: skip
# [detectors] thresholds: key -> (setting, whole number?, lowest accepted value)
_THRESHOLDS: dict[str, tuple[str, bool, float]] = {
    "rate_window": ("window", False, 0.001),
    "rate_min_calls": ("min_calls", True, 1),
    "rate_factor": ("factor", False, 1),
    "burst_window": ("burst_window", False, 0.001),
    "burst_tools": ("burst_tools", True, 0),
    "volume_factor": ("factor", False, 1),
    "volume_min_bytes": ("min_bytes", True, 0),
    "volume_min_samples": ("min_samples", True, 1),
}
_DETECTOR_KEYS = (*_DETECTOR_SWITCHES, "on_tool_drift", *_THRESHOLDS, "allowed_resources")
_HEADER = re.compile(r"^\s*\[")
_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    message: str


class PolicyError(Exception):
    """The file cannot be used; ``problems`` says where and why (``FILE:LINE: message``)."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{path}:{p.line}: {p.message}" for p in problems))
        self.path = path
        self.problems = problems

    def lines(self) -> list[str]:
        return [f"{self.path}:{p.line}: {p.message}" for p in self.problems]


class _Lines:
    """Where things are in the file's text."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.rule_headers = [i for i, t in enumerate(self.lines) if _RULE_HEADER.match(t)]
        self.first_header = next(
            (i for i, t in enumerate(self.lines) if _HEADER.match(t)), len(self.lines)
        )

    def _find(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(start, min(end, len(self.lines))):
            if pattern.match(self.lines[i]):
                return i + 1
        return None

    def top(self, key: str) -> int:
        return self._find(key, 0, self.first_header) or 1

    def rule(self, index: int, key: str | None = None) -> int:
        if index >= len(self.rule_headers):  # rules written some other way (an inline array)
            return self._find("rule", 0, len(self.lines)) or 1
        start = self.rule_headers[index]
        if key is None:
            return start + 1
        following = [i for i in range(start + 1, len(self.lines)) if _HEADER.match(self.lines[i])]
        end = following[0] if following else len(self.lines)
        return self._find(key, start + 1, end) or start + 1

    def table(self, name: str, key: str) -> int:
        header = re.compile(rf"^\s*\[\s*{re.escape(name)}\s*\]")
        for i, text in enumerate(self.lines):
            if header.match(text):
                following = [
                    j for j in range(i + 1, len(self.lines)) if _HEADER.match(self.lines[j])
                ]
                end = following[0] if following else len(self.lines)
                return self._find(key, i + 1, end) or i + 1
        return 1


def glob_pattern(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    """One compiled pattern for a list of globs (case-sensitive, ``*``, ``?``, ``[...]``)."""
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


def load_policy(path: str | Path) -> Policy:
    """The policy in ``path``. Raises `PolicyError` listing every problem found."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(name, [Problem(0, f"cannot read the policy file: {reason}")]) from None
    return parse_policy(text, name)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE.search(str(exc))
        message = _TOML_LINE.sub("", str(exc)).strip()
        raise PolicyError(
            source, [Problem(int(found.group(1)) if found else 1, f"invalid TOML: {message}")]
        ) from None
    return _Reader(text, source).policy(data)


class _Reader:
    def __init__(self, text: str, source: str) -> None:
        self.where = _Lines(text)
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(line, message))

    def policy(self, data: dict[str, Any]) -> Policy:
        where = self.where
        for key in data:
            if key not in _TOP_KEYS:
                self.problem(where.top(key), f"unknown key {key!r} (expected one of "
                             f"{', '.join(_TOP_KEYS)})")  # fmt: skip
        mode = data.get("mode", "enforce")
        if mode not in MODES:
            self.problem(where.top("mode"), f"mode: expected 'enforce' or 'shadow', not {mode!r}")
        default = data.get("default", "allow")
        if default not in ACTIONS:
            self.problem(where.top("default"),
                         f"default: expected 'allow', 'deny' or 'log', not {default!r}")  # fmt: skip
        error_code = data.get("error_code", -32001)
        if type(error_code) is not int:
            self.problem(where.top("error_code"), "error_code: expected a whole number")
            error_code = -32001
        raw_rules: object = data.get("rule", [])
        rules: list[Rule] = []
        if not isinstance(raw_rules, list):
            self.problem(where.top("rule"), "rule: expected [[rule]] tables")
        else:
            seen: dict[str, int] = {}
            for index, raw in enumerate(cast(list[object], raw_rules)):
                rule = self.rule(index, raw)
                if rule is None:
                    continue
                if rule.id in seen:
                    self.problem(where.rule(index, "id"),
                                 f"rule id {rule.id!r} is used twice (first on line "
                                 f"{seen[rule.id]})")  # fmt: skip
                seen.setdefault(rule.id, rule.line)
                rules.append(rule)
        detectors = self.detectors(data.get("detectors", {}))
        if self.problems:
            self.problems.sort(key=lambda p: p.line)
            raise PolicyError(self.source, self.problems)
        rules.sort(key=lambda r: (-r.priority, r.index))
        return Policy(
            cast(Mode, mode), cast(Action, default), error_code, tuple(rules), detectors,
            self.source,
        )  # fmt: skip

    def _globs(self, index: int, rule: dict[str, Any], key: str) -> tuple[str, ...]:
        value: object = rule.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v for v in cast(list[object], value)
        ):
            self.problem(self.where.rule(index, key),
                         f"{key}: expected a list of non-empty glob strings")  # fmt: skip
            return ()
        return tuple(cast(list[str], value))

    def rule(self, index: int, raw: object) -> Rule | None:
        where = self.where
        line = where.rule(index)
        if not isinstance(raw, dict):
            self.problem(line, "a rule must be a table")
            return None
        fields = cast(dict[str, Any], raw)
        for key in fields:
            if key not in _RULE_KEYS:
                self.problem(where.rule(index, key), f"unknown rule key {key!r} (expected one "
                             f"of {', '.join(_RULE_KEYS)})")  # fmt: skip
        rule_id = fields.get("id")
        if not isinstance(rule_id, str) or not rule_id.strip():
            self.problem(where.rule(index, "id") if "id" in fields else line,
                         "a rule needs an id (a non-empty string)")  # fmt: skip
            rule_id = f"#{index + 1}"
        action = fields.get("action")
        if action not in ACTIONS:
            self.problem(where.rule(index, "action") if "action" in fields else line,
                         f"rule {rule_id}: action: expected 'allow', 'deny' or 'log', "
                         f"not {action!r}")  # fmt: skip
            action = "allow"
        priority = fields.get("priority", 0)
        if type(priority) is not int:
            self.problem(where.rule(index, "priority"),
                         f"rule {rule_id}: priority: expected a whole number")  # fmt: skip
            priority = 0
        hide = fields.get("hide", False)
        if type(hide) is not bool:
            self.problem(where.rule(index, "hide"), f"rule {rule_id}: hide: expected true or false")
            hide = False
        elif hide and action != "deny":
            self.problem(where.rule(index, "hide"), f"rule {rule_id}: hide needs action 'deny'")
        tools = self._globs(index, fields, "tools")
        methods = self._globs(index, fields, "methods")
        servers = self._globs(index, fields, "servers")
        clients = self._globs(index, fields, "clients")
        if not tools and not methods:
            self.problem(line, f"rule {rule_id}: give 'tools' (tool name globs), 'methods' "
                         "(method globs) or both")  # fmt: skip
        when = self.conditions(index, rule_id, fields.get("when", []))
        annotations = self.annotations(index, rule_id, fields.get("annotations", {}))
        if hide and when:
            self.problem(where.rule(index, "hide"),
                         f"rule {rule_id}: hide cannot depend on arguments ('when')")  # fmt: skip
        return Rule(
            rule_id, action, priority, index, line, tools, methods, servers,
            clients, when, annotations, hide, glob_pattern(tools), glob_pattern(methods),
            glob_pattern(servers), glob_pattern(clients),
        )  # fmt: skip

    def annotations(self, index: int, rule_id: str, raw: object) -> tuple[tuple[str, bool], ...]:
        line = self.where.rule(index, "annotations")
        if not isinstance(raw, dict):
            self.problem(line, f"rule {rule_id}: annotations: expected a table such as "
                         "{ destructiveHint = true }")  # fmt: skip
            return ()
        found: list[tuple[str, bool]] = []
        for hint, value in cast(dict[str, object], raw).items():
            if hint not in ANNOTATION_UNSAFE:
                self.problem(line, f"rule {rule_id}: annotations: unknown hint {hint!r} "
                             f"(expected one of {', '.join(ANNOTATION_UNSAFE)})")  # fmt: skip
            elif type(value) is not bool:
                self.problem(line, f"rule {rule_id}: annotations: {hint}: expected true or false")
            else:
                found.append((hint, value))
        return tuple(found)

    def conditions(self, index: int, rule_id: str, raw: object) -> tuple[Condition, ...]:
        line = self.where.rule(index, "when")
        if isinstance(raw, dict):
            raw = [cast(object, raw)]
        if not isinstance(raw, list):
            self.problem(line, f"rule {rule_id}: when: expected a list of conditions such as "
                         '[{ arg = "path", regex = "^/tmp/" }]')  # fmt: skip
            return ()
        found: list[Condition] = []
        for item in cast(list[object], raw):
            condition = self.condition(line, rule_id, item)
            if condition is not None:
                found.append(condition)
        return tuple(found)

    def condition(self, line: int, rule_id: str, raw: object) -> Condition | None:
        prefix = f"rule {rule_id}: when:"
        if not isinstance(raw, dict):
            self.problem(line, f"{prefix} a condition must be a table")
            return None
        fields = cast(dict[str, Any], raw)
        for key in fields:
            if key not in _CONDITION_KEYS:
                self.problem(line, f"{prefix} unknown key {key!r} (expected one of "
                             f"{', '.join(_CONDITION_KEYS)})")  # fmt: skip
        arg = fields.get("arg")
        if not isinstance(arg, str) or not arg or any(not part for part in arg.split(".")):
            self.problem(line, f"{prefix} arg: expected a dotted path into the arguments "
                         "such as 'path' or 'options.mode'")  # fmt: skip
            return None
        negate = fields.get("not", False)
        if type(negate) is not bool:
            self.problem(line, f"{prefix} not: expected true or false")
            negate = False
        checks: list[Callable[[object], bool]] = []
        for key in _CHECK_KEYS:
            if key in fields:
                check = self.check(line, prefix, key, fields[key])
                if check is not None:
                    checks.append(check)
        if not any(key in fields for key in _CHECK_KEYS):
            self.problem(line, f"{prefix} {arg}: give one of {', '.join(_CHECK_KEYS)}")
            return None
        return Condition(tuple(arg.split(".")), tuple(checks), negate, line)

    def check(
        self, line: int, prefix: str, key: str, value: object
    ) -> Callable[[object], bool] | None:
        if key == "equals":
            expected = value
            return lambda v: v == expected and type(v) is type(expected)
        if key == "in":
            if not isinstance(value, list):
                self.problem(line, f"{prefix} in: expected a list of values")
                return None
            options = cast(list[object], value)
            return lambda v: any(v == o and type(v) is type(o) for o in options)
        if key == "regex":
            if not isinstance(value, str):
                self.problem(line, f"{prefix} regex: expected a string")
                return None
            try:
                search = re.compile(value).search
            except re.error as exc:
                self.problem(line, f"{prefix} regex: {exc}")
                return None
            return lambda v: isinstance(v, str) and search(v) is not None
        if key == "max_length":
            if type(value) is not int or value < 0:
                self.problem(line, f"{prefix} max_length: expected a whole number >= 0")
                return None
            limit = value
            return lambda v: isinstance(v, str | list | dict) and len(cast(Any, v)) <= limit
        # min / max
        if type(value) not in (int, float):
            self.problem(line, f"{prefix} {key}: expected a number")
            return None
        bound = cast(float, value)
        if key == "min":
            return lambda v: type(v) in (int, float) and cast(float, v) >= bound
        return lambda v: type(v) in (int, float) and cast(float, v) <= bound

    def detectors(self, raw: object) -> Detectors:
        if not isinstance(raw, dict):
            self.problem(self.where.top("detectors"), "detectors: expected a table")
            return Detectors()
        fields = cast(dict[str, Any], raw)
        values: dict[str, Any] = {}
        rate: dict[str, Any] = {}
        volume: dict[str, Any] = {}
        for key, value in fields.items():
            line = self.where.table("detectors", key)
            if key in _THRESHOLDS:
                name, whole, lowest = _THRESHOLDS[key]
                number_types = (int,) if whole else (int, float)
                if type(value) not in number_types or value < lowest:
                    kind = "a whole number" if whole else "a number"
                    self.problem(line, f"detectors: {key}: expected {kind} >= {lowest:g}")
                else:
                    (rate if key.startswith(("rate_", "burst_")) else volume)[name] = value
            elif key == "allowed_resources":
                globs = [value] if isinstance(value, str) else value
                if not isinstance(globs, list) or not all(
                    isinstance(g, str) and g for g in cast(list[object], globs)
                ):
                    self.problem(line, "detectors: allowed_resources: expected a list of "
                                 "non-empty URI glob strings")  # fmt: skip
                else:
                    allowed = tuple(cast(list[str], globs))
                    values["allowed_resources"] = allowed
                    values["resource_pattern"] = glob_pattern(allowed)
            elif key in _DETECTOR_SWITCHES:
                if type(value) is not bool:
                    self.problem(line, f"detectors: {key}: expected true or false")
                else:
                    values[key] = value
            elif key == "on_tool_drift":
                if value not in ("log", "block"):
                    self.problem(line, f"detectors: on_tool_drift: expected 'log' or 'block', "
                                 f"not {value!r}")  # fmt: skip
                else:
                    values[key] = value
            else:
                self.problem(line, f"detectors: unknown key {key!r} (expected one of "
                             f"{', '.join(_DETECTOR_KEYS)})")  # fmt: skip
        return Detectors(**values, rate=RateSettings(**rate), volume=VolumeSettings(**volume))
