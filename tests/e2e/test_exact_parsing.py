"""Messages a fast JSON parser refuses or misreads are still classified exactly.

A server answer holding ``1e400`` or a lone surrogate escape is valid JSON that orjson refuses,
and orjson reads an integer id beyond 64 bits as a float. Each is still the answer to its
request: the client gets exactly one answer per request (no second, synthesized error when the
server exits), and the store shows each response matched to its request.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from tests.e2e.helpers import REPO_ROOT, RawProcess, clean_env, proxy_argv

ODD_SERVER = (sys.executable, str(REPO_ROOT / "tests" / "servers" / "odd_answers.py"))
BIG_ID = 2**64 + 1

REQUESTS = [
    (b"-7", b"odd/huge", b'{"big":1e400}'),
    (str(BIG_ID).encode(), b"odd/surrogate", b'{"text":"\\ud834"}'),
    (b'"s"', b"odd/surrogate", b'{"text":"\\ud834"}'),
    (b"18446744073709551616", b"ping", b"{}"),  # 2**64: one past what orjson reads as an int
]


def request_line(raw_id: bytes, method: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":%s,"method":"%s"}\n' % (raw_id, method)


def answer_line(raw_id: bytes, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":%s,"result":%s}\n' % (raw_id, result)


def ndjson(argv: list[str]) -> list[dict[str, object]]:
    with RawProcess(argv, env=clean_env()) as viewer:
        assert viewer.wait(timeout=30) == 0, viewer.stderr.data()()
        viewer.stdout.join(5)
        return [orjson.loads(line) for line in viewer.stdout.data().splitlines()]


def test_odd_answers_are_one_answer_each_and_matched_in_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    argv = proxy_argv(ODD_SERVER, "--store", str(store), store=True)
    expected = b"".join(answer_line(raw_id, result) for raw_id, _, result in REQUESTS)
    with RawProcess(argv, env=clean_env()) as proxy:
        proxy.write(b"".join(request_line(raw_id, method) for raw_id, method, _ in REQUESTS))
        proxy.stdout.wait(lambda data: data.count(b"\n") == len(REQUESTS), timeout=30)
        proxy.close_stdin()
        assert proxy.wait(timeout=30) == 0
        proxy.stdout.join(5)
        # byte for byte, and nothing after: no synthesized -32000 for an "unanswered" request
        assert proxy.stdout.data() == expected
    base = [sys.executable, "-m", "helmet_otel"]
    records = ndjson([*base, "logs", "--store", str(store), "--format", "ndjson"])
    events = [r["event"] for r in records]
    assert "helmet.error" not in events, records
    responses = [r for r in records if r["event"] == "helmet.response"]
    got = []
    for record in responses:
        attrs = record["attributes"]
        assert isinstance(attrs, dict)
        assert isinstance(attrs["helmet.latency_ms"], float | int)
        got.append((attrs["jsonrpc.request.id"], attrs["mcp.method.name"]))
    assert got == [
        ("-7", "odd/huge"),
        (str(BIG_ID), "odd/surrogate"),
        ("s", "odd/surrogate"),
        ("18446744073709551616", "ping"),
    ]
    sessions = ndjson([*base, "sessions", "--store", str(store), "--format", "ndjson"])
    assert [(s["requests"], s["errors"], s["status"]) for s in sessions] == [(4, 0, "ended")]
