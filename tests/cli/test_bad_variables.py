"""A bad value in any HELMET_* variable the proxy reads is one line on stderr naming the variable
and the accepted form, exit status 2, no traceback, and the server never starts. The real
command runs; its server would leave a marker file if it were started."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from helmet_otel.config import ProxyOptions

SWITCH = "1, true, yes, on, 0, false, no or off"
BUFFER = "a size in bytes of at least 64KiB such as 4194304 or 4MiB"
TIMEOUT = "a duration above 0 such as 5, 0.5 or 500ms"
FRACTION = "a fraction from 0 to 1 such as 0.85"
NICENESS = "a whole number from 0 to 19"
NAME = "a non-empty service name without control characters"

# (variable, value, what follows "bad value ": the bad part and the accepted form)
BAD = [
    ("HELMET_NAME", "", f"'': expected {NAME}"),
    ("HELMET_NAME", "web\nserver", f"'web\\nserver': expected {NAME}"),
    ("HELMET_STORE", "", "'': expected a non-empty path to the store file"),
    ("HELMET_NO_STORE", "maybe", f"'maybe': expected {SWITCH}"),
    ("HELMET_OTLP_ENDPOINT", "http://collector 4318",
     "'http://collector 4318': expected an http:// or https:// URL such as http://localhost:4318"),
    ("HELMET_OTLP_PROTOCOL", "json", "'json': expected http/protobuf or grpc"),
    ("HELMET_CAPTURE", "all", "'all': expected none, metadata or full"),
    ("HELMET_REDACT", "token,re:(",
     "'re:(': expected a secret key name, re:REGEX or key:REGEX (invalid regular expression: "
     "missing ), unterminated subpattern at position 0)"),
    ("HELMET_MAX_BODY", "lots", "'lots': expected a size in bytes such as 65536 or 64KiB"),
    ("HELMET_LOG_LEVEL", "verbose", "'verbose': expected debug, info, warning or error"),
    ("HELMET_METRICS_INTERVAL", "0", "'0': expected a duration above 0 such as 60, 2.5 or 1m"),
    ("HELMET_CONFIG", "{tmp}/missing.toml",
     "'{tmp}/missing.toml': expected a path to a readable TOML file (No such file or directory)"),
    ("HELMET_CONFIG", "{tmp}",
     "'{tmp}': expected a path to a readable TOML file (Is a directory)"),
    ("HELMET_PASS_OTEL_ENV", "2", f"'2': expected {SWITCH}"),
    ("HELMET_PROPAGATE", "nope", f"'nope': expected {SWITCH}"),
    ("HELMET_RESTART", "always", "'always': expected no or on-failure"),
    ("HELMET_MAX_RESTARTS", "-1", "'-1': expected a whole number such as 5, or 0 for none"),
    ("HELMET_GRACE", "-1", "'-1': expected a duration of 0 or more such as 2, 0.5 or 500ms"),
    ("HELMET_TRACE_MAX_REQUESTS", "0", "'0': expected a whole number of at least 1 such as 1000"),
    ("HELMET_CWD", "", "'': expected a non-empty directory path"),
    ("HELMET_POLICY", "{tmp}/missing.toml", "'{tmp}/missing.toml': expected a path to a valid "
     "TOML policy file (cannot read the policy file: No such file or directory)"),
    ("HELMET_POLICY", "{tmp}", "'{tmp}': expected a path to a valid TOML policy file (cannot "
     "read the policy file: Is a directory)"),
    ("HELMET_LISTEN", "8080", "'8080': expected HOST:PORT such as 127.0.0.1:8080 or [::1]:0"),
    ("HELMET_PATH", "mcp", "'mcp': expected a URL path starting with / such as /mcp"),
    ("HELMET_AUTH_TOKEN_FILE", "", "'': expected a path to a file of tokens"),
    ("HELMET_INSECURE_NO_AUTH", "please", f"'please': expected {SWITCH}"),
    ("HELMET_ALLOWED_HOST", "a.example,b example",
     "'b example': expected a host name such as mcp.example.com (no spaces or control "
     "characters)"),
    ("HELMET_ALLOWED_ORIGIN", "https://x y",
     "'https://x y': expected an origin such as https://app.example.com (no spaces or control "
     "characters)"),
    ("HELMET_MAX_MESSAGE_SIZE", "0", "'0': expected a size in bytes of at least 1 such as 64MiB"),
    ("HELMET_SESSION_IDLE_TIMEOUT", "-1",
     "'-1': expected a duration such as 30m or 90, or 0 for none"),
    ("HELMET_AUTH_FAILURE_LIMIT", "-1", "'-1': expected a whole number such as 10, or 0 for no limit"),
    ("HELMET_UPSTREAM", "https://x y",
     "'https://x y': expected an http:// or https:// URL such as https://host/mcp"),
    ("HELMET_HEADER", "X-Key 1",
     "'X-Key 1': expected a request header such as 'X-Api-Key: 123' (needs 'Name: value')"),
    ("HELMET_HEADER", "Host: evil",
     "'Host': expected a request header such as 'X-Api-Key: 123' (the client writes this "
     "header itself)"),
    ("HELMET_BEARER_TOKEN_FILE", " ", "' ': expected a path to a file holding a token"),
    ("HELMET_REQUEST_TIMEOUT", "-1", "'-1': expected a duration such as 300, 5m, or 0 for none"),
    ("HELMET_UI_LISTEN", "localhost", "'localhost': expected HOST:PORT such as 127.0.0.1:8765 or [::1]:0"),
    ("HELMET_UI_OPEN", "sometimes", f"'sometimes': expected {SWITCH}"),
    ("HELMET_UI_NO_TOKEN", "please", f"'please': expected {SWITCH}"),
    ("HELMET_TELEMETRY_BUFFER", "lots", f"'lots': expected {BUFFER}"),
    ("HELMET_TELEMETRY_BUFFER", "4 potatoes", f"'4 potatoes': expected {BUFFER}"),
    ("HELMET_TELEMETRY_BUFFER", "1KiB", f"'1KiB': expected {BUFFER}"),
    ("HELMET_FLUSH_TIMEOUT", "0", f"'0': expected {TIMEOUT}"),
    ("HELMET_FLUSH_TIMEOUT", "soon", f"'soon': expected {TIMEOUT}"),
    ("HELMET_RELAY_BUSY_LIMIT", "1.5", f"'1.5': expected {FRACTION}"),
    ("HELMET_RELAY_BUSY_LIMIT", "85%", f"'85%': expected {FRACTION}"),
    ("HELMET_WORKER_NICENESS", "low", f"'low': expected {NICENESS}"),
    ("HELMET_WORKER_NICENESS", "20", f"'20': expected {NICENESS}"),
    ("HELMET_WORKER_SCHED", "batch", "'batch': expected idle or normal"),
    ("HELMET_STORE_MAX_BYTES", "big",
     "'big': expected a size in bytes such as 500MB or 1GiB, or 0 for no cap"),
    ("HELMET_STORE_MAX_AGE", "forever",
     "'forever': expected a duration such as 14d or 12h, or 0 for no cap"),
]  # fmt: skip


def test_every_variable_has_a_bad_value_case() -> None:
    variables = {"HELMET_" + f.name.upper() for f in fields(ProxyOptions)} | {"HELMET_CONFIG"}
    assert {variable for variable, _, _ in BAD} == variables


def proxy(tmp_path: Path, *options: str, **variables: str) -> tuple[int, str, str, bool]:
    """Run ``helmet-otel OPTIONS SERVER``: (status, stdout, stderr, whether SERVER ran)."""
    marker = tmp_path / "server-ran"
    server = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELMET_", "OTEL_"))}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), **variables)
    proc = subprocess.run(
        [sys.executable, "-m", "helmet_otel", *options, *server],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr, marker.exists()


@pytest.mark.parametrize(("variable", "value", "message"), BAD)
def test_a_bad_variable_is_one_line_and_nothing_starts(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    value, message = value.format(tmp=tmp_path), message.format(tmp=tmp_path)
    assert proxy(tmp_path, **{variable: value}) == (
        2, "", f"helmet-otel: error: {variable}: bad value {message}\n", False
    )  # fmt: skip


def test_a_bad_flag_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    assert proxy(tmp_path, "--telemetry-buffer", "lots") == (
        2, "", f"helmet-otel: error: --telemetry-buffer: bad value 'lots': expected {BUFFER}\n",
        False,
    )  # fmt: skip
    assert proxy(tmp_path, "run", "--worker-sched", "fifo", "--") == (
        2, "", "helmet-otel: error: --worker-sched: bad value 'fifo': expected idle or normal\n",
        False,
    )  # fmt: skip


def test_a_policy_file_with_a_problem_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nid = "x"\ntools = ["a"]\naction = "block"\n')
    assert proxy(tmp_path, "--policy", str(policy)) == (
        2, "", f"helmet-otel: error: --policy: bad value {str(policy)!r}: expected a path to a "
        "valid TOML policy file (line 4: rule x: action: expected 'allow', 'deny' or 'log', not "
        "'block')\n", False,
    )  # fmt: skip


def test_a_bad_config_file_value_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    config = tmp_path / "helmet.toml"
    config.write_text("[helmet]\nworker-niceness = 'low'\n")
    assert proxy(tmp_path, "--config", str(config)) == (
        2, "", f"helmet-otel: error: config file {config}: worker-niceness: bad value 'low': "
        f"expected {NICENESS}\n", False,
    )  # fmt: skip
