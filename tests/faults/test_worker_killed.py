"""The telemetry worker is killed while the proxy runs: the relay notices at once, reaps it,
counts what it never took, says so once, and a new worker records the rest of the session,
which ends as ``ended``."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from helmet_otel.store.query import Reader
from tests.faults.helpers import (
    call_lines,
    count,
    poll,
    proxy_close_dropped,
    recorded_proxy,
    unread_in_stdin,
    workers,
)

DIED = b"helmet-otel: the telemetry worker died (signal 9)"


def test_a_killed_worker_is_replaced_and_its_loss_counted(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    with recorded_proxy(store, 100) as proxy:
        (first,) = workers(proxy.proc.pid)
        first.send_signal(signal.SIGSTOP)  # behind: what follows waits in its pipe
        proxy.write(call_lines(101, 100))
        proxy.stdout.wait(lambda b: b.count(b"\n") >= 201, 20)
        poll(lambda: unread_in_stdin(first.pid), lambda n: n > 0, 10, "records in its pipe")
        first.send_signal(signal.SIGKILL)

        err = proxy.stderr.wait(lambda b: DIED in b, 10)
        assert DIED in err, err
        poll(lambda: psutil.pid_exists(first.pid), lambda alive: not alive, 5, "reaped")
        (second,) = poll(lambda: workers(proxy.proc.pid), lambda w: len(w) == 1, 5, "a new one")
        assert second.pid != first.pid

        proxy.write(call_lines(201, 100))
        proxy.stdout.wait(lambda b: b.count(b"\n") >= 301, 20)
        proxy.close_stdin()
        assert proxy.wait(20) == 0
        stderr = proxy.stderr.data()

    assert stderr.count(b"telemetry worker died") == 1, stderr
    line = next(x for x in stderr.splitlines() if DIED in x)
    lost = int(line.split(b"; ")[1].split()[0])
    with Reader.open(store) as reader:
        (session,) = reader.sessions()
    assert session.status == "ended", session
    assert count(store, "helmet.session_start") == 1
    assert count(store, "helmet.session_end") == 1
    # every call's request and response is either in the store or counted as lost
    responses = count(store, "helmet.response")
    requests = count(store, "helmet.request")
    # `lost` counts every record in the dead worker's pipe: besides the calls' requests and
    # responses that may be a session record (a server stderr line, a session-info frame) that
    # was in flight, hence the small allowance (seen once in CI: 201 lost with 200 calls' worth)
    assert 2 * 301 <= requests + responses + lost <= 2 * 301 + 2, (requests, responses, lost)
    assert lost > 0  # the 100 calls sent while the first worker was stopped: in its pipe
    assert proxy_close_dropped(store) == ({"worker_lost": lost} if lost else {})
