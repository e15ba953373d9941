"""The composition root of the interceptors: which run, in which order, built from the options.

Order matters: ``before_forward`` runs in list order, so a policy that answers a call itself
(a block) comes before telemetry, which then sees the call and its answer as they were. Every
proxy command (``run``, later ``serve`` and ``connect``) builds its interceptors here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from helmet_otel.config import ProxyOptions
from helmet_otel.core.interceptor import InterceptorFactory
from helmet_otel.policy.interceptor import PolicyFactory, PolicySource, load_source
from helmet_otel.policy.rules import Policy
from helmet_otel.redaction import RedactionConfig, Redactor
from helmet_otel.telemetry.feed import TelemetryFeed, WorkerUnavailable


def _warn(text: str) -> None:
    os.write(2, f"helmet-otel: {text}\n".encode())


@dataclass
class Interceptors:
    """The process's interceptor factories, in order, and what must be closed at the end."""

    factories: list[InterceptorFactory] = field(default_factory=list[InterceptorFactory])
    feed: TelemetryFeed | None = None

    async def close(self, reason: str = "session ended") -> None:
        if self.feed is not None:
            await self.feed.close(reason)

    def kill(self) -> None:
        """Last resort after `close` (the telemetry worker overstayed its deadline)."""
        if self.feed is not None:
            self.feed.kill()


def build_interceptors(
    options: ProxyOptions, env: Mapping[str, str], *, service_name: str, transport: str
) -> Interceptors:
    built = Interceptors()
    if options.telemetry_enabled(env):
        try:
            built.feed = TelemetryFeed(options, env, service_name=service_name, transport=transport)
        except WorkerUnavailable as exc:  # the traffic runs anyway, without telemetry
            os.write(
                2,
                f"helmet-otel: telemetry is off: its worker process could not be started "
                f"({exc}); MCP traffic is not affected\n".encode(),
            )
    # the detectors run when something records what they find
    policy = build_policy(options, service_name, monitor=built.feed is not None)
    if policy is not None:  # first: telemetry must see a blocked call as blocked
        built.factories.append(policy)
    if built.feed is not None:
        built.factories.append(built.feed)
    return built


def build_policy(options: ProxyOptions, server: str, *, monitor: bool) -> PolicyFactory | None:
    """The policy interceptor's factory: with ``--policy``, or (without one, the detectors
    only, with the default settings) whenever telemetry records what they find."""
    from helmet_otel.cli.pinning import open_pins

    if options.policy is None and not monitor:
        return None
    if options.policy is not None:
        source = load_source(options.policy, server, _warn)  # checked when options resolved
    else:
        source = PolicySource(Policy(), server, _warn)
    redactor = Redactor(RedactionConfig(extra=tuple(options.redact)))
    pins = open_pins(options.store, options.store_enabled)
    return PolicyFactory(source, pins, monitor=monitor, redactor=redactor)
