"""Proxy options: command-line flag > HELMET_* environment > config file > default.

One table, `OPTIONS`, says for every `ProxyOptions` field how it is spelled as a flag, an
environment variable (``HELMET_<FIELD>``) and a config-file key (the flag without ``--``), how
its value is parsed and checked, and the form it accepts. A bad value from any source is a
`ConfigError` naming the source and that form: one line, exit status 2, nothing started. A bad
value is an error even where a higher source overrides it. Nothing is read at import time.
``docs/configuration.md`` lists the options.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast, get_args

from helmet_otel.config import (
    MIN_TELEMETRY_BUFFER,
    Capture,
    ConfigError,
    LogLevel,
    OtlpProtocol,
    ProxyOptions,
    RestartMode,
    WorkerSched,
)
from helmet_otel.redaction import RedactionConfig, Redactor

__all__ = [
    "OPTIONS",
    "ConfigError",
    "Option",
    "ProxyOptions",
    "add_proxy_arguments",
    "child_environment",
    "environ",
    "resolve",
    "resolve_with_sources",
]

_ENV_PREFIX = "HELMET_"

Parser = Callable[[object], Any]
"""A flag or environment value (text) or a TOML value -> the field's value; ValueError if bad."""


class _Rejected(ValueError):
    """A parser's rejection that names the bad part of a value and says why."""

    def __init__(self, part: object, why: str) -> None:
        super().__init__(why)
        self.part = part
        self.why = why


@dataclass(frozen=True)
class Option:
    name: str
    """The `ProxyOptions` field."""
    parse: Parser
    expected: str
    """The accepted form: every bad-value message ends with ``expected <this>``."""
    help: str
    metavar: str = ""
    """Empty for a switch, a flag without a value."""
    switch: bool = True
    """What a switch flag sets the field to (``--no-propagate`` sets ``propagate`` False)."""
    flag_name: str = ""
    """The flag when it is not ``--<key>``."""
    repeat: bool = False
    tuning: bool = False
    commands: tuple[str, ...] = ("run", "serve", "connect")
    """The proxy commands that take it as a flag (`add_proxy_arguments`)."""

    @property
    def key(self) -> str:
        """The config-file key (``max-body``; ``max_body`` is accepted too)."""
        return self.name.replace("_", "-")

    @property
    def flag(self) -> str:
        return self.flag_name or f"--{self.key}"

    @property
    def env(self) -> str:
        return _ENV_PREFIX + self.name.upper()


# -- parsers ---------------------------------------------------------------------------------
def _text(value: object) -> str:
    """Flag and environment values are text; a TOML file may give numbers too."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(value)


def _nonempty(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError(value)
    return value


def _service_name(value: object) -> str:
    text = _nonempty(value)
    if not text.isprintable():
        raise ValueError(value)
    return text


def _endpoint(value: object) -> str:
    """An OTLP endpoint: an http:// or https:// URL with a host (checked at start, so a typo
    is one line and exit 2, not exporter errors later)."""
    text = _nonempty(value)
    if not text.isprintable() or " " in text:  # other spaces are not printable
        raise ValueError(value)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(value)
    _ = parts.port  # raises ValueError for a port that is not a number in range
    return text


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _switch(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def _size(minimum: int) -> Parser:
    def parse(value: object) -> int:
        from helmet_otel.store.timefmt import parse_size  # not at import: the store is heavy

        size = parse_size(_text(value))
        if size < minimum:
            raise ValueError(value)
        return size

    return parse


def _duration(*, zero: bool) -> Parser:
    def parse(value: object) -> float:
        from helmet_otel.store.timefmt import parse_duration

        seconds = parse_duration(_text(value))
        if not math.isfinite(seconds) or (seconds == 0 and not zero):
            raise ValueError(value)
        return seconds

    return parse


def _whole(low: int, high: int | None = None) -> Parser:
    def parse(value: object) -> int:
        number = int(_text(value).strip())
        if number < low or (high is not None and number > high):
            raise ValueError(value)
        return number

    return parse


def _fraction(value: object) -> float:
    number = float(_text(value))
    if not 0 <= number <= 1:  # NaN fails too
        raise ValueError(value)
    return number


def _redact(value: object) -> list[str]:
    if isinstance(value, list):
        items = [_nonempty(item) for item in cast("list[object]", value)]
    else:
        items = [part for part in _text(value).split(",") if part]
    for item in items:
        try:
            Redactor(RedactionConfig(extra=(item,)))
        except (ValueError, re.error) as exc:
            raise _Rejected(item, str(exc).removeprefix(f"--redact {item!r}: ")) from None
    return items


def _listen(value: object) -> str:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6; port 0: any free port)."""
    text = _nonempty(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(value)
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(value)
    return text


def _url_path(value: object) -> str:
    text = _nonempty(value)
    if not text.startswith("/") or not text.isprintable() or " " in text or "?" in text:
        raise ValueError(value)
    return text


def _hosts(value: object) -> list[str]:
    """Host names or origins: a list, or comma-separated text; no spaces inside one."""
    if isinstance(value, list):
        items = [_nonempty(item).strip() for item in cast("list[object]", value)]
    else:
        items = [part.strip() for part in _text(value).split(",") if part.strip()]
    for item in items:
        if not item.isprintable() or " " in item:
            raise _Rejected(item, "no spaces or control characters")
    return items


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOP_BY_HOP = ("host", "content-length", "transfer-encoding", "connection")


def _headers(value: object) -> list[str]:
    """``Name: value`` request headers: a list (repeated flag, TOML array) or one."""
    items = cast("list[object]", value) if isinstance(value, list) else [value]
    headers: list[str] = []
    for item in items:
        text = _nonempty(item)
        name, colon, rest = text.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name.strip()):
            raise _Rejected(name.strip() or text[:20], "needs 'Name: value'")
        if name.strip().lower() in _HOP_BY_HOP:
            raise _Rejected(name.strip(), "the client writes this header itself")
        if any(c in rest for c in "\r\n\0"):
            raise _Rejected(name.strip(), "no line breaks in a header value")
        headers.append(f"{name.strip()}: {rest.strip()}")
    return headers


def _policy_file(value: object) -> str:
    """A policy file that loads: its first problem is the error (``policy check`` lists all)."""
    from helmet_otel.policy.loader import PolicyError, load_policy

    path = _nonempty(value)
    try:
        load_policy(path)
    except PolicyError as exc:
        first = exc.problems[0]
        where = f"line {first.line}: " if first.line else ""
        raise _Rejected(path, f"{where}{first.message}") from None
    return path


def _one_of(choices: tuple[str, ...]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


def _choice(
    name: str, literal: object, help: str, *, tuning: bool = False,
    commands: tuple[str, ...] = ("run", "serve", "connect"),
) -> Option:  # fmt: skip
    """An option whose values are the strings of a ``Literal`` type."""
    choices: tuple[str, ...] = get_args(literal)

    def parse(value: object) -> str:
        text = _text(value).strip().lower()
        if text not in choices:
            raise ValueError(value)
        return text

    metavar = f"{{{','.join(choices)}}}"
    return Option(name, parse, _one_of(choices), help, metavar, tuning=tuning, commands=commands)


_RUN = ("run",)
_SERVE = ("serve",)
_CONNECT = ("connect",)
_UI = ("ui",)
_PROXY_AND_UI = ("run", "serve", "connect", "ui")
_SWITCH_FORM = _one_of(_TRUE + _FALSE[:-1])  # empty means off too
_CONFIG_FORM = "a path to a readable TOML file"

OPTIONS: tuple[Option, ...] = (
    Option("name", _service_name, "a non-empty service name without control characters",
           "service name of the wrapped server (default: derived from the command)", "NAME"),
    Option("store", _nonempty, "a non-empty path to the store file",
           "local telemetry store (default: user data dir)", "PATH", commands=_PROXY_AND_UI),
    Option("no_store", _switch, _SWITCH_FORM, "do not write the local store"),
    Option("otlp_endpoint", _endpoint, "an http:// or https:// URL such as http://localhost:4318",
           "send OTLP here (overrides OTEL_EXPORTER_OTLP_ENDPOINT)", "URL"),
    _choice("otlp_protocol", OtlpProtocol, "OTLP protocol (default: http/protobuf)"),
    _choice("capture", Capture, "payloads in telemetry: none, metadata or full (default)"),
    Option("redact", _redact, "a secret key name, re:REGEX or key:REGEX",
           "extra secret key name, 're:REGEX' value pattern or 'key:REGEX' (repeatable)",
           "KEY_OR_PATTERN", repeat=True),
    Option("max_body", _size(0), "a size in bytes such as 65536 or 64KiB",
           "truncate recorded bodies (default 65536)", "BYTES"),
    _choice("log_level", LogLevel, "helmet-otel's own diagnostics on stderr (default: warning)"),
    Option("metrics_interval", _duration(zero=False), "a duration above 0 such as 60, 2.5 or 1m",
           "metric export and helmet.performance interval (default 60)", "SECONDS"),
    Option("config", _nonempty, _CONFIG_FORM, "TOML config file (keys as the long options)",
           "FILE", commands=_PROXY_AND_UI),
    Option("pass_otel_env", _switch, _SWITCH_FORM,
           "let the server inherit OTEL_* variables (stripped by default)"),
    Option("propagate", _switch, _SWITCH_FORM, "do not write trace context into params._meta",
           switch=False, flag_name="--no-propagate"),
    Option("grace", _duration(zero=True), "a duration of 0 or more such as 2, 0.5 or 500ms",
           "shutdown grace before each escalation step (default 2)", "SECONDS"),
    _choice("restart", RestartMode,
            "run: restart a server that crashes while the client is connected, replaying a "
            "legacy client's initialize (default: no)", commands=_RUN),
    Option("max_restarts", _whole(0), "a whole number such as 5, or 0 for none",
           "run: with --restart on-failure, restarts within a minute before a crash ends the "
           "session (default 5)", "N", commands=_RUN),
    Option("trace_max_requests", _whole(1), "a whole number of at least 1 such as 1000",
           "requests per trace before a long session rolls over (default 1000)", "N"),
    Option("cwd", _nonempty, "a non-empty directory path",
           "working directory of the server (default: ours)", "DIR"),
    Option("policy", _policy_file, "a path to a valid TOML policy file", "policy file: tool access rules and security detectors (reloaded "
           "when it changes)", "FILE"),
    Option("listen", _listen, "HOST:PORT such as 127.0.0.1:8080 or [::1]:0",
           "serve: address to listen on (default 127.0.0.1:8080; port 0: any free port)",
           "HOST:PORT", commands=_SERVE),
    Option("path", _url_path, "a URL path starting with / such as /mcp",
           "serve: the MCP endpoint's path (default /mcp)", "PATH", commands=_SERVE),
    Option("upstream", _endpoint, "an http:// or https:// URL such as https://host/mcp",
           "serve: reverse-proxy this remote Streamable HTTP server instead of running a "
           "command", "URL", commands=_SERVE),
    Option("auth_token_file", _nonempty, "a path to a file of tokens",
           "serve: accepted bearer tokens, one per line, plain or sha256:<hex>", "FILE",
           commands=_SERVE),
    Option("insecure_no_auth", _switch, _SWITCH_FORM,
           "serve: allow a non-loopback --listen without --auth-token-file", commands=_SERVE),
    Option("allowed_host", _hosts, "a host name such as mcp.example.com",
           "serve: a Host (and Origin host) to accept besides loopback and the listen address "
           "(repeatable)", "HOST", repeat=True, commands=_SERVE),
    Option("allowed_origin", _hosts, "an origin such as https://app.example.com",
           "serve: a browser Origin to accept (repeatable)", "ORIGIN", repeat=True,
           commands=_SERVE),
    Option("max_message_size", _size(1), "a size in bytes of at least 1 such as 64MiB",
           "serve: largest request body; larger ones get 413 (default 64MiB)", "SIZE",
           commands=_SERVE),
    Option("session_idle_timeout", _duration(zero=True),
           "a duration such as 30m or 90, or 0 for none",
           "serve: end a session with nothing in flight for this long (default 30m)", "DURATION",
           commands=_SERVE),
    Option("auth_failure_limit", _whole(0), "a whole number such as 10, or 0 for no limit",
           "serve: failed authentications per address per minute before 429 (default 10)", "N",
           commands=_SERVE),
    Option("header", _headers, "a request header such as 'X-Api-Key: 123'",
           "connect: a header to send with every request (repeatable; values are never "
           "recorded)", "'NAME: VALUE'", repeat=True, commands=_CONNECT),
    Option("bearer_token_file", _nonempty, "a path to a file holding a token",
           "connect: send 'Authorization: Bearer' with the token in this file (first line)",
           "FILE", commands=_CONNECT),
    Option("request_timeout", _duration(zero=True), "a duration such as 300, 5m, or 0 for none",
           "connect, serve: answer a request with a timeout error and cancel it upstream when "
           "no answer (or progress) came for this long (default 5m)", "DURATION",
           commands=("connect", "serve")),
    Option("ui_listen", _listen, "HOST:PORT such as 127.0.0.1:8765 or [::1]:0",
           "ui: address to listen on (default 127.0.0.1:8765; port 0: any free port)",
           "HOST:PORT", flag_name="--listen", commands=_UI),
    Option("ui_open", _switch, _SWITCH_FORM, "ui: open the viewer in the default web browser",
           flag_name="--open", commands=_UI),
    Option("ui_no_token", _switch, _SWITCH_FORM,
           "ui: serve without an access token (only on a loopback --listen)",
           flag_name="--no-token", commands=_UI),
    Option("telemetry_buffer", _size(MIN_TELEMETRY_BUFFER),
           "a size in bytes of at least 64KiB such as 4194304 or 4MiB",
           "telemetry the relay holds for the worker before it sheds calls (default 4MiB)",
           "SIZE", tuning=True),
    Option("flush_timeout", _duration(zero=False), "a duration above 0 such as 5, 0.5 or 500ms",
           "how long the worker may flush telemetry at shutdown (default 5)", "SECONDS",
           tuning=True),
    Option("relay_busy_limit", _fraction, "a fraction from 0 to 1 such as 0.85",
           "relay CPU share above which telemetry sheds calls (default 0.85)", "FRACTION",
           tuning=True),
    Option("worker_niceness", _whole(0, 19), "a whole number from 0 to 19",
           "nice value of the telemetry worker (default 19)", "N", tuning=True),
    _choice("worker_sched", WorkerSched,
            "idle: the worker runs only on an idle CPU (Linux, default); normal: nice only",
            tuning=True),
    Option("store_max_bytes", _size(0), "a size in bytes such as 500MB or 1GiB, or 0 for no cap",
           "size cap of the local store (default 500MB; 0: none)", "SIZE", tuning=True),
    Option("store_max_age", _duration(zero=True), "a duration such as 14d or 12h, or 0 for no cap",
           "age cap of the local store (default 14d; 0: none)", "DURATION", tuning=True),
)  # fmt: skip
_BY_NAME = {option.name: option for option in OPTIONS}
_CONFIG = _BY_NAME["config"]


def add_proxy_arguments(parser: argparse.ArgumentParser, command: str = "run") -> None:
    """The options of a command (``run``, ``serve``, ``connect``, ``ui``). Values are text and
    defaults None: `resolve` parses them, so a bad one is the same one-line error as from any
    other source."""
    tuning = (
        parser.add_argument_group(
            "tuning", "telemetry and store limits; the defaults suit most setups"
        )
        if any(option.tuning and command in option.commands for option in OPTIONS)
        else None
    )
    for option in OPTIONS:
        if command not in option.commands:
            continue
        group = tuning if option.tuning and tuning is not None else parser
        if not option.metavar:
            action = "store_true" if option.switch else "store_false"
            group.add_argument(
                option.flag, dest=option.name, action=action, default=None, help=option.help
            )
        else:
            group.add_argument(
                option.flag,
                dest=option.name,
                action="append" if option.repeat else "store",
                metavar=option.metavar,
                help=option.help,
            )


# -- resolution ------------------------------------------------------------------------------
def _bad(source: str, option: Option, value: object, why: str = "") -> ConfigError:
    reason = f" ({why})" if why else ""
    return ConfigError(f"{source}: bad value {value!r}: expected {option.expected}{reason}")


def _parse(option: Option, value: object, source: str) -> Any:
    try:
        return option.parse(value)
    except _Rejected as exc:
        raise _bad(source, option, exc.part, exc.why) from None
    except (ValueError, ArithmeticError):
        raise _bad(source, option, value) from None


def _read_config(path: str, source: str) -> dict[str, Any]:
    """The values in the config file ``path`` (named by ``source``), parsed."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise _bad(source, _CONFIG, path, exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise _bad(source, _CONFIG, path, f"invalid TOML: {exc}") from None
    section: object = data.get("helmet", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: helmet: expected a table of options")
    keys = [option.key for option in OPTIONS if option is not _CONFIG]
    values: dict[str, Any] = {}
    for raw_key, value in cast("dict[str, object]", section).items():
        option = _BY_NAME.get(raw_key.replace("-", "_"))
        if option is None or option is _CONFIG:
            near = difflib.get_close_matches(raw_key.replace("_", "-"), keys, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config file {path}: unknown key {raw_key!r}{hint}")
        values[option.name] = _parse(option, value, f"config file {path}: {raw_key}")
    return values


def resolve_or_report(
    args: argparse.Namespace, env: Mapping[str, str], command: str | None = None
) -> ProxyOptions | None:
    """`resolve`, or None once the one stderr line a bad value gets is written (the caller
    exits with status 2 and starts nothing). With a proxy ``command``, a value from the
    environment or the config file for an option of another proxy command only (``--restart``
    for ``serve``) gets one stderr line saying it is ignored: it is not an error, since one
    environment or config file often serves several commands, but it must not pass silently."""
    try:
        options, sources = resolve_with_sources(args, env)
    except ConfigError as exc:
        sys.stderr.write(f"helmet-otel: error: {exc}\n")
        return None
    if command is not None:
        for line in ignored_for(command, sources):
            sys.stderr.write(f"helmet-otel: {line}\n")
    return options


def ignored_for(command: str, sources: Mapping[str, str]) -> list[str]:
    """What `resolve_or_report` tells of the values ``command`` ignores (one line each)."""
    lines: list[str] = []
    for name, source in sources.items():
        option = _BY_NAME[name]
        if command in option.commands or "ui" in option.commands:
            continue
        where = source.removeprefix("env ")
        only = ", ".join(f"`{c}`" for c in option.commands)
        lines.append(f"{where} applies to {only} only: `{command}` ignores it")
    return lines


def resolve(args: argparse.Namespace, env: Mapping[str, str]) -> ProxyOptions:
    """The options from ``args`` (flags), ``env`` (HELMET_*) and the config file they name.

    Raises `ConfigError` (one line) for the first bad value."""
    return resolve_with_sources(args, env)[0]


def resolve_with_sources(
    args: argparse.Namespace, env: Mapping[str, str]
) -> tuple[ProxyOptions, dict[str, str]]:
    """`resolve`, and where each value that is not a default came from (``helmet-otel
    doctor``): field -> ``flag --x``, ``env HELMET_X`` or ``config file PATH: key``."""
    flags: dict[str, Any] = {}
    for option in OPTIONS:
        value = getattr(args, option.name, None)
        if value is not None:
            flags[option.name] = value if not option.metavar else _parse(option, value, option.flag)
    environment: dict[str, Any] = {}
    for option in OPTIONS:
        text = env.get(option.env)
        if text is not None:
            environment[option.name] = _parse(option, text, option.env)
    if "config" in flags:
        config: dict[str, Any] = _read_config(flags["config"], _CONFIG.flag)
    elif "config" in environment:
        config = _read_config(environment["config"], _CONFIG.env)
    else:
        config = {}
    config_path = flags.get("config") or environment.get("config")
    sources = {name: f"config file {config_path}: {_BY_NAME[name].key}" for name in config}
    sources.update({name: f"env {_BY_NAME[name].env}" for name in environment})
    sources.update({name: f"flag {_BY_NAME[name].flag}" for name in flags})
    return ProxyOptions(**{**config, **environment, **flags}), sources


def child_environment(env: Mapping[str, str], pass_otel_env: bool) -> dict[str, str]:
    """Our environment minus HELMET_* (and minus OTEL_* unless asked)."""
    return {
        key: value
        for key, value in env.items()
        if not key.startswith(_ENV_PREFIX) and (pass_otel_env or not key.startswith("OTEL_"))
    }


def environ() -> dict[str, str]:
    return dict(os.environ)
