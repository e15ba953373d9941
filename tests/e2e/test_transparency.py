"""The proxy is byte-transparent on stdio: raw bytes in, the same raw bytes out, both ways.

Telemetry is off in these tests (`--no-store`, no OTEL_* in the environment), so nothing may
change a message on the way: no `_meta` injection, no re-serialization, no line-length limit.

Each test drives `tests/servers/recording_upstream.py`, which appends every byte it receives to a
file before answering, directly and through the proxy, and compares bytes exactly.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from tests.e2e.helpers import (
    DEMO_SERVER,
    MISBEHAVING,
    RECORDING_UPSTREAM,
    RawProcess,
    describe,
    proxy_argv,
)

pytestmark = pytest.mark.e2e

BIG = 50 * 1024 * 1024
WAIT = 30.0


def dumps(value: object) -> bytes:
    """The recording upstream's serialization (compact, UTF-8, not ASCII-escaped)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def sync_request(tag: str) -> tuple[bytes, bytes]:
    """A request and the exact answer line that proves everything before it was recorded."""
    request = {"jsonrpc": "2.0", "id": f"sync-{tag}", "method": "test/sync"}
    reply = {"jsonrpc": "2.0", "id": f"sync-{tag}", "result": {"method": "test/sync"}}
    return dumps(request) + b"\n", dumps(reply) + b"\n"


# Client->server lines that a transparent proxy must deliver byte for byte.
CLIENT_LINES: list[bytes] = [
    # A legacy handshake, with odd spacing and key order that re-serialization would change.
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{"sampling":{}},"clientInfo":{"name":"raw","version":"0"}}}\n',
    b'{ "method" : "notifications/initialized" , "jsonrpc" : "2.0" }\n',
    # Not JSON at all, and a blank line.
    b"this is not json {\n",
    b"\n",
    # A JSON-RPC batch (2025-03-26 peers).
    b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"},'
    b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}},'
    b'{"jsonrpc":"2.0","id":"b-2","method":"ping"}]\n',
    # Unknown method, unknown fields everywhere, a duplicated key.
    b'{"jsonrpc":"2.0","id":2,"method":"vendor/frobnicate","params":{"x":[1,2.50,null,true],'
    b'"_meta":{"com.example/tag":"t"}},"extension":{"k":"v"},"extension":{"k":"w"}}\n',
    # Ids: string, int, negative, bigger than 64 bits, fractional, and reused once answered.
    b'{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"echo"}}\n',
    b'{"jsonrpc":"2.0","id":-7,"method":"tools/call","params":{"name":"echo"}}\n',
    b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}\n',
    b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}\n',
    b'{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"echo"}}\n',
    # Unicode: raw UTF-8 (emoji, CJK, U+2028/U+2029 line separators) and escapes.
    '{"jsonrpc":"2.0","id":"ünï","method":"tools/call","params":{"name":"echo",'
    '"arguments":{"text":"héllo 👋 世界 \u2028 \u2029 end"}}}\n'.encode(),
    b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo",'
    b'"arguments":{"text":"\\u00e9\\ud83d\\udc4b\\u0000\\n\\t"}}}\n',
    # A CRLF line ending, and bytes that are not UTF-8.
    b'{"jsonrpc":"2.0","id":4,"method":"ping"}\r\n',
    b"\xff\xfe not utf-8 \xc3\x28\n",
    # A client response to a server request, and a cancellation for an unknown id.
    b'{"jsonrpc":"2.0","id":"srv-9","result":{"role":"assistant","model":"m",'
    b'"content":{"type":"text","text":"hi"}}}\n',
    b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":404}}\n',
]


def big_request(size: int = BIG) -> bytes:
    """One tools/call line of about `size` bytes."""
    head = b'{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"echo",'
    head += b'"arguments":{"text":"'
    tail = b'"}}}\n'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def exchange(
    argv: Sequence[str], lines: Sequence[bytes], record: Path, tag: str
) -> tuple[bytes, bytes, bytes]:
    """Send `lines` and a sync request; return (stdout, recorded bytes, stderr) after exit."""
    sync, sync_reply = sync_request(tag)
    with RawProcess(argv) as proc:
        sent = b"".join(lines) + sync
        proc.write(sent, timeout=WAIT)
        stdout = proc.stdout.wait(lambda out: out.endswith(sync_reply), WAIT)
        assert stdout.endswith(sync_reply), f"no answer to the sync request: {describe(stdout)}"
        recorded = record.read_bytes()
        assert recorded == sent, (
            f"the server received {describe(recorded)}\nbut the client sent {describe(sent)}"
        )
        proc.close_stdin()
        status = proc.wait()
        assert proc.stdout.join(WAIT)
        final = proc.stdout.data()
        assert final == stdout, f"stdout grew after stdin closed: {describe(final[len(stdout) :])}"
        assert status == 0, f"exit status {status}; stderr: {proc.stderr.data()!r}"
        return stdout, recorded, proc.stderr.data()


def upstream(record: Path) -> list[str]:
    return [*RECORDING_UPSTREAM, str(record)]


def test_client_lines_reach_the_server_unchanged(tmp_path: Path) -> None:
    direct_record = tmp_path / "direct.bin"
    proxied_record = tmp_path / "proxied.bin"

    direct_out, _, _ = exchange(upstream(direct_record), CLIENT_LINES, direct_record, "d")
    proxied_out, _, _ = exchange(
        proxy_argv(upstream(proxied_record)), CLIENT_LINES, proxied_record, "p"
    )

    # The answers the client got are the server's, byte for byte (only the sync id differs).
    assert proxied_out.replace(b'"sync-p"', b'"sync-d"') == direct_out
    # Spot checks on the server's answers as they crossed the proxy.
    assert b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"result":' in proxied_out
    assert '{"jsonrpc":"2.0","id":"ünï","result":{"method":"tools/call"}}\n'.encode() in proxied_out
    assert (
        proxied_out.count(b'{"jsonrpc":"2.0","id":"abc","result":{"method":"tools/call"}}\n') == 2
    )


def test_a_50_mb_client_line_reaches_the_server_unchanged(tmp_path: Path) -> None:
    record = tmp_path / "record.bin"
    line = big_request()
    stdout, recorded, _ = exchange(proxy_argv(upstream(record)), [line], record, "big")
    assert len(recorded) == len(line) + len(sync_request("big")[0])
    assert stdout == (
        b'{"jsonrpc":"2.0","id":"big","result":{"method":"tools/call"}}\n' + sync_request("big")[1]
    )


# Server->client lines that a transparent proxy must deliver byte for byte.
SERVER_LINES: list[bytes] = [
    b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}\n',
    b'{"jsonrpc":"2.0","method":"vendor/event","params":{"unknown":{"deep":[1,{"x":null}]}},"x":1}\n',
    b"server says: not json\n",
    b'[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":'
    b'{"code":-32601,"message":"nope"}}]\n',
    b'{"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{"messages":[],'
    b'"maxTokens":5}}\n',
    b'{"jsonrpc":"2.0","id":0,"method":"roots/list"}\n',
    b'{"jsonrpc":"2.0","id":999,"error":{"code":-32000,"message":"unrequested","data":{"a":1}}}\n',
    '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t",'
    '"progress":0.5,"message":"ünïcødé 👋 \u2028 done"}}\n'.encode(),
    b'{"result":{},"id":12345678901234567890123,"jsonrpc":"2.0"}\r\n',
    b"\xff\xfe\n",
]


def emit(
    argv: Sequence[str], script: bytes, script_path: Path, record: Path
) -> tuple[bytes, bytes]:
    """Have the upstream write `script` to its stdout; return (stdout, stderr) after exit."""
    script_path.write_bytes(script)
    params = {"file": str(script_path)}
    request = {"jsonrpc": "2.0", "id": "emit-1", "method": "test/emit", "params": params}
    reply = dumps({"jsonrpc": "2.0", "id": "emit-1", "result": {"method": "test/emit"}}) + b"\n"
    with RawProcess(argv) as proc:
        proc.write(dumps(request) + b"\n")
        stdout = proc.stdout.wait_len(len(script) + len(reply), WAIT)
        assert stdout == script + reply, (
            f"the client received {describe(stdout)}\nbut the server sent {describe(script + reply)}"
        )
        # Answer the server's requests; they must reach it unchanged too.
        answers = (
            b'{"jsonrpc":"2.0","id":"srv-1","result":{"role":"assistant","model":"m",'
            b'"content":{"type":"text","text":"ok"}}}\n'
            b'{"jsonrpc":"2.0","id":0,"result":{"roots":[]}}\n'
        )
        sync, sync_reply = sync_request("emit")
        proc.write(answers + sync)
        stdout = proc.stdout.wait(lambda out: out.endswith(sync_reply), WAIT)
        assert stdout == script + reply + sync_reply, describe(stdout)
        assert record.read_bytes() == dumps(request) + b"\n" + answers + sync
        proc.close_stdin()
        status = proc.wait()
        assert proc.stdout.join(WAIT)
        assert proc.stdout.data() == stdout, "stdout grew after stdin closed"
        assert status == 0, f"exit status {status}; stderr: {proc.stderr.data()!r}"
        return stdout, proc.stderr.data()


def test_server_lines_reach_the_client_unchanged(tmp_path: Path) -> None:
    record = tmp_path / "record.bin"
    emit(proxy_argv(upstream(record)), b"".join(SERVER_LINES), tmp_path / "script.bin", record)


def test_a_50_mb_server_line_reaches_the_client_unchanged(tmp_path: Path) -> None:
    record = tmp_path / "record.bin"
    line = b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"'
    line += b"y" * (BIG - len(line) - 4) + b'"}}\n'
    script = SERVER_LINES[0] + line + SERVER_LINES[1]
    emit(proxy_argv(upstream(record)), script, tmp_path / "script.bin", record)


def test_a_last_line_without_newline_is_delivered_at_eof(tmp_path: Path) -> None:
    record = tmp_path / "record.bin"
    sync, sync_reply = sync_request("eof")
    partial = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    with RawProcess(proxy_argv(upstream(record))) as proc:
        proc.write(sync)
        proc.stdout.wait(lambda out: out.endswith(sync_reply), WAIT)
        proc.write(partial)
        proc.close_stdin()
        status = proc.wait()
        assert status == 0, proc.stderr.data()
        assert proc.stdout.join(WAIT)
        assert proc.stdout.data() == sync_reply
    assert record.read_bytes() == sync + partial


def test_the_run_form_relays_the_same_bytes(tmp_path: Path) -> None:
    record = tmp_path / "record.bin"
    argv = [sys.executable, "-m", "helmet_otel", "run", "--no-store", "--", *upstream(record)]
    stdout, recorded, _ = exchange(argv, CLIENT_LINES[:6], record, "run")
    assert recorded == b"".join(CLIENT_LINES[:6]) + sync_request("run")[0]
    assert stdout.startswith(b'{"jsonrpc":"2.0","id":0,"result":{"method":"initialize"}}\n')


# The demo server over raw stdio: the proxied session must be byte-identical to a direct one.
DEMO_LINES: list[bytes] = [
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
    b'"capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}\n',
    b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
    b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}\n',
    b'{"jsonrpc":"2.0","id":"three","method":"tools/call","params":{"name":"add",'
    b'"arguments":{"a":2,"b":40}}}\n',
    b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"slow",'
    b'"arguments":{"seconds":0.05,"steps":2},"_meta":{"progressToken":"p-4"}}}\n',
]
DEMO_LAST_REPLY = (
    b'{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"slept 0.05 seconds"}]}}\n'
)


def demo_session(argv: Sequence[str]) -> tuple[bytes, bytes]:
    with RawProcess(argv) as proc:
        proc.write(b"".join(DEMO_LINES))
        stdout = proc.stdout.wait(lambda out: out.endswith(DEMO_LAST_REPLY), WAIT)
        assert stdout.endswith(DEMO_LAST_REPLY), describe(stdout)
        proc.close_stdin()
        assert proc.wait() == 0
        assert proc.stdout.join(WAIT) and proc.stderr.join(WAIT)
        return proc.stdout.data(), proc.stderr.data()


def test_a_demo_server_session_is_byte_identical_through_the_proxy() -> None:
    direct_out, direct_err = demo_session(DEMO_SERVER)
    proxied_out, proxied_err = demo_session(proxy_argv(DEMO_SERVER))
    assert proxied_out == direct_out
    assert direct_err == b"demo server ready\n"
    # The wrapped server's stderr is forwarded to ours.
    assert b"demo server ready\n" in proxied_err


# Where the proxy changes the stream on purpose: the server goes away under the client.


def server_pid(proc: RawProcess) -> int:
    err = proc.stderr.wait(lambda data: re.search(rb"pid (\d+)\n", data) is not None, WAIT)
    match = re.search(rb"pid (\d+)\n", err)
    assert match is not None, f"the server's stderr was not forwarded: {err!r}"
    return int(match.group(1))


def test_a_dying_server_fails_pending_requests_and_its_status_becomes_ours() -> None:
    with RawProcess(proxy_argv([*MISBEHAVING, "plain"])) as proc:
        proc.write(
            b'{"jsonrpc":"2.0","id":"h-1","method":"test/hang"}\n'
            b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
        )
        proc.stdout.wait(lambda out: out.endswith(b'{"jsonrpc":"2.0","id":1,"result":{}}\n'), WAIT)
        proc.write(b'{"jsonrpc":"2.0","id":2,"method":"test/exit","params":{"code":3}}\n')
        assert proc.wait() == 3
        assert proc.stdout.join(WAIT)
        lines = proc.stdout.data().splitlines()
    assert lines[0] == b'{"jsonrpc":"2.0","id":1,"result":{}}'
    errors = {json.dumps(m["id"]): m["error"]["code"] for m in map(json.loads, lines[1:])}
    assert errors == {'"h-1"': -32000, "2": -32000}


def test_a_server_that_ignores_eof_and_sigterm_is_killed() -> None:
    with RawProcess(proxy_argv([*MISBEHAVING, "stubborn"], "--grace", "0.2")) as proc:
        pid = server_pid(proc)
        proc.write(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
        proc.stdout.wait(lambda out: out.endswith(b"\n"), WAIT)
        proc.close_stdin()
        assert proc.wait() == 128 + signal.SIGKILL
        assert proc.stdout.join(WAIT)
        assert proc.stdout.data() == b'{"jsonrpc":"2.0","id":1,"result":{}}\n'
    assert not psutil.pid_exists(pid), "the server outlived the proxy"


def test_sigterm_is_forwarded_to_the_server() -> None:
    with RawProcess(proxy_argv([*MISBEHAVING, "on-sigterm"])) as proc:
        server_pid(proc)  # started, and its signal handler is installed
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait() == 42
        assert proc.stdout.join(WAIT)
        assert proc.stdout.data() == (
            b'{"jsonrpc":"2.0","method":"test/signal","params":{"signal":15}}\n'
        )
