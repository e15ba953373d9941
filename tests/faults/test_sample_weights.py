"""Sample weights do not under-count: while the governor traces one message in ``every``, a
sample shed because the buffer is full (``relay_queue_full``) counts with the weight it stood
for, so the weighted records plus ``relay_queue_full`` add up to the traffic, for a
server-to-client notification burst and for calls (request and response alike)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from helmet_otel.core.envelope import Direction
from helmet_otel.telemetry import frames
from helmet_otel.telemetry.batching import BatchQueue, BatchSettings
from tests.telemetry.test_feed_unit import (
    call,
    line,
    messages,
    open_session,
    response,
    route,
)

EVERY = 4


def _weighted(got: list[frames.Frame], kind: str) -> int:
    return sum(m.weight for m in messages(got) if m.summary.kind == kind)


def _dropped(got: list[frames.Frame], reason: str) -> int:
    return sum(f.count for f in got if isinstance(f, frames.Dropped) and f.reason == reason)


def test_a_notification_burst_adds_up_when_samples_are_lost(make_feed: Any) -> None:
    feed = make_feed()
    _, _, relay = open_session(feed)
    feed.every = EVERY
    note = line({"jsonrpc": "2.0", "method": "notifications/message",
                 "params": {"level": "info", "data": "x"}})  # fmt: skip
    route(relay, Direction.S2C, [note] * 40)  # room: one in four recorded, standing for four
    feed._flush()  # pyright: ignore[reportPrivateUsage]
    head = bytes(feed.backlog)
    feed.backlog += b"x" * feed.options.telemetry_buffer
    route(relay, Direction.S2C, [note] * 60)  # the worker is behind: the samples are lost
    feed.backlog.clear()  # (it caught up)
    feed.backlog += head
    got = feed.frames()
    assert _weighted(got, "notification") == 40
    assert _dropped(got, "relay_queue_full") == 60
    assert _weighted(got, "notification") + _dropped(got, "relay_queue_full") == 100


def test_calls_add_up_when_samples_are_lost(make_feed: Any) -> None:
    feed = make_feed()
    _, _, relay = open_session(feed)
    feed.every = EVERY
    feed.backlog += b"x" * feed.options.telemetry_buffer
    route(relay, Direction.C2S, [line(call(i)) for i in range(8)])
    route(relay, Direction.S2C, [response(i) for i in range(8)])
    feed.backlog.clear()
    got = feed.frames()
    # two samples of four calls each lost: their requests and their responses count 4 each
    assert _dropped(got, "relay_queue_full") == 2 * EVERY + 2 * EVERY
    assert _weighted(got, "request") + _weighted(got, "response") == 0


def _itself(weight: int) -> int:
    return weight


def test_a_sinks_queue_counts_a_dropped_sample_with_its_weight() -> None:
    """The worker's own queues count what a dropped record stood for, like the relay."""
    drops: Counter[str] = Counter()
    queue: BatchQueue[int] = BatchQueue(
        "store_logs", lambda batch: False, lambda r, n: drops.update({r: n}),
        BatchSettings(2, 10, 60), weight=_itself,
    )  # fmt: skip
    for weight in (EVERY, 1, EVERY):  # the queue holds two: the oldest (a sample of 4) goes
        queue.put(weight)
    assert drops == {"store_logs_queue_full": EVERY}
    assert queue.drain(time.monotonic()) == 1 + EVERY  # what was left, weighted
