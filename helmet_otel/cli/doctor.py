"""``helmet-otel doctor``: is this setup going to record what it should?

It takes the proxy's options (so ``helmet-otel doctor --config team.toml`` checks what
``helmet-otel --config team.toml CMD`` would run with) and prints:

- the effective configuration, each value with where it came from (flag, ``HELMET_*``
  variable, config file and key, or default) and the ``OTEL_*`` variables the exporters read;
- one ``ok`` / ``FAIL`` line per check: the configuration is valid; the store (path, size,
  schema, records, retention, SQLite's quick check); each OTLP signal tested with a real, empty
  export and what the collector answered.

Exit status 1 when a check fails, else 0 (2 only for unusable arguments).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final, cast

from helmet_otel.cli.options import (
    OPTIONS,
    ConfigError,
    ProxyOptions,
    add_proxy_arguments,
    environ,
    resolve_with_sources,
)
from helmet_otel.cli.render import human_bytes, use_colour
from helmet_otel.store.paths import default_store_path, retention_from_env
from helmet_otel.store.schema import SCHEMA_VERSION, StoreError
from helmet_otel.store.timefmt import format_rfc3339

__all__ = ["main_doctor"]

_EPILOG: Final = """\
examples:
  helmet-otel doctor
  helmet-otel doctor --otlp-endpoint http://collector:4318
  helmet-otel doctor --config team.toml --store /srv/helmet/store.db

Exit status: 0 when every check passed, 1 when one failed, 2 on bad usage.
"""

# The OTEL_* variables the exporters read (values of *HEADERS* are never shown).
_OTEL_SHOWN: Final = (
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
)  # fmt: skip


class _Report:
    def __init__(self, stream: IO[str], colour: bool) -> None:
        self.stream = stream
        self.colour = colour
        self.failed = 0

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def check(self, ok: bool | None, what: str, detail: str) -> None:
        """``ok``: pass, ``FAIL``, or (None) ``skip``: not configured, nothing to test."""
        label = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
        if self.colour:
            code = {True: "32", False: "31", None: "33"}[ok]
            label = f"\x1b[{code}m{label}\x1b[0m"
        if ok is False:
            self.failed += 1
        self.line(f"{label}  {what}: {detail}")


def _shown(name: str, value: object) -> str:
    if isinstance(value, list):
        items = [str(v) for v in cast("list[object]", value)]
        if name == "header":  # header values may be credentials
            items = [f"{h.partition(':')[0]}: <redacted>" for h in items]
        return ", ".join(items) or "(none)"
    return "(none)" if value is None else str(value)


def _configuration(report: _Report, options: ProxyOptions, sources: dict[str, str]) -> None:
    report.line("configuration (flag > HELMET_* environment > config file > default):")
    values = dataclasses.asdict(options)
    names = [o.name for o in OPTIONS if "run" in o.commands or o.name in sources]
    width = max(len(o.replace("_", "-")) for o in names)
    for name in names:
        source = sources.get(name, "default")
        report.line(
            f"  {name.replace('_', '-').ljust(width)}  {_shown(name, values[name])}  ({source})"
        )
    env = os.environ
    present = [n for n in _OTEL_SHOWN if env.get(n)]
    present += sorted(
        n for n in env if n.startswith("OTEL_EXPORTER_OTLP_") and n not in present and env[n]
    )
    for name in present:
        value = "<redacted>" if "HEADERS" in name else env[name]
        report.line(f"  {name} = {value}  (environment)")
    report.line()


def _store(report: _Report, options: ProxyOptions, sources: dict[str, str]) -> None:
    from helmet_otel.store.maintenance import check_integrity, store_info

    if options.no_store:
        report.check(None, "store", f"off (no-store from {sources.get('no_store', 'default')})")
        return
    path = Path(options.store).expanduser() if options.store else default_store_path()
    max_bytes, max_age, problems = retention_from_env(
        options.store_max_bytes, options.store_max_age
    )
    caps = (
        f"retention {human_bytes(max_bytes) if max_bytes else 'no size cap'}, "
        f"{f'{max_age / 86400:g} days' if max_age else 'no age cap'}"
    )
    for problem in problems:
        report.check(False, "store retention", problem)
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not os.access(parent, os.W_OK):
            report.check(False, "store", f"{path} does not exist and {parent} is not writable")
        else:
            report.check(
                True, "store", f"{path} does not exist yet (the first proxy creates it); {caps}"
            )
        return
    try:
        info = store_info(path)
        problem = check_integrity(path)
    except StoreError as exc:
        report.check(False, "store", str(exc))
        return
    size = info.file_bytes + info.wal_bytes
    span = (
        f", {format_rfc3339(info.oldest_ns)[:19]}Z .. {format_rfc3339(info.newest_ns)[:19]}Z"
        if info.oldest_ns is not None and info.newest_ns is not None
        else ""
    )
    detail = (
        f"{path}: {human_bytes(size)}, schema {info.schema_version}, {info.records} records, "
        f"{info.sessions} sessions{span}; {caps}"
    )
    if problem is not None:
        report.check(False, "store", f"{detail}; integrity check failed: {problem}")
    elif not os.access(path, os.W_OK):
        report.check(False, "store", f"{detail}; the file is not writable (proxies cannot record)")
    elif info.schema_version > SCHEMA_VERSION:
        report.check(False, "store", f"{detail}; written by a newer helmet-otel")
    else:
        report.check(True, "store", f"{detail}; integrity ok")
    if max_bytes and size > max_bytes:
        report.check(
            False, "store size", f"{human_bytes(size)} is over the cap of {human_bytes(max_bytes)}"
        )


def _otlp(report: _Report, options: ProxyOptions) -> None:
    from helmet_otel.telemetry.otlp_probe import probe_otlp

    results = probe_otlp(options, os.environ)
    if not results:
        report.check(
            None,
            "otlp",
            "no endpoint (--otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT): local store only",
        )
        return
    for r in results:
        headers = f" (headers: {', '.join(r.headers)})" if r.headers else ""
        report.check(
            r.ok, f"otlp {r.signal}", f"{r.url} [{r.protocol}]{headers} {r.answer} in {r.ms:.0f} ms"
        )


def main_doctor(argv: Sequence[str], prog: str, parser_class: type[argparse.ArgumentParser]) -> int:
    parser = parser_class(
        prog=prog,
        description="Check the configuration, the local store and the OTLP endpoint: one "
        "ok/FAIL line each, after the effective configuration and where each value came from.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_proxy_arguments(parser, "run")
    parser.add_argument("--color", "--colour", choices=("auto", "always", "never"), default="auto")
    args = parser.parse_args(list(argv))
    report = _Report(sys.stdout, use_colour(args.color, sys.stdout))
    try:
        options, sources = resolve_with_sources(args, environ())
    except ConfigError as exc:
        report.check(False, "configuration", str(exc))
        return 1
    _configuration(report, options, sources)
    report.check(True, "configuration", "every value is valid")
    _store(report, options, sources)
    _otlp(report, options)
    return 1 if report.failed else 0
