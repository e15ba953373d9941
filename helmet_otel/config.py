"""The proxy's effective configuration, shared by the CLI and the telemetry feed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal


class ConfigError(Exception):
    """Bad configuration: reported as one line, exit status 2."""


@dataclass
class ProxyOptions:
    name: str | None = None
    store: str | None = None
    no_store: bool = False
    otlp_endpoint: str | None = None
    otlp_protocol: str | None = None
    capture: str = "full"
    redact: list[str] = field(default_factory=list[str])
    max_body: int = 65536
    log_level: str = "warning"
    metrics_interval: float = 60.0
    config: str | None = None
    pass_otel_env: bool = False
    propagate: bool = True
    grace: float = 2.0
    trace_max_requests: int = 1000
    cwd: str | None = None
    flush_timeout: float = 5.0
    worker_niceness: int = 19
    worker_sched: Literal["idle", "normal"] = "idle"
    store_max_bytes: int | None = None
    store_max_age: float | None = None

    @property
    def store_enabled(self) -> bool:
        return not self.no_store

    def telemetry_enabled(self, env: Mapping[str, str]) -> bool:
        return self.store_enabled or bool(otlp_signals(env, self.otlp_endpoint))


OTLP_SIGNALS = ("traces", "logs", "metrics")


def otlp_signals(env: Mapping[str, str], endpoint: str | None = None) -> set[str]:
    """Signals with an OTLP destination: all with ``--otlp-endpoint`` or the generic endpoint,
    else those with a per-signal endpoint. OTEL_SDK_DISABLED=true turns OTLP off, but an
    explicit ``--otlp-endpoint`` (a flag) wins over it (the environment)."""
    if endpoint:
        return set(OTLP_SIGNALS)
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return set()
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return set(OTLP_SIGNALS)
    return {s for s in OTLP_SIGNALS if env.get(f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT")}
