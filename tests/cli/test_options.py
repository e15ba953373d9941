"""Option precedence (flag > HELMET_* > config file > default), env filtering, service names."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helmet_otel.cli.naming import default_service_name
from helmet_otel.cli.options import (
    ConfigError,
    add_proxy_arguments,
    child_environment,
    resolve,
    resolve_or_report,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_proxy_arguments(parser)
    return parser.parse_args(list(argv))


def test_precedence_flag_over_env_over_config_over_default(tmp_path: Path) -> None:
    config = tmp_path / "helmet.toml"
    config.write_text('capture = "metadata"\nmax-body = 100\nredact = ["a", "b"]\ngrace = 5\n')
    env = {"HELMET_CONFIG": str(config), "HELMET_MAX_BODY": "200", "HELMET_NO_STORE": "1"}
    options = resolve(parse("--max-body", "300"), env)
    assert options.max_body == 300  # flag
    assert options.no_store is True  # environment
    assert options.capture == "metadata" and options.redact == ["a", "b"] and options.grace == 5
    assert options.metrics_interval == 60.0  # default
    assert resolve(parse(), env).max_body == 200


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("nope = 1\n", {}, "config file {config}: unknown key 'nope'"),
        ("max-bdy = 1\n", {}, "config file {config}: unknown key 'max-bdy' (did you mean 'max-body'?)"),
        ("config = 'x.toml'\n", {}, "config file {config}: unknown key 'config'"),
        ("helmet = 1\n", {}, "config file {config}: helmet: expected a table of options"),
        ("capture = 3 = \n", {}, "--config: bad value '{config}': expected a path to a readable "
         "TOML file (invalid TOML: Expected newline or end of document after a statement "
         "(at line 1, column 13))"),
        ("", {"HELMET_MAX_BODY": "lots"},
         "HELMET_MAX_BODY: bad value 'lots': expected a size in bytes such as 65536 or 64KiB"),
        ("", {"HELMET_CAPTURE": "all"},
         "HELMET_CAPTURE: bad value 'all': expected none, metadata or full"),
        ("", {"HELMET_REDACT": "token,key:"},
         "HELMET_REDACT: bad value 'key:': expected a secret key name, re:REGEX or key:REGEX "
         "(empty pattern)"),
        ("", {"HELMET_REDACT": "--"},
         "HELMET_REDACT: bad value '--': expected a secret key name, re:REGEX or key:REGEX "
         "(a key word needs a letter or digit)"),
    ],
)  # fmt: skip
def test_bad_configuration_is_one_clear_error(
    tmp_path: Path, content: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(content)
    with pytest.raises(ConfigError) as info:
        resolve(parse("--config", str(config)), env)
    assert str(info.value) == message.format(config=config)


def test_child_environment_strips_helmet_and_otel() -> None:
    env = {"HELMET_X": "1", "OTEL_SERVICE_NAME": "s", "PATH": "/bin", "HOME": "/root"}
    assert child_environment(env, pass_otel_env=False) == {"PATH": "/bin", "HOME": "/root"}
    assert child_environment(env, pass_otel_env=True) == {
        "OTEL_SERVICE_NAME": "s", "PATH": "/bin", "HOME": "/root"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["python", "server.py"], "server"),
        (["python3", "-u", "/srv/weather/server.py"], "weather"),
        (["npx", "-y", "@modelcontextprotocol/server-everything"], "server-everything"),
        (["node", "/opt/github-mcp/dist/index.js"], "github-mcp"),
        (["python", "-m", "helmet_otel.examples.demo_server"], "demo_server"),
        (["uvx", "--from", "x", "mcp-server-fetch"], "mcp-server-fetch"),
        (["uvx", "mcp-server-git@1.2.3"], "mcp-server-git"),
        (["./my-server"], "my-server"),
        (
            ["node", "node_modules/@modelcontextprotocol/server-everything/dist/index.js", "stdio"],
            "server-everything",
        ),
        (["npx", "@modelcontextprotocol/server-everything@2026.8.31"], "server-everything"),
    ],
)
def test_default_service_name_identifies_the_server(argv: list[str], name: str) -> None:
    assert default_service_name(argv) == name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-store"], "helmet-otel: error: no server command given (see helmet-otel --help)\n"),
        (["run", "--"], "helmet-otel: error: no server command given (see helmet-otel --help)\n"),
        (["serve"],
         "helmet-otel: error: no server command given (see helmet-otel serve --help)\n"),
        (["connect", "ftp://x/mcp"],
         "helmet-otel: error: URL: bad value 'ftp://x/mcp': expected an http:// or https:// URL\n"),
        (["connect", "--bearer-token-file", "/nonexistent/t", "http://x/mcp"],
         "helmet-otel: error: --bearer-token-file: cannot read /nonexistent/t: No such file or "
         "directory\n"),
        (["serve", "--upstream", "http://x/mcp", "--", "node", "s.js"],
         "helmet-otel: error: give either --upstream URL or -- CMD, not both\n"),
        (["serve", "--upstream", "http://x/mcp", "--auth-token-file", "t"],
         "helmet-otel: error: --auth-token-file does not go with --upstream: the Authorization "
         "header is the upstream's (it passes through)\n"),
        (["--no-store", "run", "--"],
         "helmet-otel: error: no server command given (see helmet-otel --help)\n"),
        (["--store", "/tmp/x.db", "logs"], "helmet-otel: error: 'logs' is a command of its own: "
         "put it first, e.g. helmet-otel logs --store PATH\n"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from helmet_otel.cli.main import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", message)


def test_a_value_for_another_commands_option_is_said_to_be_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "helmet.toml"
    config.write_text('max-restarts = 3\nlisten = "127.0.0.1:9000"\n')
    env = {"HELMET_RESTART": "on-failure", "HELMET_CONFIG": str(config), "HELMET_UI_OPEN": "1"}
    parser = argparse.ArgumentParser()
    add_proxy_arguments(parser, "serve")
    options = resolve_or_report(parser.parse_args([]), env, "serve")
    assert options is not None and options.restart == "on-failure"
    assert capsys.readouterr().err.splitlines() == [
        f"helmet-otel: config file {config}: max-restarts applies to `run` only: `serve` ignores it",
        "helmet-otel: HELMET_RESTART applies to `run` only: `serve` ignores it",
    ]
    assert resolve_or_report(parse(), env, "run") is not None  # --listen is serve's
    assert capsys.readouterr().err.splitlines() == [
        f"helmet-otel: config file {config}: listen applies to `serve` only: `run` ignores it",
    ]
    assert resolve_or_report(parse(), {"HELMET_RESTART": "on-failure"}, "run") is not None
    assert capsys.readouterr().err == ""


def test_serve_says_it_ignores_the_restart_variable(tmp_path: Path) -> None:
    """The real command: the notice comes before anything starts (here serve then refuses a
    non-loopback address without a token file, so nothing listens)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELMET_", "OTEL_"))}
    env["HELMET_RESTART"] = "on-failure"
    proc = subprocess.run(
        [sys.executable, "-m", "helmet_otel", "serve", "--listen", "0.0.0.0:0", "--no-store",
         "--", sys.executable, "-c", "pass"],
        env=env, cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (
        b"helmet-otel: HELMET_RESTART applies to `run` only: `serve` ignores it"
    )
