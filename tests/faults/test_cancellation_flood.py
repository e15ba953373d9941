"""A flood of ``notifications/cancelled`` while the telemetry worker is stalled does not grow
the proxy's memory: only the first cancellation of a traced call is kept whatever the buffer
holds; the rest are shed like any message when the buffer is full, and counted."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil

from helmet_otel.telemetry.governor import MAX_EVERY
from tests.e2e.helpers import MISBEHAVING, RawProcess, clean_env, proxy_argv
from tests.faults.helpers import INITIALIZE, count, poll, proxy_close_dropped, rows, workers

FLOOD = 30_000
REASON = "x" * 4000  # 4 KB a cancellation: 120 MB in all
GROWTH_LIMIT = 40 * 1024 * 1024  # the relay's buffers (4 MiB each way, 4 MiB for telemetry)
# and what the allocator keeps; unbounded, the flood took 140 MiB


def test_a_cancellation_flood_is_bounded_and_counted(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    argv = proxy_argv([*MISBEHAVING, "plain"], "--store", str(store), store=True)
    hang = b'{"jsonrpc":"2.0","id":"h","method":"test/hang"}\n'
    cancel = (
        json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": "h", "reason": REASON}}).encode() + b"\n"
    )  # fmt: skip
    with RawProcess(argv, env=clean_env()) as proxy:
        proxy.write(INITIALIZE + hang)
        proxy.stdout.wait(lambda b: b.count(b"\n") >= 1, 20)
        poll(lambda: count(store, "helmet.request"), lambda n: n == 2, 20, "stored")
        (worker,) = workers(proxy.proc.pid)
        relay = psutil.Process(proxy.proc.pid)
        before = relay.memory_info().rss
        worker.send_signal(signal.SIGSTOP)
        for _ in range(FLOOD // 1000):
            proxy.write(cancel * 1000)
        proxy.write(b'{"jsonrpc":"2.0","id":"last","method":"ping"}\n')
        proxy.stdout.wait(lambda b: b'"last"' in b, 30)  # the flood went through the relay
        growth = relay.memory_info().rss - before
        worker.send_signal(signal.SIGCONT)
        proxy.close_stdin()
        assert proxy.wait(20) == 0

    assert growth < GROWTH_LIMIT, f"the proxy grew by {growth / 2**20:.1f} MiB"
    weighted = rows(
        store,
        "SELECT count(*), sum(coalesce(json_extract(attrs, '$.\"helmet.sample.weight\"'), 1)) "
        "FROM logs WHERE method = 'notifications/cancelled' OR request_id = 'last'",
    )[0]
    dropped = proxy_close_dropped(store)
    assert set(dropped) <= {"relay_queue_full", "relay_busy"}, dropped
    assert dropped["relay_queue_full"] > 0
    # every message after the stall (the flood, the ping and its answer) is recorded, with
    # the weight it stands for while the relay samples, or lost and counted with that weight:
    # they add up to the traffic within the sampling's resolution (where the rate changes, a
    # sample stands for the new rate)
    total = int(weighted[1] or 0) + dropped["relay_queue_full"]  # pyright: ignore[reportArgumentType]
    assert abs(total - (FLOOD + 2)) <= 2 * MAX_EVERY, (weighted, dropped)
