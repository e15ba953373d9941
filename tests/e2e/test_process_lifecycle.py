"""The proxy as a process: stderr forwarding, the child's environment, signals, exit statuses,
no zombies or orphans, and a server that cannot be started (issue 2, behaviours 5-8).

Telemetry is off (`--no-store`, no OTEL_EXPORTER_OTLP_ENDPOINT), so the proxy writes nothing of
its own to stderr unless something goes wrong. Servers are `tests/servers/lifecycle_server.py`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.helpers import SERVERS_DIR, RawProcess, clean_env, describe, proxy_argv
from tests.servers.lifecycle_server import STREAM_MARKER, flood_bytes

pytestmark = pytest.mark.e2e

LIFECYCLE = (sys.executable, str(SERVERS_DIR / "lifecycle_server.py"))
WAIT = 30.0
NOT_FOUND = "no-such-binary-xyz"


def request(rid: int | str, method: str = "test/info") -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method}).encode() + b"\n"


def lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def ask(proc: RawProcess, rid: int | str) -> dict[str, Any]:
    """One request through the proxy; its answer's result (every earlier answer already read)."""
    before = len(lines(proc.stdout.data()))
    proc.write(request(rid))
    out = proc.stdout.wait(lambda b: len(lines(b)) > before and b.endswith(b"\n"), WAIT)
    got = lines(out)
    assert len(got) == before + 1, f"no answer to {rid!r}: stdout {describe(out)}"
    reply = json.loads(got[-1])
    assert reply["id"] == rid, reply
    result: dict[str, Any] = reply["result"]
    return result


def assert_gone(pid: int, what: str, timeout: float = 5.0) -> None:
    """`pid` is dead and reaped; a zombie is tolerated only under PID 1 (its reaping is init's
    job there, and it is dead), never under a process of ours."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    try:
        process.wait(timeout)  # not our child: psutil polls until the pid is released
        return
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        pass
    try:
        status, ppid = process.status(), process.ppid()
    except psutil.NoSuchProcess:
        return
    assert status == psutil.STATUS_ZOMBIE and ppid == 1, (
        f"{what} (pid {pid}) still exists {timeout} s after the proxy exited: "
        f"status {status}, parent {ppid}"
    )


def run_to_end(argv: list[str], *, stdin: bytes = b"", **kwargs: Any) -> tuple[int, bytes, bytes]:
    with RawProcess(argv, **kwargs) as proc:
        if stdin:
            proc.write(stdin)
        proc.close_stdin()
        status = proc.wait(WAIT)
        assert proc.stdout.join(WAIT) and proc.stderr.join(WAIT)
        return status, proc.stdout.data(), proc.stderr.data()


# -- 5. stderr ---------------------------------------------------------------------------------


def test_megabytes_of_stderr_never_block_the_relay_and_arrive_byte_for_byte() -> None:
    pre, per, count = 8 * 1024 * 1024, 64 * 1024, 32
    with RawProcess(proxy_argv([*LIFECYCLE, "flood", str(pre), str(per)])) as proc:
        # All requests at once: the server writes 8 MB before reading any, then 64 KiB before
        # each answer. A relay that stopped draining stderr would deadlock here.
        proc.write(b"".join(request(i) for i in range(count)))
        out = proc.stdout.wait(lambda b: b.count(b"\n") >= count, WAIT)
        replies = [json.loads(line) for line in lines(out)]
        assert [r["id"] for r in replies] == list(range(count)), describe(out)
        proc.close_stdin()
        assert proc.wait(WAIT) == 0
        assert proc.stderr.join(WAIT)
        expected = flood_bytes("pre", pre) + b"".join(
            flood_bytes(f"req{i}", per) for i in range(count)
        )
        err = proc.stderr.data()
        if err != expected:
            at = next(
                (i for i, (a, b) in enumerate(zip(err, expected, strict=False)) if a != b),
                min(len(err), len(expected)),
            )
            raise AssertionError(
                f"stderr differs from byte {at}: got {len(err)} bytes, expected {len(expected)}; "
                f"got {describe(err[at : at + 200])}, expected {describe(expected[at : at + 200])}"
            )
        assert b"helmet-otel:" not in err


def test_stderr_is_forwarded_while_the_server_runs() -> None:
    with RawProcess(proxy_argv([*LIFECYCLE, "stream"])) as proc:
        # The server writes the marker, then blocks reading stdin: nothing has been sent yet.
        err = proc.stderr.wait(lambda b: STREAM_MARKER in b, WAIT)
        assert err == STREAM_MARKER, describe(err)
        server = ask(proc, 1)["pid"]
        assert psutil.pid_exists(server) and proc.proc.poll() is None
        proc.close_stdin()
        assert proc.wait(WAIT) == 0
        assert proc.stderr.join(WAIT)
        assert proc.stderr.data() == STREAM_MARKER


# -- 6. environment, arguments, working directory -----------------------------------------------

SECRET_ENV = {
    "HELMET_FOO": "1",
    "OTEL_SERVICE_NAME": "x",
    "OTEL_EXPORTER_OTLP_HEADERS": "secret",
    "KEEP_ME": "yes",
    "LC_ALL": "C.UTF-8",  # no PEP 538 locale coercion adding LC_CTYPE on the way
}


def dump(options: tuple[str, ...], env: Mapping[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    with RawProcess(proxy_argv([*LIFECYCLE, "dump", *args], *options), env=env, cwd=cwd) as proc:
        result = ask(proc, "dump")
        proc.close_stdin()
        assert proc.wait(WAIT) == 0
        assert proc.stderr.join(WAIT)
        assert proc.stderr.data() == b""
        return result


@pytest.mark.parametrize("pass_otel", [False, True], ids=["default", "pass-otel-env"])
def test_the_server_gets_our_environment_minus_helmet_and_otel(
    pass_otel: bool, tmp_path: Path
) -> None:
    env = clean_env(SECRET_ENV)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    options = ("--pass-otel-env",) if pass_otel else ()
    got = dump(options, env, tmp_path)["env"]
    expected = {
        k: v
        for k, v in env.items()
        if not k.startswith("HELMET_") and (pass_otel or not k.startswith("OTEL_"))
    }
    assert got == expected
    assert got["KEEP_ME"] == "yes" and "HELMET_FOO" not in got
    if pass_otel:
        assert got["OTEL_SERVICE_NAME"] == "x"
        assert got["OTEL_EXPORTER_OTLP_HEADERS"] == "secret"
    else:
        assert not [k for k in got if k.startswith("OTEL_")]


def test_arguments_arrive_exactly(tmp_path: Path) -> None:
    args = (
        "two words",
        "  padded  ",
        "",
        "double \" and single ' quotes",
        "$HOME",
        "`id` $(id) ;|&*?",
        "first line\nsecond line",
        "héllo 世界",
        "--no-store",
        "--cwd",
        "/nonexistent",
        "--",
        "-",
    )
    got = dump((), clean_env(SECRET_ENV), tmp_path, *args)["argv"]
    assert got == ["dump", *args]


def test_the_working_directory_is_ours_or_cwd(tmp_path: Path) -> None:
    ours = tmp_path / "ours dir"
    theirs = tmp_path / "théirs"
    ours.mkdir()
    theirs.mkdir()
    env = clean_env(SECRET_ENV)
    assert dump((), env, ours)["cwd"] == os.path.realpath(ours)
    assert dump(("--cwd", str(theirs)), env, ours)["cwd"] == os.path.realpath(theirs)


# -- 7. lifecycle: signals, exit statuses, no zombie or orphan ------------------------------------


@pytest.mark.parametrize("grandchild", ["plain", "stubborn"])
@pytest.mark.parametrize(
    ("trigger", "on_eof", "status"),
    [
        ("eof", "exit", 0),  # the server exits on EOF and leaves its child behind
        ("eof", "stay", 128 + signal.SIGTERM),  # ignores EOF: SIGTERM after the grace period
        ("sigint", "stay", 128 + signal.SIGINT),  # forwarded SIGINT kills it
        ("sigterm", "stay", 128 + signal.SIGTERM),  # forwarded SIGTERM kills it
    ],
)
def test_no_zombie_or_orphan_is_left(
    trigger: str, on_eof: str, status: int, grandchild: str
) -> None:
    argv = proxy_argv([*LIFECYCLE, "family", grandchild, on_eof], "--grace", "0.5")
    with RawProcess(argv) as proc:
        info = ask(proc, 1)  # also proves the proxy's loop (and signal handling) is running
        server, child = info["pid"], info["grandchild"]
        assert isinstance(child, int) and psutil.Process(child).ppid() == server
        assert psutil.Process(server).ppid() == proc.proc.pid
        if trigger == "eof":
            proc.close_stdin()
        else:
            proc.proc.send_signal(signal.SIGINT if trigger == "sigint" else signal.SIGTERM)
        assert proc.wait(WAIT) == status
        assert_gone(server, "the server")
        assert_gone(child, f"the server's {grandchild} child")
        assert proc.stderr.join(WAIT)
        assert b"Traceback" not in proc.stderr.data(), describe(proc.stderr.data())


def test_a_server_that_exits_0_on_sigterm_makes_us_exit_0() -> None:
    with RawProcess(proxy_argv([*LIFECYCLE, "sigterm-exit0"], "--grace", "30")) as proc:
        server = ask(proc, 1)["pid"]
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert_gone(server, "the server")
        assert proc.stdout.data() == lines(proc.stdout.data())[0]  # nothing after the answer


def test_a_second_signal_kills_at_once() -> None:
    with RawProcess(proxy_argv([*LIFECYCLE, "deaf"], "--grace", "30")) as proc:
        server = ask(proc, 1)["pid"]
        proc.proc.send_signal(signal.SIGINT)
        got = b"lifecycle: got signal %d\n" % signal.SIGINT
        err = proc.stderr.wait(lambda b: got in b, WAIT)
        assert err == got, describe(err)  # forwarded, and ignored: the server is still there
        assert proc.proc.poll() is None and psutil.pid_exists(server)
        proc.proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 128 + signal.SIGKILL
        assert_gone(server, "the server")


# -- 8. a server that cannot be started ----------------------------------------------------------


def test_a_missing_command_is_one_clear_line_and_127() -> None:
    status, out, err = run_to_end(proxy_argv([NOT_FOUND]))
    assert status == 127
    assert out == b""
    expected = f"helmet-otel: MCP server could not be started: command not found: {NOT_FOUND}\n"
    assert err == expected.encode()


def test_our_stderr_line_about_the_command_is_scrubbed(tmp_path: Path) -> None:
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4"
    status, out, err = run_to_end(proxy_argv([str(tmp_path / secret)]))
    assert status == 127 and out == b""
    assert secret.encode() not in err
    assert (
        err
        == (
            f"helmet-otel: MCP server could not be started: command not found: {tmp_path}/"
            "[REDACTED:openai-key]\n"
        ).encode()
    )


def test_a_missing_command_answers_the_first_request_with_the_cause() -> None:
    init = (
        b'{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
        b'"capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}\n'
    )
    status, out, err = run_to_end(proxy_argv([NOT_FOUND]), stdin=init)
    message = f"MCP server could not be started: command not found: {NOT_FOUND}"
    assert status == 127
    assert len(lines(out)) == 1 and out.endswith(b"\n"), describe(out)
    assert json.loads(out) == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32000, "message": message},
    }
    assert err == f"helmet-otel: {message}\n".encode()


def test_a_non_executable_command_is_126(tmp_path: Path) -> None:
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    status, out, err = run_to_end(proxy_argv([str(script)]))
    assert status == 126
    assert out == b""
    expected = f"helmet-otel: MCP server could not be started: permission denied: {script}\n"
    assert err == expected.encode()


def test_a_missing_working_directory_is_one_clear_line() -> None:
    status, out, err = run_to_end(proxy_argv([*LIFECYCLE, "dump"], "--cwd", "/nonexistent-xyz"))
    assert status != 0
    assert out == b""
    assert err == (
        b"helmet-otel: MCP server could not be started: "
        b"working directory not found: /nonexistent-xyz\n"
    )
