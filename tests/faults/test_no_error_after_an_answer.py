"""The server exits while its answers still wait for a slow client: every request gets the
server's answer, exactly once, and no error the proxy made up for it (the proxy used to give
the client 1 s, then send -32000 for requests whose answers were still queued, and then the
real answers)."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil

from tests.e2e.helpers import REPO_ROOT, SERVERS_DIR, clean_env, proxy_argv
from tests.faults.helpers import poll

REQUESTS = 100
BIG = 2 * 1024 * 1024  # the first answer: more than the proxy buffers toward the client


def test_answers_queued_toward_a_slow_client_are_not_preempted_by_errors() -> None:
    server = [sys.executable, str(SERVERS_DIR / "burst_then_exit.py"), str(REQUESTS), str(BIG)]
    requests = b"".join(
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"t"}}\n' % i
        for i in range(REQUESTS)
    )
    proxy = subprocess.Popen(
        proxy_argv(server), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=clean_env(), cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert proxy.stdin is not None
        proxy.stdin.write(requests)
        proxy.stdin.flush()
        (server_process,) = poll(
            lambda: psutil.Process(proxy.pid).children(), lambda c: len(c) == 1, 10, "server"
        )
        poll(server_process.is_running, lambda running: not running, 10, "the server exits")
        # The slow client reads nothing for longer than the proxy once waited after the
        # server's exit (1 s): the proxy cannot finish meanwhile, its answers are not read.
        try:
            proxy.wait(1.5)
        except subprocess.TimeoutExpired:
            pass
        else:
            raise AssertionError("the proxy exited before its answers were read")
        proxy.stdin.close()
        proxy.stdin = None
        out, _ = proxy.communicate(timeout=20)
    finally:
        proxy.kill()
        proxy.wait()
    assert proxy.returncode == 3  # the server's status

    answers = [json.loads(line) for line in out.splitlines()]
    assert [a for a in answers if "error" in a] == []
    assert sorted(a["id"] for a in answers) == list(range(REQUESTS))
