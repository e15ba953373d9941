"""The store's rows of the worker's records are the rows of the same records as the SDK's types
(the store took the SDK's until the worker made its own): every field, odd values included."""

from __future__ import annotations

from helmet_otel.redaction import Redactor
from helmet_otel.store.exporters import (
    log_row_from_record,
    log_row_from_sdk,
    span_row_from_record,
    span_row_from_sdk,
)
from helmet_otel.telemetry.sdk_adapter import sdk_log, sdk_span
from tests.telemetry.records import HUGE_LOGS, HUGE_SPANS, LOGS, SPANS, log


def test_span_rows_are_the_rows_of_the_sdk_spans() -> None:
    rows = [span_row_from_record(s) for s in [*SPANS, *HUGE_SPANS]]
    assert rows == [span_row_from_sdk(sdk_span(s)) for s in [*SPANS, *HUGE_SPANS]]
    assert [(r.kind, r.status, r.status_message) for r in rows[:5]] == [
        ("SERVER", "UNSET", None), ("CLIENT", "ERROR", "tool returned isError"),
        ("INTERNAL", "UNSET", None), ("SERVER", "UNSET", None), ("SERVER", "OK", None),
    ]  # fmt: skip
    assert rows[2].parent_span_id is None and len(rows[2].links) == 2
    assert rows[3].attrs["span.events"] == [{"name": "cancelled", "time_unix_nano": 5,
                                             "reason": "user"}]  # fmt: skip
    assert SPANS[3].attributes.get("span.events") is None  # the span itself is left alone


def test_log_rows_are_the_rows_of_the_sdk_log_records() -> None:
    rows = [log_row_from_record(r) for r in [*LOGS, *HUGE_LOGS]]
    assert rows == [log_row_from_sdk(sdk_log(r)) for r in [*LOGS, *HUGE_LOGS]]
    assert [(r.trace_id is None, r.severity_number, r.service) for r in rows[4:6]] == [
        (False, 9, "demo"), (True, None, "demo"),
    ]  # fmt: skip
    assert rows[4].ts == LOGS[4].observed  # no time of its own: when it was observed


def test_a_body_with_its_json_makes_the_same_row() -> None:
    """The store keeps the JSON text the recorder made (no second ``dumps``): the same text."""
    redactor = Redactor()
    for value in [{}, {"a": [1, 2.5, None, "é"], "api_key": "s3cr3t-value"}, "text", [1]]:
        body, text = redactor.body_and_json(value)
        record = log(body, body_json=text)
        assert text is not None
        assert log_row_from_record(record) == log_row_from_sdk(sdk_log(record))
        assert log_row_from_record(record) == log_row_from_record(log(body))
