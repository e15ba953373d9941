"""The worker's metric instruments and the ``helmet.performance`` statistics.

Both are process-wide: every session of the proxy counts into the same instruments (the
metrics have no session attribute) and the same per-method statistics.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from helmet_otel import semconv as sc
from helmet_otel.percentile import percentile
from helmet_otel.store.records import Span
from helmet_otel.telemetry.metrics import Key, MetricSet, attribute_key, record_pairs

MAX_METHOD_LABELS = 64  # distinct unknown methods that become metric labels, then "_other"
LATENCY_SAMPLES = 10_000  # latencies kept per method and interval for the quantiles

KNOWN_METHODS = frozenset(
    [
        "initialize",
        "notifications/initialized",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
        "completion/complete",
        "logging/setLevel",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
        "notifications/roots/list_changed",
        "notifications/elicitation/complete",
        "notifications/tasks/status",
        "notifications/subscriptions/acknowledged",
    ]
)


# A finished call's measurements, deferred (`Instruments.calls_done`): its latency in
# seconds, its SERVER and CLIENT durations' keys, its SERVER and CLIENT spans (the exemplars'
# ids; CLIENT None when the proxy answered), its end, weight, `helmet.performance` key, its
# response's size, and whether it failed
CallDone = tuple[float, Key, Key, Span, "Span | None", int, int, str, int, bool]


@dataclass(slots=True)
class _Stats:
    count: int = 0
    errors: int = 0
    bytes: int = 0
    latencies_ms: list[float] = field(default_factory=list[float])


class Instruments:
    """``exported``: something reads the metrics (a metric exporter); when nothing does, the
    per-message and per-call measurements are not made (only ``helmet.performance``'s)."""

    def __init__(self, metrics: MetricSet, exported: bool = True) -> None:
        self.exported = exported
        durations = sc.DURATION_BUCKETS
        self.server_duration = metrics.histogram(
            sc.METRIC_SERVER_OPERATION_DURATION, "s",
            "MCP request duration as seen by the proxy facing the client", durations,
        )  # fmt: skip
        self.client_duration = metrics.histogram(
            sc.METRIC_CLIENT_OPERATION_DURATION, "s",
            "MCP request duration of the proxy's call to the upstream", durations,
        )  # fmt: skip
        self.session_duration = metrics.histogram(
            sc.METRIC_SERVER_SESSION_DURATION, "s", "MCP session duration", durations
        )
        self.sessions_active = metrics.up_down_counter(
            sc.METRIC_SESSIONS_ACTIVE, "{session}", "Sessions in progress"
        )
        self.messages = metrics.counter(sc.METRIC_MESSAGES, "{message}", "MCP messages relayed")
        self.message_size = metrics.histogram(
            sc.METRIC_MESSAGE_SIZE, "By", "Size of relayed MCP messages", sc.SIZE_BUCKETS
        )
        self.errors = metrics.counter(sc.METRIC_ERRORS, "{error}", "Failed MCP operations")
        self.policy_decisions = metrics.counter(
            sc.METRIC_POLICY_DECISIONS, "{decision}", "Policy decisions made by a rule"
        )
        self.security_events = metrics.counter(
            sc.METRIC_SECURITY_EVENTS, "{event}", "Security findings"
        )
        # the wrapped servers' process trees (OS process semantic conventions)
        self.process_cpu_time = metrics.counter(
            sc.METRIC_PROCESS_CPU_TIME, "s", "Total CPU seconds broken down by different CPU modes"
        )
        self.process_memory = metrics.up_down_counter(
            sc.METRIC_PROCESS_MEMORY_USAGE, "By", "The amount of physical memory in use"
        )
        self.process_threads = metrics.up_down_counter(
            sc.METRIC_PROCESS_THREAD_COUNT, "{thread}", "Process threads count"
        )
        self.process_fds = metrics.up_down_counter(
            sc.METRIC_PROCESS_FD_COUNT, "{file_descriptor}",
            "Number of unix file descriptors in use by the process",
        )  # fmt: skip
        self._methods_seen: set[str] = set()
        # (label, direction, kind): the keys of helmet.mcp.messages and helmet.mcp.message.size
        # (bounded: the labels are, and there are two directions and a few kinds)
        self._message_keys: dict[tuple[str, str, str], tuple[Key, Key]] = {}
        self._stats: defaultdict[str, _Stats] = defaultdict(_Stats)
        self.messages_total = 0  # since the worker started
        self._interval_started = time.monotonic()
        # Measurements the recorder appends as it goes (a list append, no call per
        # measurement) and `settle` makes, in order, once per read of the worker's pipe and
        # before anything reads the instruments: a message's `message_keys`, size and
        # weight, and `CallDone`s
        self.messages_seen: list[tuple[tuple[Key, Key], int, int]] = []
        self.calls_done: list[CallDone] = []
        metrics.before_collect(self.settle)

    def settle(self) -> None:
        """Make the measurements `messages_seen` and `calls_done` hold: the messages counted
        by kind (they repeat), the durations of both sides with one bucket search per call."""
        if self.messages_seen:
            messages, self.messages_seen = self.messages_seen, []
            self.messages_total += len(messages)
            if self.exported:
                for (keys, size, weight), times in Counter(messages).items():
                    self.messages.add_key(weight * times, keys[0])
                    self.message_size.tally(size, keys[1], weight * times)
        if self.calls_done:
            calls, self.calls_done = self.calls_done, []
            if self.exported:
                pairs = (call[:7] for call in calls)
                record_pairs(self.server_duration, self.client_duration, pairs)
            stats_of = self._stats
            for latency_s, _, _, _, _, _, weight, name, size, failed in calls:
                stats = stats_of[name]
                stats.count += weight
                stats.bytes += size * weight
                if len(stats.latencies_ms) < LATENCY_SAMPLES:
                    stats.latencies_ms.append(latency_s * 1000)
                if failed:
                    stats.errors += weight

    def method_label(self, method: str | None) -> str:
        """``method`` as a metric label: known methods and the first few others by name."""
        if method is None:
            return "unknown"
        if method in KNOWN_METHODS or method in self._methods_seen:
            return method
        if len(self._methods_seen) < MAX_METHOD_LABELS:
            self._methods_seen.add(method)
            return method
        return "_other"

    def count_message(self, label: str, attrs: dict[str, Any], weight: int) -> None:
        """One message (standing for ``weight``), from its record's attributes."""
        keys = self.message_keys(label, attrs[sc.HELMET_DIRECTION], attrs[sc.HELMET_MESSAGE_KIND])
        self.messages_seen.append((keys, attrs[sc.HELMET_MESSAGE_SIZE], weight))

    def message_keys(self, label: str, direction: str, kind: str) -> tuple[Key, Key]:
        """The keys of ``helmet.mcp.messages`` and ``helmet.mcp.message.size`` for messages of
        one label, direction and kind (made once: a caller may keep them)."""
        keys = self._message_keys.get((label, direction, kind))
        if keys is None:
            keys = self._message_keys[(label, direction, kind)] = (
                attribute_key({sc.MCP_METHOD_NAME: label, sc.HELMET_DIRECTION: direction,
                               sc.HELMET_MESSAGE_KIND: kind}),
                attribute_key({sc.MCP_METHOD_NAME: label, sc.HELMET_DIRECTION: direction}),
            )  # fmt: skip
        return keys

    def count_error(
        self, weight: int, error_type: str, label: str, tool: str | None = None
    ) -> None:
        attributes = {sc.ERROR_TYPE: error_type, sc.MCP_METHOD_NAME: label}
        if tool is not None:
            attributes[sc.GEN_AI_TOOL_NAME] = tool
        self.errors.add(weight, attributes)

    def interval(self) -> dict[str, Any]:
        """The statistics since the last call (``helmet.performance``), and a new interval."""
        self.settle()
        now = time.monotonic()
        methods: dict[str, Any] = {}
        for key, stats in sorted(self._stats.items()):
            values = sorted(stats.latencies_ms)
            methods[key] = {
                "count": stats.count,
                "errors": stats.errors,
                "bytes": stats.bytes,
                "p50_ms": round(percentile(values, 0.5), 3),
                "p95_ms": round(percentile(values, 0.95), 3),
                "p99_ms": round(percentile(values, 0.99), 3),
            }
        body = {
            "interval_s": round(now - self._interval_started, 3),
            "messages": self.messages_total,
            "methods": methods,
        }
        self._stats.clear()
        self._interval_started = now
        return body
