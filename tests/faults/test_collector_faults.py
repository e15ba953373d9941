"""A dead, hung or refusing (429, 503) collector adds at most a second to the proxy's exit
after the client closes stdin; what it did not take is in the store, and counted there and on
stderr."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from helmet_otel.store.query import Reader
from tests.e2e.helpers import clean_env
from tests.faults.helpers import count, proxy_close_dropped, recorded_proxy
from tests.otlp_receiver import OTLPReceiver, dead_endpoint

CALLS = 20
EXIT_BUDGET_S = 1.0  # the bound on what a collector fault may add to the exit


@contextlib.contextmanager
def collector(fault: str) -> Generator[str]:
    if fault == "dead":
        yield dead_endpoint()
        return
    options = {"hung": {"delay": 60.0}, "429": {"status": 429}, "503": {"status": 503}}[fault]
    with OTLPReceiver(**options) as receiver:  # pyright: ignore[reportArgumentType]
        yield receiver.endpoint


@pytest.mark.parametrize("fault", ["dead", "hung", "429", "503"])
def test_a_collector_fault_adds_at_most_a_second_to_exit(fault: str, tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    with collector(fault) as endpoint:
        env = clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        with recorded_proxy(store, CALLS, env) as proxy:
            started = time.monotonic()
            proxy.close_stdin()
            assert proxy.wait(10) == 0
            elapsed = time.monotonic() - started
            stderr = proxy.stderr.data().decode()

    assert elapsed <= EXIT_BUDGET_S, f"{fault}: exit took {elapsed:.2f} s\n{stderr}"
    # nothing lost that is not counted: the store has every record, and the drops are said
    with Reader.open(store) as reader:
        (session,) = reader.sessions()
    assert session.status == "ended"
    assert count(store, "helmet.request") == CALLS + 1
    dropped = proxy_close_dropped(store)
    assert dropped and all(n > 0 for n in dropped.values()), dropped
    summary = [line for line in stderr.splitlines() if "telemetry dropped" in line]
    assert summary == [
        f"helmet-otel: telemetry dropped {sum(dropped.values())} records in all ("
        + ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()))
        + "); see helmet.telemetry.dropped and helmet.proxy_close"
    ], stderr
