"""Our OTLP encoder against the SDK's: the same records (ours, and made the SDK's by
`sdk_adapter`) must parse to the same messages."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from helmet_otel.redaction import Redactor
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
from helmet_otel.telemetry.sdk_adapter import plain_log, plain_span, sdk_log, sdk_span
from tests.telemetry.records import HUGE_AS_SENT, HUGE_LOGS, HUGE_SPANS, LOGS, SPANS, log


def test_spans_parse_to_the_sdk_encoders_messages() -> None:
    ours = ExportTraceServiceRequest.FromString(OtlpEncoder().spans(SPANS))
    assert ours == encode_spans([sdk_span(s) for s in SPANS])


def test_log_records_parse_to_the_sdk_encoders_messages() -> None:
    ours = ExportLogsServiceRequest.FromString(OtlpEncoder().logs(LOGS))
    assert ours == encode_logs([sdk_log(r) for r in LOGS])


def test_the_attribute_cache_never_changes_the_output() -> None:
    encoder = OtlpEncoder()
    first = encoder.spans(SPANS)
    assert encoder.spans(SPANS) == first  # served from the cache the second time
    assert encoder.logs(LOGS) == OtlpEncoder().logs(LOGS)


def test_attributes_whose_values_keep_changing_encode_as_the_sdk_does() -> None:
    """Past 64 distinct values a key is no longer cached: its scalars are written inline."""
    records = [log(None, attributes={"n": i - 50, "id": f"req-{i}-é", "ms": i / 3, "t": i % 2 == 0,
                                     "big": 2**62 + i, "l": [i]}) for i in range(100)]  # fmt: skip
    encoder = OtlpEncoder()
    expected = encode_logs([sdk_log(r) for r in records])
    assert ExportLogsServiceRequest.FromString(encoder.logs(records)) == expected
    assert {"n", "id", "big"} <= encoder._uncached  # pyright: ignore[reportPrivateUsage]
    assert ExportLogsServiceRequest.FromString(encoder.logs(records)) == expected


def test_bodies_with_their_json_encode_as_the_sdk_does_cached_or_not() -> None:
    """A record the recorder made carries its body's JSON: a small one is encoded once."""
    redactor = Redactor()
    bodies = [{}, {"name": "echo", "arguments": {"text": "hi", "n": [1, 2.5, None]}},
              "a line", {"content": [{"type": "text", "text": "x" * 300}]}, [True, False]]  # fmt: skip
    records = [log(*redactor.body_and_json(b)[:1], body_json=redactor.body_and_json(b)[1])
               for b in bodies * 2]  # fmt: skip
    assert all(r.body_json is not None for r in records)
    encoder = OtlpEncoder()
    expected = encode_logs([sdk_log(r) for r in records])
    assert ExportLogsServiceRequest.FromString(encoder.logs(records)) == expected
    assert ExportLogsServiceRequest.FromString(encoder.logs(records)) == expected


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_beyond_int64_become_strings_instead_of_failing_the_batch(value: int) -> None:
    decoded = ExportLogsServiceRequest.FromString(OtlpEncoder().logs([log({"n": value})]))
    body = decoded.resource_logs[0].scope_logs[0].log_records[0].body
    assert body.kvlist_value.values[0].value.string_value == str(value)


def test_the_sdk_encoder_drops_or_fails_on_integers_beyond_int64() -> None:
    """Why the exporters' fallback makes records plain before the SDK encodes them."""
    span = encode_spans([sdk_span(HUGE_SPANS[0])]).resource_spans[0].scope_spans[0].spans[0]
    assert [kv.key for kv in span.attributes] == ["mcp.method.name", "fits"]
    with pytest.raises(ValueError, match="Value out of range"):
        encode_logs([sdk_log(r) for r in HUGE_LOGS])


def test_plain_records_encode_with_the_sdk_as_ours_do() -> None:
    """The fallback (the SDK's encoder on plain records) sends what the fast path sends."""
    plain_spans = [plain_span(s) for s in HUGE_SPANS]
    plain_logs = [plain_log(r) for r in HUGE_LOGS]
    assert encode_spans(plain_spans) == ExportTraceServiceRequest.FromString(
        OtlpEncoder().spans(HUGE_SPANS)
    )
    assert encode_logs(plain_logs) == ExportLogsServiceRequest.FromString(
        OtlpEncoder().logs(HUGE_LOGS)
    )
    assert dict(plain_spans[0].attributes or {}) == {
        "mcp.method.name": "tools/call",
        **HUGE_AS_SENT,
    }
    assert plain_logs[0].log_record.body == {"name": "echo", "arguments": HUGE_AS_SENT}
    # records with nothing to change keep their values as they are
    assert dict(plain_spans[2].attributes or {}) == HUGE_SPANS[2].attributes
    assert plain_logs[2].log_record.attributes is HUGE_LOGS[2].attributes
