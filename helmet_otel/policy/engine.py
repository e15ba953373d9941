"""Evaluate a request against a policy: pure and deterministic.

The rules are tried in the policy's order (priority, then file order) and the first whose
every part matches decides: method and tool name globs, server and client name globs, the
argument conditions, the tool's annotations. The name part depends only on (method, tool,
client) for a given server, so the engine keeps, per such key, the rules whose names match
(a bounded cache); a call then costs a dict lookup and the conditions of those rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from helmet_otel.core.verdicts import Decision
from helmet_otel.policy.rules import ANNOTATION_UNSAFE, Condition, Policy, Rule

TOOLS_CALL = "tools/call"
_CACHE_LIMIT = 4096


def _names_match(rule: Rule, method: str, tool: str | None, client: str) -> bool:
    if rule.method_pattern is not None:
        if rule.method_pattern.match(method) is None:
            return False
    elif method != TOOLS_CALL:
        return False
    if rule.tool_pattern is not None and (tool is None or rule.tool_pattern.match(tool) is None):
        return False
    return rule.client_pattern is None or rule.client_pattern.match(client) is not None


def annotation_value(annotations: Mapping[str, object] | None, hint: str) -> bool:
    """The hint as the server declared it; unknown (or not a boolean) counts as unsafe."""
    value = annotations.get(hint) if annotations is not None else None
    return value if type(value) is bool else ANNOTATION_UNSAFE[hint]


Hints = tuple[bool, ...]  # the value of each hint of `HINTS`, as `annotation_value` reads it
HINTS = tuple(ANNOTATION_UNSAFE)
UNSAFE: Hints = tuple(ANNOTATION_UNSAFE[h] for h in HINTS)
ArgumentTest = Callable[[Mapping[str, object]], bool]


def hints_of(annotations: Mapping[str, object] | None) -> Hints:
    """A tool's annotations as `Hints` (unknown counts as unsafe)."""
    if annotations is None:
        return UNSAFE
    return tuple(annotation_value(annotations, hint) for hint in HINTS)


def _condition_test(condition: Condition) -> ArgumentTest:
    """One condition as one call: the common case (a top-level argument, one check) is fused
    into a single closure; anything else goes through `Condition.holds`."""
    if len(condition.path) == 1 and len(condition.checks) == 1 and not condition.negate:
        key = condition.path[0]
        check = condition.checks[0]
        return lambda arguments: (v := arguments.get(key, _MISSING)) is not _MISSING and check(v)
    return condition.holds  # type: ignore[return-value]


def _rule_test(rule: Rule) -> ArgumentTest | None:
    tests = [_condition_test(c) for c in rule.when]
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    return lambda arguments: all(test(arguments) for test in tests)


_MISSING: Final = object()


class Engine:
    def __init__(self, policy: Policy, server: str) -> None:
        self.policy = policy
        self.server = server
        self.shadow = policy.mode == "shadow"
        # the server's name is fixed for the process: rules for other servers drop out here
        self.rules = tuple(
            r for r in policy.rules
            if r.server_pattern is None or r.server_pattern.match(server) is not None
        )  # fmt: skip
        self._tests = {r.id: _rule_test(r) for r in self.rules}
        self.methods = frozenset(  # a quick "does any rule look at this method?" for non-tools
            m for r in self.rules for m in r.methods if not any(c in m for c in "*?[")
        )
        self.method_globs = any(any(c in m for c in "*?[") for r in self.rules for m in r.methods)
        self.hiding = tuple(r for r in self.rules if r.hide)
        # (method, tool, client, hints) -> the rules that may decide, each with its argument
        # test and its decision (a decision depends on nothing else)
        self._candidates: dict[
            tuple[str, str | None, str, Hints], tuple[tuple[ArgumentTest | None, Decision], ...]
        ] = {}

    def polices(self, method: str) -> bool:
        """Whether any rule may decide on ``method`` (tools/call always is)."""
        return method == TOOLS_CALL or method in self.methods or self.method_globs

    def _rules_for(
        self, method: str, tool: str | None, client: str, hints: Hints
    ) -> tuple[tuple[ArgumentTest | None, Decision], ...]:
        key = (method, tool, client, hints)
        found = self._candidates.get(key)
        if found is None:
            if len(self._candidates) >= _CACHE_LIMIT:
                self._candidates.clear()
            found = tuple(
                (self._tests[r.id], Decision(r.id, r.action, self.shadow, method, tool))
                for r in self.rules
                if _names_match(r, method, tool, client) and _hints_match(r, hints)
            )
            self._candidates[key] = found
        return found

    def decide(
        self, method: str, tool: str | None, arguments: Mapping[str, object], client: str = "",
        annotations: Mapping[str, object] | None = None, *, hints: Hints | None = None,
    ) -> Decision | None:  # fmt: skip
        """The decision on one request; None when nothing but the default allow applies.
        ``hints``: the tool's annotations already read by `hints_of` (else ``annotations``)."""
        if hints is None:
            hints = hints_of(annotations)
        for test, decision in self._rules_for(method, tool, client, hints):
            if test is None or test(arguments):
                return decision
        policy = self.policy
        if method == TOOLS_CALL and policy.default != "allow":
            return Decision("default", policy.default, self.shadow, method, tool)
        return None

    def hidden(
        self, tool: str, client: str, annotations: Mapping[str, object] | None
    ) -> str | None:
        """The id of the ``hide`` rule that removes ``tool`` from tools/list answers, if any
        (only rules that would deny every call of it, and never in shadow mode)."""
        if not self.hiding or self.shadow:
            return None
        hints = hints_of(annotations)
        for rule in self.rules:
            if not (_names_match(rule, TOOLS_CALL, tool, client) and _hints_match(rule, hints)):
                continue
            if rule.when:  # decides some calls only: hide only past rules that deny them
                if rule.action != "deny":
                    return None
                continue
            return rule.id if rule.hide else None  # the rule that decides every call
        return None


def _hints_match(rule: Rule, hints: Hints) -> bool:
    return all(hints[HINTS.index(hint)] is value for hint, value in rule.annotations)
