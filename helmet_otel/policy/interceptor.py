"""The policy interceptor: enforces the rules and runs the detectors on the relay's loop.

`PolicyFactory` is the process-wide part (the policy file and its reloads, the server's pinned
tool definitions); each session's `PolicyInterceptor` keeps what that session's server listed.
What they conclude goes on the envelope (`core.verdicts`): telemetry hands it over, never shed.

- A tools/call (or a request of a method some rule names) is decided by the engine; a ``deny``
  in enforce mode sets ``env.reply`` to the policy error and the call never reaches the server.
- A tools/list answer teaches the session each tool's annotations, is checked against the
  pinned definitions (tool drift), and loses the tools a ``hide`` rule denies: then the answer
  is re-serialised (compact JSON, the other keys and tools as they were, the line ending kept).
- The policy file is checked for changes at most every `CHECK_INTERVAL` seconds, on the next
  request: a change takes effect within a second; a file that no longer loads keeps the last
  good rules and is reported once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, cast

import orjson

from helmet_otel.core.envelope import C2S, Envelope
from helmet_otel.core.interceptor import BaseInterceptor
from helmet_otel.core.session import Session
from helmet_otel.core.verdicts import DECISION, DENY, FINDINGS, POLICY_LOADED, Decision, Finding
from helmet_otel.policy.detectors import ArgumentScanner, changed_fields, tool_definition
from helmet_otel.policy.engine import TOOLS_CALL, UNSAFE, Engine, Hints, hints_of
from helmet_otel.policy.loader import PolicyError, load_policy
from helmet_otel.policy.pins import REMOVED, Pin, PinStore
from helmet_otel.policy.rates import RateBaselines, SessionRates
from helmet_otel.policy.rules import DENIED_MESSAGE, DENIED_REQUEST_MESSAGE, Policy
from helmet_otel.policy.volumes import VolumeBaselines
from helmet_otel.protocol.message import (
    BATCH,
    ERROR,
    REQUEST,
    RESPONSE,
    Kind,
    error_response,
    id_key,
)
from helmet_otel.redaction import Redactor

CHECK_INTERVAL: Final = 0.25  # seconds between checks of the policy file
APPROVAL_CHECK_INTERVAL: Final = 0.5  # a drifted, blocked tool looks for its approval
DRIFT_RULE: Final = "tool_drift"
UNUSUAL_RATE: Final = "unusual_rate"
DATA_VOLUME: Final = "data_volume"
BATCH_RULE: Final = "batch"
_NO_ARGUMENTS: Final[dict[str, Any]] = {}  # (never written to: the detectors only read)


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class PolicySource:
    """The policy in force, reloaded when its file changes."""

    def __init__(
        self, policy: Policy, server: str, warn: Callable[[str], None], path: str | None = None
    ) -> None:
        self.path = path
        self.server = server
        self.engine = Engine(policy, server)
        self.generation = 0  # bumped by every load
        self.checked = time.monotonic()
        self._warn = warn
        self._signature = _signature(path) if path else None

    @property
    def policy(self) -> Policy:
        return self.engine.policy

    def refresh(self, now: float) -> bool:
        """Reload the file if it changed; whether a new policy is now in force."""
        self.checked = now
        if self.path is None:
            return False
        signature = _signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature  # a bad file is reported once, until it changes again
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            self._warn(f"policy file {exc}; keeping the last good rules")
            return False
        self.engine = Engine(policy, self.server)
        self.generation += 1
        self._warn(f"policy file {self.path} reloaded ({len(policy.rules)} rules, {policy.mode})")
        return True


class PolicyFactory:
    """The process-wide part: the policy, the server's pins, what was called before."""

    def __init__(
        self, source: PolicySource, pins: PinStore, *, monitor: bool,
        redactor: Redactor | None = None,
    ) -> None:  # fmt: skip
        self.source = source
        self.server = source.server
        self.store = pins
        self.monitor = monitor  # run the detectors (someone records their findings)
        self.redactor = redactor or Redactor()
        self.scanner = ArgumentScanner(self.redactor)  # sensitive_argument
        self.pins: dict[str, Pin] = pins.pins(self.server)
        self.called: set[str] = {t for t, p in self.pins.items() if p.called_ns is not None}
        self.drifted: dict[str, str] = {}  # tool -> its current definition, not approved
        self._approval_checked: dict[str, float] = {}
        self.rates = RateBaselines()  # unusual_rate: each tool's usual calls per session
        self.volumes = VolumeBaselines()  # data_volume: each tool's usual response size

    def for_session(self, session: Session) -> PolicyInterceptor:
        return PolicyInterceptor(self, session)

    # -- tool drift ---------------------------------------------------------------------------
    def listed(self, tool: str, definition: str) -> list[str] | None:
        """A tool as a server listed it: None when it matches its pin (or is pinned now),
        else the fields that changed."""
        pin = self.pins.get(tool)
        if pin is None:
            self.pins[tool] = Pin(self.server, tool, definition, time.time_ns())
            self.store.pin(self.server, tool, definition)
            return None
        if pin.definition == definition:
            self.drifted.pop(tool, None)
            return None
        if self.drifted.get(tool) != definition:
            self.drifted[tool] = definition
            self.store.drifted(self.server, tool, definition)
        return changed_fields(pin.definition, definition)

    def removed(self, tool: str) -> bool:
        """A tool the server no longer lists: whether that is drift (it is pinned, and the
        removal is not approved)."""
        if tool not in self.pins:
            return False
        if self.drifted.get(tool) != REMOVED:
            self.drifted[tool] = REMOVED
            self.store.drifted(self.server, tool, REMOVED)
            return True
        return not self._approved(tool)

    def _approved(self, tool: str) -> bool:
        """Whether the tool's drift was approved since (the store is asked again at most every
        `APPROVAL_CHECK_INTERVAL`); an approved pin replaces, or a removal forgets, the old."""
        now = time.monotonic()
        if now - self._approval_checked.get(tool, 0.0) < APPROVAL_CHECK_INTERVAL:
            return False
        self._approval_checked[tool] = now
        pin = self.store.pins(self.server).get(tool)
        current = self.drifted.get(tool)
        if current == REMOVED and pin is None:
            self.pins.pop(tool, None)
        elif pin is not None and pin.definition == current:
            self.pins[tool] = pin
        else:
            return False
        del self.drifted[tool]
        return True

    def drift_block(self, tool: str, shadow: bool) -> Decision | None:
        """The decision on a call of a drifted tool while drift blocks: denied until approved."""
        if self._approved(tool):
            return None
        return Decision(DRIFT_RULE, DENY, shadow, TOOLS_CALL, tool)

    def first_call(self, tool: str) -> bool:
        """Record a call; whether it is the tool's first on this server."""
        if tool in self.called:
            return False
        self.called.add(tool)
        if tool in self.pins:
            self.store.called(self.server, tool)
        return True


class PolicyInterceptor(BaseInterceptor):
    # client requests and batches; answers (tools/list's, and the sizes of tools' answers)
    before_kinds = frozenset((Kind.REQUEST, Kind.BATCH, Kind.RESPONSE, Kind.ERROR))
    after_kinds = frozenset((Kind.RESPONSE, Kind.ERROR))

    def __init__(self, factory: PolicyFactory, session: Session) -> None:
        self.factory = factory
        self.session = session
        self.source = factory.source
        self._generation = -1  # the policy generation this session's telemetry has seen
        self._lists: set[tuple[bool, object]] = set()  # ids of tools/list requests in flight
        self.hints: dict[str, Hints] = {}  # each tool's annotations, from tools/list
        self._drift_reported: set[str] = set()
        self._listed: set[str] = set()  # names in the pages of the listing under way
        self._history = bool(factory.called)  # the server had calls before this session
        self.rates = SessionRates(factory.rates)

    # -- the hook --------------------------------------------------------------------------
    def before_forward(self, env: Envelope) -> None:
        msg = env.msg
        kind = msg.kind
        if env.direction is C2S:
            if kind is REQUEST:
                source = self.source
                now = time.monotonic()
                if now - source.checked >= CHECK_INTERVAL:
                    source.refresh(now)
                if self._generation != source.generation and source.path is not None:
                    self._generation = source.generation
                    env.annotations[POLICY_LOADED] = source.policy.summary()
                if msg.method == TOOLS_CALL:
                    self._call(env, now)
                else:
                    self._request(env, now)
            elif kind is BATCH:
                self._batch(env)
        elif self._lists and (kind is RESPONSE or kind is ERROR) and msg.id is not None:
            key = id_key(msg.id)
            if key in self._lists:
                self._lists.discard(key)
                if kind is RESPONSE:
                    self._tools_listed(env)

    def _client(self) -> str:
        info = self.session.client_info
        name = info.get("name") if info is not None else None
        return name if isinstance(name, str) else ""

    def _request(self, env: Envelope, now: float) -> None:
        """A request other than tools/call (`_call`)."""
        source = self.source
        msg = env.msg
        method = msg.method
        assert method is not None
        if method == "tools/list":
            assert msg.id is not None
            self._lists.add(id_key(msg.id))
        elif source.engine.polices(method):
            params = msg.params
            name = params.get("name") if params is not None else None
            decision = source.engine.decide(
                method, name if isinstance(name, str) else None, params or {}, self._client()
            )
            if decision is not None:
                self._decided(env, decision)
        if method == "resources/read" and self.factory.monitor:
            self._resource_read(env, source.policy)

    def _decided(self, env: Envelope, decision: Decision) -> None:
        env.annotations[DECISION] = decision
        policy = self.source.policy
        if decision.action == DENY and self.factory.monitor and policy.detectors.policy_block:
            shadow = " (shadow mode: not enforced)" if decision.shadow else ""
            target = decision.tool if decision.tool is not None else decision.method
            block = Finding(
                "policy_block", "low" if decision.shadow else "medium", decision.rule_id,
                decision.tool, f"{target!r} denied by policy {decision.rule_id!r}{shadow}",
            )  # fmt: skip
            findings = env.annotations.get(FINDINGS)
            if isinstance(findings, list):
                cast(list[Finding], findings).insert(0, block)
            else:
                env.annotations[FINDINGS] = [block]
        if decision.blocks:
            message = DENIED_MESSAGE if decision.method == TOOLS_CALL else DENIED_REQUEST_MESSAGE
            env.reply = error_response(
                env.msg.id, self.source.policy.error_code, message,
                {"type": "policy_block", "policy_id": decision.rule_id},
            )  # fmt: skip

    def _call(self, env: Envelope, now: float) -> None:
        # (runs for every tools/call: written for speed, no `cast` of a subscripted type,
        # which builds a generic alias per call, and the engine is not asked when no rule
        # and no default could decide)
        factory = self.factory
        engine = self.source.engine
        policy = engine.policy
        payload = env.msg.payload
        params: object = payload.get("params") if payload is not None else None
        tool: str | None = None
        arguments: dict[str, Any] = _NO_ARGUMENTS
        if type(params) is dict:
            fields: dict[str, object] = params  # pyright: ignore[reportUnknownVariableType]
            name = fields.get("name")
            if type(name) is str:
                tool = name
            raw_arguments = fields.get("arguments")
            if type(raw_arguments) is dict:
                arguments = raw_arguments  # pyright: ignore[reportUnknownVariableType]
        decision = None
        detectors = policy.detectors
        if (
            tool is not None and factory.drifted and tool in factory.drifted
            and detectors.on_tool_drift == "block"
        ):  # fmt: skip
            decision = factory.drift_block(tool, policy.mode == "shadow")
        if decision is None and (engine.rules or policy.default != "allow"):
            decision = engine.decide(
                TOOLS_CALL, tool, arguments, self._client(),
                hints=self.hints.get(tool, UNSAFE) if tool is not None else UNSAFE,
            )  # fmt: skip
        if decision is not None:
            self._decided(env, decision)
        if tool is None or not factory.monitor:
            return
        findings: list[Finding] | None = None
        # (`first_call` records the call whether or not the detector is on)
        if (
            tool not in factory.called and factory.first_call(tool) and self._history
            and detectors.new_tool
        ):  # fmt: skip
            findings = [Finding(
                "new_tool", "low", "new_tool", tool,
                f"tool {tool!r} is called for the first time on this server",
            )]  # fmt: skip
        if arguments and detectors.sensitive_argument:
            found = factory.scanner.scan(arguments)
            if found:
                findings = findings or []
                for severity, reason in found:
                    findings.append(
                        Finding("sensitive_argument", severity, "sensitive_argument", tool, reason)
                    )
        if detectors.unusual_rate:
            found_rates = self.rates.call(tool, now, detectors.rate)
            if found_rates:
                findings = findings or []
                for about, message in found_rates:
                    findings.append(Finding(UNUSUAL_RATE, "medium", UNUSUAL_RATE, about, message))
        if findings:
            _add_findings(env, findings)

    def _resource_read(self, env: Envelope, policy: Policy) -> None:
        """data_volume: a resource read outside the URIs the policy allows."""
        detectors = policy.detectors
        pattern = detectors.resource_pattern
        params = env.msg.params
        uri = params.get("uri") if params is not None else None
        if pattern is None or not detectors.data_volume or not isinstance(uri, str):
            return
        if pattern.fullmatch(uri) is None:
            shown = uri if len(uri) <= 200 else uri[:200] + "..."
            _add_findings(env, [Finding(
                DATA_VOLUME, "medium", DATA_VOLUME, None,
                f"resource {shown!r} read outside the allowed URIs",
            )])  # fmt: skip

    def after_forward(self, env: Envelope) -> None:
        """data_volume: a tool's answer far larger than its usual size."""
        request = env.request
        if (
            request is None
            or request.method != TOOLS_CALL
            or request.name is None
            or env.direction is C2S
            or env.proxy
            or not self.factory.monitor
        ):
            return
        detectors = self.source.engine.policy.detectors
        if detectors.data_volume:
            volumes = self.factory.volumes
            message = volumes.response(request.name, len(env.raw), detectors.volume)
            if message is not None:
                _add_findings(
                    env, [Finding(DATA_VOLUME, "medium", DATA_VOLUME, request.name, message)]
                )

    def session_ended(self, session: Session) -> None:
        self.rates.close()

    def _batch(self, env: Envelope) -> None:
        """A JSON-RPC batch (an array; older protocol revisions): denied as a whole when the
        policy would deny any request in it, since its parts cannot be answered apart."""
        try:
            items: object = json.loads(env.raw)
        except ValueError:
            return
        if not isinstance(items, list):
            return
        engine = self.source.engine
        denied: Decision | None = None
        ids: list[object] = []
        for item in cast(list[object], items):
            if not isinstance(item, dict) or "method" not in item or "id" not in item:
                continue
            fields = cast(dict[str, Any], item)
            ids.append(fields["id"])
            method = fields["method"]
            if not isinstance(method, str) or not engine.polices(method):
                continue
            params = fields.get("params")
            params = cast(dict[str, Any], params) if isinstance(params, dict) else {}
            name = params.get("name")
            arguments = params.get("arguments") if method == TOOLS_CALL else params
            decision = engine.decide(
                method, name if isinstance(name, str) else None,
                cast(dict[str, Any], arguments) if isinstance(arguments, dict) else {},
                self._client(),
            )  # fmt: skip
            if decision is not None and decision.blocks and denied is None:
                denied = decision
        if denied is None:
            return
        env.annotations[DECISION] = denied
        data = {"type": "policy_block", "policy_id": denied.rule_id}
        code = self.source.policy.error_code
        answers = [
            json.loads(error_response(i, code, DENIED_MESSAGE, data))  # pyright: ignore[reportArgumentType]
            for i in ids
        ]
        env.reply = json.dumps(answers, separators=(",", ":")).encode() + b"\n"

    # -- tools/list answers --------------------------------------------------------------------
    def _tools_listed(self, env: Envelope) -> None:
        result = env.msg.result
        tools: object = result.get("tools") if result is not None else None
        if not isinstance(tools, list):
            return
        factory = self.factory
        policy = self.source.policy
        engine = self.source.engine
        client = self._client()
        watch_drift = factory.monitor or policy.detectors.on_tool_drift == "block"
        findings: list[Finding] = []
        hidden: list[int] = []
        for index, item in enumerate(cast(list[object], tools)):
            if not isinstance(item, dict):
                continue
            tool = cast(dict[str, Any], item)
            name = tool.get("name")
            if not isinstance(name, str):
                continue
            annotations: object = tool.get("annotations")
            known = cast(dict[str, object], annotations) if isinstance(annotations, dict) else None
            self.hints[name] = hints_of(known)
            if watch_drift and policy.detectors.tool_drift:
                changed = factory.listed(name, tool_definition(tool))
                if changed is not None and name not in self._drift_reported:
                    self._drift_reported.add(name)
                    blocked = policy.detectors.on_tool_drift == "block"
                    findings.append(Finding(
                        "tool_drift", "high", DRIFT_RULE, name,
                        f"tool {name!r} changed since it was pinned ({', '.join(changed)})"
                        + ("; calls are denied until it is approved" if blocked else ""),
                    ))  # fmt: skip
            if engine.hiding and engine.hidden(name, client, known) is not None:
                hidden.append(index)
            self._listed.add(name)
        if watch_drift and policy.detectors.tool_drift and result is not None:
            findings += self._removals(result, policy.detectors.on_tool_drift == "block")
        if findings and factory.monitor:
            env.annotations[FINDINGS] = findings
        if hidden:
            self._hide(env, cast(list[object], tools), hidden)

    def _removals(self, result: dict[str, Any], blocked: bool) -> list[Finding]:
        """Pinned tools missing from a complete listing (its last page: no ``nextCursor``;
        the names of the pages before it count): a removal is drift too."""
        if result.get("nextCursor") is not None:
            return []
        listed, self._listed = self._listed, set()
        findings: list[Finding] = []
        for name in sorted(set(self.factory.pins) - listed):
            if name not in self._drift_reported and self.factory.removed(name):
                self._drift_reported.add(name)
                findings.append(Finding(
                    "tool_drift", "high", DRIFT_RULE, name,
                    f"tool {name!r} was removed since it was pinned (no longer in tools/list)"
                    + ("; calls are denied until it is approved" if blocked else ""),
                ))  # fmt: skip
        return findings

    def _hide(self, env: Envelope, tools: list[object], hidden: list[int]) -> None:
        payload = env.msg.payload
        assert payload is not None
        result = dict(cast(dict[str, Any], payload["result"]))
        dropped = set(hidden)
        result["tools"] = [t for i, t in enumerate(tools) if i not in dropped]
        answer = dict(payload)
        answer["result"] = result
        raw = env.raw
        ending = raw[len(raw.rstrip(b"\r\n")) :]
        try:
            env.wire = orjson.dumps(answer) + ending
        except TypeError:  # an integer beyond 64 bits: the stdlib writes any integer exactly
            env.wire = json.dumps(answer, separators=(",", ":")).encode() + ending


def _add_findings(env: Envelope, findings: list[Finding]) -> None:
    existing = env.annotations.get(FINDINGS)
    if isinstance(existing, list):
        cast(list[Finding], existing).extend(findings)
    else:
        env.annotations[FINDINGS] = findings


def load_source(path: str, server: str, warn: Callable[[str], None]) -> PolicySource:
    """The policy in ``path`` (raises `PolicyError`)."""
    return PolicySource(load_policy(path), server, warn, str(Path(path)))
