"""Editing the policy file takes effect in a running proxy; a broken file keeps the last good
rules and says so once; every load is a helmet.configuration record."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
import pytest

from helmet_otel import semconv as sc
from tests.e2e.helpers import RECORDING_UPSTREAM, RawProcess, clean_env
from tests.telemetry.helpers import INIT, line

pytestmark = [pytest.mark.e2e]

DENY_ECHO = '[[rule]]\nid = "no-echo"\ntools = ["echo"]\naction = "deny"\n'
DENIED = (b'{"jsonrpc":"2.0","id":%d,"error":{"code":-32001,"message":"Tool access denied by '
          b'policy","data":{"type":"policy_block","policy_id":"no-echo"}}}\n')  # fmt: skip


def call(msg_id: int) -> bytes:
    return line({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call",
                 "params": {"name": "echo", "arguments": {"message": "hi"}}})  # fmt: skip


def test_hot_reload_and_a_broken_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("# nothing yet\n")
    store = tmp_path / "store.db"
    argv = [sys.executable, "-m", "helmet_otel", "--store", str(store), "--policy", str(policy),
            *RECORDING_UPSTREAM, str(tmp_path / "record")]  # fmt: skip
    with RawProcess(argv, env=clean_env()) as proxy:
        answers: list[bytes] = []

        def ask(message: bytes) -> bytes:
            proxy.write(message)
            data = proxy.stdout.wait(lambda d: d.count(b"\n") > len(answers), timeout=20)
            answers.append(data.splitlines(keepends=True)[len(answers)])
            return answers[-1]

        ask(line(INIT))
        assert b'"result"' in ask(call(2))
        policy.write_text(DENY_ECHO)
        changed = time.monotonic()
        msg_id = 3
        while b'"result"' in ask(call(msg_id)):  # every call is a real round trip
            assert time.monotonic() - changed < 5, "the edit did not take effect"
            msg_id += 1
        assert answers[-1] == DENIED % msg_id  # exactly the policy error, byte for byte
        assert time.monotonic() - changed < 2
        policy.write_text('[[rule]]\nid = "broken"\ntools = "echo"\naction = "allow"\nx = 1\n')
        stderr_said = lambda d: b"keeping the last good rules" in d  # noqa: E731
        broken_at = time.monotonic()
        while not stderr_said(proxy.stderr.data()):
            msg_id += 1
            assert ask(call(msg_id)) == DENIED % msg_id  # the last good rules still decide
            assert time.monotonic() - broken_at < 5
        for _ in range(3):  # more calls: no more notes
            msg_id += 1
            assert ask(call(msg_id)) == DENIED % msg_id
        proxy.close_stdin()
        assert proxy.wait(timeout=20) == 0
        notes = [n for n in proxy.stderr.data().splitlines() if b"policy file" in n]
    assert notes == [
        f"helmet-otel: policy file {policy} reloaded (1 rules, enforce)".encode(),
        f"helmet-otel: policy file {policy}:5: unknown rule key 'x' (expected one of id, tools, "
        "methods, servers, clients, when, annotations, action, priority, hide, description); "
        "keeping the last good rules".encode(),
    ]
    received = (tmp_path / "record").read_bytes()
    denied = [i for i, a in enumerate(answers, 1) if b'"error"' in a]
    assert denied and all(b'"id":%d,' % i not in received for i in denied)  # never forwarded
    assert all(b'"id":%d,' % i in received for i in range(2, denied[0]))
    argv = [sys.executable, "-m", "helmet_otel", "logs", "--store", str(store), "--event",
            "configuration", "--format", "ndjson"]  # fmt: skip
    with RawProcess(argv, env=clean_env()) as viewer:
        assert viewer.wait(timeout=30) == 0
        viewer.stdout.join(5)
        records = [orjson.loads(x) for x in viewer.stdout.data().splitlines()]
    policies = [r["body"]["policy"]["rules"] for r in records
                if isinstance(r["body"].get("policy"), dict)]  # fmt: skip
    assert policies == [[], [{"id": "no-echo", "action": "deny", "priority": 0}]]
    assert all(r["event"] == sc.EVENT_CONFIGURATION for r in records)
