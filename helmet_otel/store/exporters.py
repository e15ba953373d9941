"""OTel SDK exporters into the store: ``StoreSpanExporter`` and ``StoreLogExporter``.

Use them behind any batching processor: the SDK's, or the telemetry worker's own queues::

    store = Store.open(path)
    tracer_provider.add_span_processor(BatchSpanProcessor(StoreSpanExporter(store)))
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(StoreLogExporter(store)))

``export`` never raises: a record that cannot be converted, or a batch the store cannot write,
is counted in ``store.dropped`` and the result is ``FAILURE``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from helmet_otel import semconv as sc
from helmet_otel.store.model import LogRow, SpanRow, log_row
from helmet_otel.store.writer import Store

__all__ = ["StoreLogExporter", "StoreSpanExporter", "log_row_from_sdk", "span_row_from_sdk"]


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


def span_row_from_sdk(span: ReadableSpan) -> SpanRow:
    """Convert one ended SDK span into a store row."""
    ctx = span.get_span_context()
    attributes = _attr_map(span.attributes)  # pyright: ignore[reportArgumentType]
    session_id = attributes.pop(sc.HELMET_SESSION_ID, None)
    segment = attributes.get(sc.HELMET_TRACE_SEGMENT)
    status = span.status
    links: list[dict[str, object]] = []
    for link in span.links:
        entry: dict[str, object] = {
            "trace_id": f"{link.context.trace_id:032x}",
            "span_id": f"{link.context.span_id:016x}",
        }
        if link.attributes:
            entry["attributes"] = dict(link.attributes)
        links.append(entry)
    if span.events:
        attributes["span.events"] = [
            {"name": e.name, "time_unix_nano": e.timestamp, **dict(e.attributes or {})}
            for e in span.events
        ]
    service = span.resource.attributes.get(sc.SERVICE_NAME)
    return SpanRow(
        trace_id=f"{ctx.trace_id:032x}" if ctx else "0" * 32,
        span_id=f"{ctx.span_id:016x}" if ctx else "0" * 16,
        parent_span_id=f"{span.parent.span_id:016x}" if span.parent is not None else None,
        name=span.name,
        kind=span.kind.name,
        start_ts=span.start_time or 0,
        end_ts=span.end_time,
        status=status.status_code.name,
        status_message=status.description,
        session_id=_text(session_id),
        segment=segment if isinstance(segment, int) and not isinstance(segment, bool) else None,
        service=_text(service),
        attrs=attributes,
        links=links,
    )


class StoreLogExporter(LogRecordExporter):
    """Writes log record batches into a ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._shutdown = False

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            if self._shutdown:
                self.store.add_dropped(logs=len(batch))
                return LogRecordExportResult.FAILURE
            rows: list[LogRow] = []
            for record in batch:
                try:
                    rows.append(log_row_from_sdk(record))
                except Exception:  # a malformed record never costs the batch
                    self.store.add_dropped(logs=1)
            ok = self.store.write_logs(rows) and len(rows) == len(batch)
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

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            if self._shutdown:
                self.store.add_dropped(spans=len(spans))
                return SpanExportResult.FAILURE
            rows: list[SpanRow] = []
            for span in spans:
                try:
                    rows.append(span_row_from_sdk(span))
                except Exception:
                    self.store.add_dropped(spans=1)
            ok = self.store.write_spans(rows) and len(rows) == len(spans)
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
