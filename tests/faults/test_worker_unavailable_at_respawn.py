"""The telemetry worker dies and no new one can be started (EAGAIN under a process limit):
the traffic goes on without telemetry, one stderr line says so, and what could not be
recorded is counted. (Root ignores RLIMIT_NPROC: the limit is stood in for by a spawn that
fails as it would.)"""

from __future__ import annotations

import asyncio
import errno
import signal
import subprocess
from typing import Any

import orjson
import pytest

from helmet_otel.config import ProxyOptions
from helmet_otel.core.envelope import C2S, S2C
from helmet_otel.core.relay import Relay
from helmet_otel.core.session import Session
from helmet_otel.telemetry import feed as feed_module
from helmet_otel.telemetry.feed import TelemetryFeed


def test_no_new_worker_turns_telemetry_off_once_and_counts(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    real_popen = subprocess.Popen
    spawned: list[Any] = []

    def popen_once(*args: Any, **kwargs: Any) -> Any:
        if spawned:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        spawned.append(real_popen(*args, **kwargs))
        return spawned[0]

    monkeypatch.setattr(feed_module.subprocess, "Popen", popen_once)

    async def run() -> TelemetryFeed:
        feed = TelemetryFeed(ProxyOptions(no_store=True), {}, service_name="s")
        session = Session(transport="stdio")
        session_feed = feed.for_session(session)
        relay = Relay(session, [session_feed])
        session_feed.session_started(session, {})  # the feed now watches its worker
        died = asyncio.Event()
        original = feed._worker_died  # pyright: ignore[reportPrivateUsage]

        def worker_died() -> None:
            original()
            died.set()

        monkeypatch.setattr(feed, "_worker_died", worker_died)
        feed._unwatch()  # pyright: ignore[reportPrivateUsage]
        feed._watch()  # pyright: ignore[reportPrivateUsage]  # (with the patched callback)
        spawned[0].send_signal(signal.SIGKILL)
        await asyncio.wait_for(died.wait(), 10)
        for i in range(5):  # the traffic goes on; its records are counted, not kept
            call = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "t"}}
            relay.forwarded(relay.route(C2S, [orjson.dumps(call) + b"\n"]))
            answer: dict[str, object] = {"jsonrpc": "2.0", "id": i, "result": {}}
            relay.forwarded(relay.route(S2C, [orjson.dumps(answer) + b"\n"]))
        await asyncio.wait_for(feed.close(), 2)
        return feed

    feed = asyncio.run(run())
    assert spawned[0].returncode == -signal.SIGKILL  # reaped
    err = capfd.readouterr().err
    assert err.count("telemetry is off") == 1, err
    assert "the telemetry worker died (signal 9) and no new one starts " in err, err
    assert "(Resource temporarily unavailable)" in err, err
    at_death = int(err.split("; ")[1].split()[0])  # "...; N records were lost. ..."
    # then five calls of two messages each, and the close frame
    assert feed.lost == at_death + 10 + 1, (feed.lost, err)
