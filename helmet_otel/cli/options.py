"""Proxy options: command-line flag > HELMET_* environment > config file > default."""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from helmet_otel.config import ConfigError, ProxyOptions
from helmet_otel.redaction import RedactionConfig, Redactor

_CAPTURE = ("none", "metadata", "full")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_PROTOCOLS = ("http/protobuf", "grpc")


def add_proxy_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every proxy command shares. Defaults are None: `resolve` fills them."""
    add = parser.add_argument
    add("--name", help="service name of the wrapped server (default: derived from the command)")
    add("--store", metavar="PATH", help="local telemetry store (default: user data dir)")
    add("--no-store", action="store_true", default=None, help="do not write the local store")
    add(
        "--otlp-endpoint",
        metavar="URL",
        help="send OTLP here (overrides OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    add("--otlp-protocol", choices=_PROTOCOLS, help="OTLP protocol (default: http/protobuf)")
    add(
        "--capture",
        choices=_CAPTURE,
        help="payloads in telemetry: none, metadata or full (default)",
    )
    add("--redact", action="append", metavar="KEY_OR_PATTERN",
        help="extra secret key name, 're:REGEX' value pattern or 'key:REGEX' (repeatable)")  # fmt: skip
    add("--max-body", type=int, metavar="BYTES", help="truncate recorded bodies (default 65536)")
    add("--log-level", choices=_LOG_LEVELS, help="helmet-otel's own diagnostics on stderr")
    add("--metrics-interval", type=float, metavar="SECONDS",
        help="metric export and helmet.performance interval (default 60)")  # fmt: skip
    add("--config", metavar="FILE", help="TOML config file (keys as the long options)")
    add("--pass-otel-env", action="store_true", default=None,
        help="let the server inherit OTEL_* variables (stripped by default)")  # fmt: skip
    add("--no-propagate", dest="propagate", action="store_false", default=None,
        help="do not write trace context into params._meta")  # fmt: skip
    add("--grace", type=float, metavar="SECONDS",
        help="shutdown grace before each escalation step (default 2)")  # fmt: skip
    add("--trace-max-requests", type=int, metavar="N",
        help="requests per trace before a long session rolls over (default 1000)")  # fmt: skip
    add("--cwd", metavar="DIR", help="working directory of the server (default: ours)")


_ENV_PREFIX = "HELMET_"
_LIST_KEYS = {"redact"}
_BOOL_KEYS = {"no_store", "pass_otel_env", "propagate"}


def _coerce(key: str, value: Any, source: str) -> Any:
    kinds = {f.name: f.type for f in fields(ProxyOptions)}
    kind = str(kinds[key])
    try:
        if key in _BOOL_KEYS:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if key in _LIST_KEYS:
            if isinstance(value, list):
                return [str(v) for v in value]  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType]
            return [part for part in str(value).split(",") if part]
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except ValueError:
        raise ConfigError(f"{source}: bad value for {key}: {value!r}") from None


def _validate(opts: ProxyOptions) -> None:
    if opts.capture not in _CAPTURE:
        raise ConfigError(f"capture must be one of {', '.join(_CAPTURE)}, not {opts.capture!r}")
    if opts.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(_LOG_LEVELS)}")
    if opts.otlp_protocol is not None and opts.otlp_protocol not in _PROTOCOLS:
        raise ConfigError(f"OTLP protocol must be one of {', '.join(_PROTOCOLS)}")
    if opts.max_body < 0 or opts.metrics_interval <= 0 or opts.grace < 0:
        raise ConfigError("max-body, metrics-interval and grace must be positive")
    if opts.trace_max_requests < 1:
        raise ConfigError("trace-max-requests must be at least 1")
    try:  # a bad --redact pattern is a usage error now, not a silent telemetry failure later
        Redactor(RedactionConfig(capture=opts.capture, max_body=opts.max_body,  # type: ignore[arg-type]
                                 extra=tuple(opts.redact)))  # fmt: skip
    except (ValueError, re.error) as exc:
        raise ConfigError(str(exc)) from None


def resolve(args: argparse.Namespace, env: Mapping[str, str]) -> ProxyOptions:
    names = [f.name for f in fields(ProxyOptions)]
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or env.get("HELMET_CONFIG")
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from None
        section = data.get("helmet", data)
        for raw_key, value in section.items():
            key = raw_key.replace("-", "_")
            if key not in names:
                raise ConfigError(f"config file {config_path}: unknown key {raw_key!r}")
            values[key] = _coerce(key, value, f"config file {config_path}")
        values["config"] = config_path
    for key in names:
        env_value = env.get(_ENV_PREFIX + key.upper())
        if env_value is not None and key != "config":
            values[key] = _coerce(key, env_value, _ENV_PREFIX + key.upper())
    for key in names:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    opts = ProxyOptions(**values)
    _validate(opts)
    return opts


def child_environment(env: Mapping[str, str], pass_otel_env: bool) -> dict[str, str]:
    """Our environment minus HELMET_* (and minus OTEL_* unless asked)."""
    return {
        key: value
        for key, value in env.items()
        if not key.startswith(_ENV_PREFIX) and (pass_otel_env or not key.startswith("OTEL_"))
    }


def environ() -> dict[str, str]:
    return dict(os.environ)
