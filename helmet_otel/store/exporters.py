"""OTel SDK exporters into the store: ``StoreSpanExporter`` and ``StoreLogExporter``.

Use them behind any batching processor: the SDK's, or the telemetry worker's own queues (which
hand them the worker's plain records, `records.Span` and `records.Log`; the SDK's readable types
are taken as well)::

    store = Store.open(path)
    tracer_provider.add_span_processor(BatchSpanProcessor(StoreSpanExporter(store)))
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(StoreLogExporter(store)))

``export`` never raises: a record that cannot be converted, or a batch the store cannot write,
is counted in ``store.dropped`` and the result is ``FAILURE``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from helmet_otel import semconv as sc
from helmet_otel.store.batch import (
    LogBatch,
    SpanBatch,
    log_batch,
    log_batch_of_rows,
    span_batch,
    span_batch_of_rows,
)
from helmet_otel.store.model import LogRow, SpanRow, log_row
from helmet_otel.store.records import KIND_NAMES, STATUS_NAMES, Log, Span
from helmet_otel.store.writer import Store

R = TypeVar("R")

__all__ = [
    "StoreExporter",
    "StoreLogExporter",
    "StoreSpanExporter",
    "log_row_from_record",
    "log_row_from_sdk",
    "logs_to_batch",
    "span_row_from_record",
    "span_row_from_sdk",
    "spans_to_batch",
]


def _attr_map(attributes: Mapping[str, object] | None) -> dict[str, object]:
    return dict(attributes) if attributes else {}


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def log_row_from_sdk(record: ReadableLogRecord) -> LogRow:
    """Convert one SDK log record into a store row."""
    lr = record.log_record
    attributes: Mapping[str, object] = lr.attributes or {}  # pyright: ignore[reportAssignmentType]
    ts = lr.timestamp or lr.observed_timestamp or time.time_ns()
    severity = lr.severity_number.value if lr.severity_number is not None else None
    service = record.resource.attributes.get(sc.SERVICE_NAME) if record.resource else None
    return log_row(
        ts=ts,
        event=lr.event_name or None,
        severity_number=severity,
        severity_text=lr.severity_text,
        service=_text(service),
        trace_id=f"{lr.trace_id:032x}" if lr.trace_id else None,
        span_id=f"{lr.span_id:016x}" if lr.span_id else None,
        body=lr.body,
        has_body=lr.body is not None,
        attributes=attributes,
    )


def log_row_from_record(record: Log) -> LogRow:
    """Convert one of the worker's log records into a store row (as `log_row_from_sdk` would
    its SDK equivalent)."""
    severity = record.severity
    trace_id, span_id = record.trace_id, record.span_id
    body = record.body
    return log_row(
        ts=record.ts or record.observed or time.time_ns(),
        event=record.event or None,
        severity_number=severity or None,
        severity_text=record.severity_text,
        service=record.origin.service,
        trace_id=f"{trace_id:032x}" if trace_id else None,
        span_id=f"{span_id:016x}" if span_id else None,
        body=body,
        has_body=body is not None,
        attributes=record.attributes,
        body_text=record.body_json,
    )


def _link_entries(
    links: Sequence[tuple[int, int, Mapping[str, object] | None]],
) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for trace_id, span_id, attributes in links:
        entry: dict[str, object] = {"trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}"}
        if attributes:
            entry["attributes"] = dict(attributes)
        entries.append(entry)
    return entries


def _span_row(
    trace_id: str, span_id: str, parent_span_id: str | None, name: str, kind: str, start: int,
    end: int | None, status: str, message: str | None, service: object,
    attributes: dict[str, object], links: list[dict[str, object]],
) -> SpanRow:  # fmt: skip
    """``attributes`` (a copy, with the events in ``span.events``) as the span's row."""
    session_id = attributes.pop(sc.HELMET_SESSION_ID, None)
    segment = attributes.get(sc.HELMET_TRACE_SEGMENT)
    return SpanRow(
        trace_id, span_id, parent_span_id, name, kind, start, end, status, message,
        _text(session_id),
        segment if isinstance(segment, int) and not isinstance(segment, bool) else None,
        _text(service), attributes, links,
    )  # fmt: skip


def span_row_from_record(span: Span) -> SpanRow:
    """Convert one of the worker's ended spans into a store row (as `span_row_from_sdk` would
    its SDK equivalent)."""
    attributes: dict[str, object] = dict(span.attributes)
    if span.events:
        attributes["span.events"] = [
            {"name": e.name, "time_unix_nano": e.ts, **e.attributes} for e in span.events
        ]
    links = (
        _link_entries([(k.trace_id, k.span_id, k.attributes) for k in span.links])
        if span.links
        else []
    )
    parent = span.parent
    return _span_row(
        f"{span.trace_id:032x}", f"{span.span_id:016x}", f"{parent:016x}" if parent else None,
        span.name, KIND_NAMES[span.kind], span.start, span.end, STATUS_NAMES[span.status],
        span.description if span.status == 2 else None, span.origin.service, attributes, links,
    )  # fmt: skip


def span_row_from_sdk(span: ReadableSpan) -> SpanRow:
    """Convert one ended SDK span into a store row."""
    ctx = span.get_span_context()
    attributes = _attr_map(span.attributes)  # pyright: ignore[reportArgumentType]
    status = span.status
    links = _link_entries(
        [(k.context.trace_id, k.context.span_id, k.attributes) for k in span.links]
    )
    if span.events:
        attributes["span.events"] = [
            {"name": e.name, "time_unix_nano": e.timestamp, **dict(e.attributes or {})}
            for e in span.events
        ]
    return _span_row(
        f"{ctx.trace_id:032x}" if ctx else "0" * 32,
        f"{ctx.span_id:016x}" if ctx else "0" * 16,
        f"{span.parent.span_id:016x}" if span.parent is not None else None,
        span.name, span.kind.name, span.start_time or 0, span.end_time,
        status.status_code.name, status.description,
        span.resource.attributes.get(sc.SERVICE_NAME), attributes, links,
    )  # fmt: skip


def _converted(items: Sequence[Any], convert: Callable[[Any], R]) -> tuple[list[R], int]:
    """``convert`` of each item, and how many could not be converted (a malformed record never
    costs the batch)."""
    rows: list[R] = []
    failed = 0
    for item in items:
        try:
            rows.append(convert(item))
        except Exception:
            failed += 1
    return rows, failed


def _any_log_row(record: ReadableLogRecord | Log) -> LogRow:
    return log_row_from_record(record) if type(record) is Log else log_row_from_sdk(record)  # pyright: ignore[reportArgumentType]


def _any_span_row(span: ReadableSpan | Span) -> SpanRow:
    return span_row_from_record(span) if type(span) is Span else span_row_from_sdk(span)  # pyright: ignore[reportArgumentType]


def logs_to_batch(records: Sequence[ReadableLogRecord | Log]) -> LogBatch:
    """The store's rows of a batch of log records: the worker's (``batch.log_batch``, the fast
    path), else the SDK's (through ``LogRow``). A record that cannot be converted is counted in
    ``failed``."""
    if all(type(record) is Log for record in records):
        return log_batch(records)  # pyright: ignore[reportArgumentType]
    rows, failed = _converted(records, _any_log_row)
    return log_batch_of_rows(rows)._replace(failed=failed)


def spans_to_batch(spans: Sequence[ReadableSpan | Span]) -> SpanBatch:
    """The store's rows of a batch of ended spans, as ``logs_to_batch``."""
    if all(type(span) is Span for span in spans):
        return span_batch(spans)  # pyright: ignore[reportArgumentType]
    rows, failed = _converted(spans, _any_span_row)
    return span_batch_of_rows(rows)._replace(failed=failed)


class StoreLogExporter(LogRecordExporter):
    """Writes log record batches into a ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._shutdown = False

    def export(self, batch: Sequence[ReadableLogRecord | Log]) -> LogRecordExportResult:  # pyright: ignore[reportIncompatibleMethodOverride]  # (it takes more than the SDK's)
        try:
            if self._shutdown:
                self.store.add_dropped(logs=len(batch))
                return LogRecordExportResult.FAILURE
            ok = self.store.write_log_batch(logs_to_batch(batch))
        except Exception:  # never raise into the SDK
            with contextlib.suppress(Exception):
                self.store.add_dropped(logs=len(batch))
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        """Stop accepting batches. The ``Store`` stays open: its owner closes it."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is buffered here: every export is written before it returns


class StoreSpanExporter(SpanExporter):
    """Writes span batches into a ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan | Span]) -> SpanExportResult:  # pyright: ignore[reportIncompatibleMethodOverride]  # (it takes more than the SDK's)
        try:
            if self._shutdown:
                self.store.add_dropped(spans=len(spans))
                return SpanExportResult.FAILURE
            ok = self.store.write_span_batch(spans_to_batch(spans))
        except Exception:
            with contextlib.suppress(Exception):
                self.store.add_dropped(spans=len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Stop accepting batches. The ``Store`` stays open: its owner closes it."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class StoreExporter:
    """Writes a batch of log records and a batch of spans into a ``Store`` in one transaction
    (the telemetry worker's one store thread: one wake-up and one commit for both)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def export(self, logs: Sequence[Log], spans: Sequence[Span]) -> tuple[bool, bool]:
        """-> whether each batch was written whole (a batch that is empty was)."""
        try:
            return self.store.write_each(
                logs_to_batch(logs) if logs else None, spans_to_batch(spans) if spans else None
            )
        except Exception:  # never raise into the export thread
            with contextlib.suppress(Exception):
                self.store.add_dropped(logs=len(logs), spans=len(spans))
            return False, False
