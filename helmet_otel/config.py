"""The proxy's effective configuration, shared by the CLI and the telemetry feed.

`ProxyOptions` holds typed, validated values: `helmet_otel.cli.options` parses every source
(flags, ``HELMET_*`` variables, the ``--config`` file) into it, and nothing else reads those
sources. ``docs/configuration.md`` lists every option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Final, Literal

from helmet_otel.redaction import Capture

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_TELEMETRY_BUFFER",
    "MIN_TELEMETRY_BUFFER",
    "OTLP_SIGNALS",
    "Capture",
    "ConfigError",
    "LogLevel",
    "OtlpProtocol",
    "ProxyOptions",
    "RestartMode",
    "WorkerSched",
    "otlp_signals",
]

LogLevel = Literal["debug", "info", "warning", "error"]
OtlpProtocol = Literal["http/protobuf", "grpc"]
WorkerSched = Literal["idle", "normal"]
RestartMode = Literal["no", "on-failure"]

DEFAULT_TELEMETRY_BUFFER: Final = 4 * 1024 * 1024
MIN_TELEMETRY_BUFFER: Final = 64 * 1024
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024
"""Below this a single large message would not fit and every call would be shed."""


class ConfigError(Exception):
    """Bad configuration: reported as one line, exit status 2."""


@dataclass
class ProxyOptions:
    name: str | None = None
    store: str | None = None
    no_store: bool = False
    otlp_endpoint: str | None = None
    otlp_protocol: OtlpProtocol | None = None
    capture: Capture = "full"
    redact: list[str] = field(default_factory=list[str])
    max_body: int = 65536
    log_level: LogLevel = "warning"
    metrics_interval: float = 60.0
    config: str | None = None
    pass_otel_env: bool = False
    propagate: bool = True
    grace: float = 2.0
    restart: RestartMode = "no"
    """``on-failure``: a stdio server that crashes is restarted (``run`` only)."""
    max_restarts: int = 5
    """Restarts within a minute before a crash ends the session anyway."""
    trace_max_requests: int = 1000
    cwd: str | None = None
    policy: str | None = None
    """A TOML policy file (rules, detectors); reloaded when it changes."""
    # Streamable HTTP (`serve`)
    listen: str = "127.0.0.1:8080"
    path: str = "/mcp"
    upstream: str | None = None
    """`serve --upstream URL`: reverse-proxy a remote server instead of running a command."""
    auth_token_file: str | None = None
    insecure_no_auth: bool = False
    allowed_host: list[str] = field(default_factory=list[str])
    allowed_origin: list[str] = field(default_factory=list[str])
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    session_idle_timeout: float = 1800.0
    auth_failure_limit: int = 10
    # `connect`
    header: list[str] = field(default_factory=list[str])
    """``Name: value`` headers for every upstream request (values are never recorded)."""
    bearer_token_file: str | None = None
    request_timeout: float = 300.0
    # the web viewer (`ui`)
    ui_listen: str = "127.0.0.1:8765"
    ui_open: bool = False
    ui_no_token: bool = False
    # tuning
    telemetry_buffer: int = DEFAULT_TELEMETRY_BUFFER
    """Bytes of telemetry the relay keeps for the worker before it sheds new calls."""
    flush_timeout: float = 5.0
    """Seconds the worker may take to flush at shutdown."""
    relay_busy_limit: float = 0.85
    """Share of the relay's time (0..1) wanting a CPU above which telemetry sheds calls."""
    worker_niceness: int = 19
    worker_sched: WorkerSched = "idle"
    store_max_bytes: int | None = None
    """The store's size cap in bytes; 0: no cap; None: the store's default (500 MB)."""
    store_max_age: float | None = None
    """The store's age cap in seconds; 0: no cap; None: the store's default (14 days)."""

    @property
    def store_enabled(self) -> bool:
        return not self.no_store

    def recorded(self) -> dict[str, object]:
        """The options as the ``helmet.configuration`` record shows them: header values, which
        may be credentials, are left out."""
        values = asdict(self)
        values["header"] = [f"{h.partition(':')[0]}: <redacted>" for h in self.header]
        return values

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
