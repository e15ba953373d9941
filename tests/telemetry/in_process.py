"""A `Recorder` in this process, fed frames by the test, its records kept as the sinks would
get them."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from helmet_otel import semconv as sc
from helmet_otel.config import ProxyOptions
from helmet_otel.telemetry import frames as fr
from helmet_otel.telemetry.metrics import MetricSet
from helmet_otel.telemetry.pipeline import DropCounter, Pipeline
from helmet_otel.telemetry.recorder import Recorder

TRACE = 0x0AF7651916CD43DD8448EB211C80319C


class Kept:
    """A sink queue that keeps what it is given."""

    local = True

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.urgent: list[Any] = []  # of them, those put as urgent

    def put(self, item: Any) -> None:
        self.items.append(item)

    def put_all(self, items: list[Any]) -> None:
        self.items += items

    def put_urgent(self, item: Any) -> None:
        self.items.append(item)
        self.urgent.append(item)


def recorder() -> tuple[Recorder, Kept, Kept]:
    resource = Resource({sc.SERVICE_NAME: "demo"})
    scope = InstrumentationScope(sc.SCOPE_NAME, "1")
    metrics = MetricSet(resource, scope)
    drops = DropCounter(metrics.counter(sc.METRIC_TELEMETRY_DROPPED, "{record}", "dropped"))
    sampler = TracerProvider(resource=resource, shutdown_on_exit=False).sampler
    pipeline = Pipeline(resource, scope, sampler, metrics, drops)
    spans, logs = Kept(), Kept()
    pipeline.span_queues.append(spans)  # pyright: ignore[reportArgumentType]
    pipeline.log_queues.append(logs)  # pyright: ignore[reportArgumentType]
    config = fr.Config(ProxyOptions(no_store=True), "demo", 1, "host", "http")
    return Recorder(pipeline, config), spans, logs
