"""The option table: one entry per `ProxyOptions` field, typed values in every accepted form,
the same precedence and checks for the tuning options as for the others, and the docs."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from helmet_otel.cli.options import OPTIONS, ConfigError, add_proxy_arguments, resolve
from helmet_otel.config import ProxyOptions

REPO = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_proxy_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_table_has_one_entry_per_field_and_accepts_every_default() -> None:
    assert [option.name for option in OPTIONS] == [f.name for f in fields(ProxyOptions)]
    defaults = ProxyOptions()
    for option in OPTIONS:
        default = getattr(defaults, option.name)
        if default is not None:
            assert option.parse(default) == default, option.name


def test_defaults() -> None:
    options = resolve(parse(), {})
    assert (
        options.telemetry_buffer,
        options.flush_timeout,
        options.relay_busy_limit,
        options.worker_niceness,
        options.worker_sched,
        options.store_max_bytes,
        options.store_max_age,
    ) == (4194304, 5.0, 0.85, 19, "idle", None, None)
    assert options == ProxyOptions()


@pytest.mark.parametrize(
    ("variable", "text", "value"),
    [
        ("HELMET_TELEMETRY_BUFFER", "4MiB", 4194304),
        ("HELMET_TELEMETRY_BUFFER", "512KiB", 524288),
        ("HELMET_TELEMETRY_BUFFER", "4MB", 4000000),
        ("HELMET_TELEMETRY_BUFFER", "1G", 1000000000),
        ("HELMET_TELEMETRY_BUFFER", "65536", 65536),
        ("HELMET_FLUSH_TIMEOUT", "1", 1.0),
        ("HELMET_FLUSH_TIMEOUT", "500ms", 0.5),
        ("HELMET_RELAY_BUSY_LIMIT", "0", 0.0),
        ("HELMET_RELAY_BUSY_LIMIT", "1", 1.0),
        ("HELMET_WORKER_NICENESS", "0", 0),
        ("HELMET_WORKER_SCHED", "normal", "normal"),
        ("HELMET_STORE_MAX_BYTES", "2GB", 2000000000),
        ("HELMET_STORE_MAX_BYTES", "0", 0),
        ("HELMET_STORE_MAX_AGE", "14d", 1209600.0),
        ("HELMET_STORE_MAX_AGE", "1h30m", 5400.0),
        ("HELMET_STORE_MAX_AGE", "0", 0.0),
        ("HELMET_MAX_BODY", "64KiB", 65536),
        ("HELMET_METRICS_INTERVAL", "1m", 60.0),
        ("HELMET_GRACE", "0", 0.0),
        ("HELMET_RESTART", "On-Failure", "on-failure"),
        ("HELMET_MAX_RESTARTS", "0", 0),
        ("HELMET_CAPTURE", "Metadata", "metadata"),
        ("HELMET_OTLP_PROTOCOL", "grpc", "grpc"),
        ("HELMET_NO_STORE", "yes", True),
        ("HELMET_PROPAGATE", "", False),
        ("HELMET_REDACT", "customer_id,re:ACME-[0-9]+", ["customer_id", "re:ACME-[0-9]+"]),
    ],
)  # fmt: skip
def test_accepted_forms(variable: str, text: str, value: Any) -> None:
    field = variable.removeprefix("HELMET_").lower()
    resolved = getattr(resolve(parse(), {variable: text}), field)
    assert (resolved, type(resolved)) == (value, type(value))


def test_precedence_of_a_tuning_option(tmp_path: Path) -> None:
    config = tmp_path / "helmet.toml"
    config.write_text('telemetry-buffer = "1MiB"\nworker_niceness = 5\n')
    env = {"HELMET_CONFIG": str(config)}
    assert resolve(parse(), env).telemetry_buffer == 1048576  # config file
    assert resolve(parse(), env).worker_niceness == 5  # config file, underscore spelling
    env["HELMET_TELEMETRY_BUFFER"] = "2MiB"
    assert resolve(parse(), env).telemetry_buffer == 2097152  # environment over file
    flag = parse("--telemetry-buffer", "3MiB")
    assert resolve(flag, env).telemetry_buffer == 3145728  # flag over environment
    assert resolve(parse("--worker-sched", "normal"), {}).worker_sched == "normal"


def test_config_file_in_a_helmet_table(tmp_path: Path) -> None:
    config = tmp_path / "helmet.toml"
    config.write_text("[helmet]\nstore-max-bytes = 1048576\nstore-max-age = '30d'\n")
    options = resolve(parse("--config", str(config)), {})
    assert (options.store_max_bytes, options.store_max_age) == (1048576, 2592000.0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("telemetry-buffer = 'lots'",
         "telemetry-buffer: bad value 'lots': expected a size in bytes of at least 64KiB such as "
         "4194304 or 4MiB"),
        ("telemetry-buffer = 1024",
         "telemetry-buffer: bad value 1024: expected a size in bytes of at least 64KiB such as "
         "4194304 or 4MiB"),
        ("flush_timeout = 0",
         "flush_timeout: bad value 0: expected a duration above 0 such as 5, 0.5 or 500ms"),
        ("relay-busy-limit = 1.5",
         "relay-busy-limit: bad value 1.5: expected a fraction from 0 to 1 such as 0.85"),
        ("worker-niceness = 19.0",
         "worker-niceness: bad value 19.0: expected a whole number from 0 to 19"),
        ("worker-niceness = true",
         "worker-niceness: bad value True: expected a whole number from 0 to 19"),
        ("worker-sched = 'batch'", "worker-sched: bad value 'batch': expected idle or normal"),
        ("store-max-bytes = -1",
         "store-max-bytes: bad value -1: expected a size in bytes such as 500MB or 1GiB, or 0 for "
         "no cap"),
        ("store-max-age = 'forever'",
         "store-max-age: bad value 'forever': expected a duration such as 14d or 12h, or 0 for "
         "no cap"),
        ("no-store = 'maybe'",
         "no-store: bad value 'maybe': expected 1, true, yes, on, 0, false, no or off"),
        ("redact = ['token', 7]",
         "redact: bad value ['token', 7]: expected a secret key name, re:REGEX or key:REGEX"),
        ("cwd = ''", "cwd: bad value '': expected a non-empty directory path"),
    ],
)  # fmt: skip
def test_config_file_values_are_checked_like_the_others(
    tmp_path: Path, line: str, message: str
) -> None:
    config = tmp_path / "helmet.toml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError) as info:
        resolve(parse(), {"HELMET_CONFIG": str(config)})
    assert str(info.value) == f"config file {config}: {message}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--telemetry-buffer", "lots"],
         "--telemetry-buffer: bad value 'lots': expected a size in bytes of at least 64KiB such as "
         "4194304 or 4MiB"),
        (["--flush-timeout", "inf"],
         "--flush-timeout: bad value 'inf': expected a duration above 0 such as 5, 0.5 or 500ms"),
        (["--relay-busy-limit", "nan"],
         "--relay-busy-limit: bad value 'nan': expected a fraction from 0 to 1 such as 0.85"),
        (["--worker-niceness", "-1"],
         "--worker-niceness: bad value '-1': expected a whole number from 0 to 19"),
        (["--max-body", "-1"],
         "--max-body: bad value '-1': expected a size in bytes such as 65536 or 64KiB"),
        (["--redact", "ok", "--redact", "re:["],
         "--redact: bad value 're:[': expected a secret key name, re:REGEX or key:REGEX "
         "(invalid regular expression: unterminated character set at position 0)"),
        (["--config", "/nonexistent/helmet.toml"],
         "--config: bad value '/nonexistent/helmet.toml': expected a path to a readable TOML file "
         "(No such file or directory)"),
    ],
)  # fmt: skip
def test_flag_values_are_checked_like_the_others(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(parse(*argv), {})
    assert str(info.value) == message


def test_a_bad_value_is_an_error_even_where_a_flag_overrides_it() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(parse("--worker-sched", "idle"), {"HELMET_WORKER_SCHED": "sometimes"})
    assert str(info.value) == "HELMET_WORKER_SCHED: bad value 'sometimes': expected idle or normal"


def test_flag_errors_are_one_line_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    from helmet_otel.cli.main import main

    assert main(["--worker-niceness", "low", "true"]) == 2
    assert capsys.readouterr() == (
        "",
        "helmet-otel: error: --worker-niceness: bad value 'low': expected a whole number "
        "from 0 to 19\n",
    )


def test_help_lists_the_tuning_group() -> None:
    parser = argparse.ArgumentParser(prog="p", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_proxy_arguments(parser)
    text = parser.format_help()
    tuning = text[text.index("\ntuning:\n") :]
    for flag in ("--telemetry-buffer SIZE", "--flush-timeout SECONDS",
                 "--relay-busy-limit FRACTION", "--worker-niceness N",
                 "--worker-sched {idle,normal}", "--store-max-bytes SIZE",
                 "--store-max-age DURATION"):  # fmt: skip
        assert flag in tuning
    assert "--capture" not in tuning


def test_the_configuration_doc_lists_every_option() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    assert len(rows) == len(OPTIONS)
    for option in OPTIONS:
        row = next((line for line in rows if f"`{option.env}`" in line), "")
        assert f"`{option.flag}" in row, option.name
        assert f"`{option.key}`" in row, option.name
