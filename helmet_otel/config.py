"""The proxy's effective configuration, shared by the CLI and the telemetry feed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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

    @property
    def store_enabled(self) -> bool:
        return not self.no_store

    def telemetry_enabled(self, env: Mapping[str, str]) -> bool:
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return self.store_enabled
        return self.store_enabled or self.otlp_configured(env)

    def otlp_configured(self, env: Mapping[str, str]) -> bool:
        if self.otlp_endpoint:
            return True
        keys = (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        )
        return any(env.get(key) for key in keys)
