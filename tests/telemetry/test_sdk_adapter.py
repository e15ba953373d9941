"""The SDK adapter: with the pinned SDK our pre-encoded bytes go out (fast path); when the
SDK's insides are not what the adapter relies on, the SDK's own export goes out (fallback).
Both export for real to the test OTLP receiver, which decodes the wire format."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.otlp.common.http import _OTLPHTTPClient
from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as grpc_logs
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_spans
from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from helmet_otel.telemetry import otlp_http, sdk_adapter
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
from helmet_otel.telemetry.otlp_exporters import otlp_exporter
from tests.otlp_receiver import OTLPReceiver, Protocol
from tests.telemetry.records import HUGE_AS_SENT, HUGE_LOGS, HUGE_SPANS, LOGS, SPANS

PROTOCOLS: tuple[Protocol, ...] = ("http/protobuf", "grpc")
SPAN_EXPORTERS = {"http/protobuf": http_spans, "grpc": grpc_spans}
LOG_EXPORTERS = {"http/protobuf": http_logs, "grpc": grpc_logs}
ALL_SPANS = [*SPANS, *HUGE_SPANS]
ALL_LOGS = [*LOGS, *HUGE_LOGS]


@pytest.fixture(params=PROTOCOLS)
def receiver(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OTLPReceiver]:
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    with OTLPReceiver(protocol=request.param) as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        yield rx


class SdkEncoding:
    """Counts the records the SDK's own encoders encode (they still encode them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, protocol: Protocol) -> None:
        self.spans = 0
        self.logs = 0
        spans, logs = SPAN_EXPORTERS[protocol], LOG_EXPORTERS[protocol]
        encode_spans, encode_logs = spans.encode_spans, logs.encode_logs

        def counted_spans(batch: Sequence[Any]) -> Any:
            self.spans += len(batch)
            return encode_spans(batch)

        def counted_logs(batch: Sequence[Any]) -> Any:
            self.logs += len(batch)
            return encode_logs(batch)

        monkeypatch.setattr(spans, "encode_spans", counted_spans)
        monkeypatch.setattr(logs, "encode_logs", counted_logs)


def _exporters(protocol: Protocol) -> tuple[Any, Any]:
    encoder = OtlpEncoder()  # shared, as in the worker
    return otlp_exporter("traces", protocol, encoder), otlp_exporter("logs", protocol, encoder)


def _export_all(protocol: Protocol) -> tuple[Any, Any]:
    spans, logs = _exporters(protocol)
    try:
        assert spans.export(ALL_SPANS) is SpanExportResult.SUCCESS
        assert logs.export(ALL_LOGS) is LogRecordExportResult.SUCCESS
    finally:
        spans.shutdown()
        logs.shutdown()
    return spans, logs


def _break_fast_path(protocol: Protocol, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the SDK's insides differ from what the adapter relies on, as a future release of
    the SDK might, while the SDK's own export keeps working."""
    if protocol == "http/protobuf":  # the client's export, no longer export(data: bytes) -> ...
        _without_our_sender(monkeypatch)
        export = _OTLPHTTPClient.export

        def unannotated(self: Any, *args: Any, **kwargs: Any):
            return export(self, *args, **kwargs)

        monkeypatch.setattr(_OTLPHTTPClient, "export", unannotated)
    else:  # the request builders, no longer annotated with the request message they return
        for cls in (grpc_spans.OTLPSpanExporter, grpc_logs.OTLPLogExporter):
            translate: Any = cls._translate_data

            def untyped(self: Any, data: Any, translate: Any = translate):
                return translate(self, data)

            monkeypatch.setattr(cls, "_translate_data", untyped)


def _without_our_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTLP/HTTP through the SDK's transport (as when `otlp_http` does not take the settings)."""
    monkeypatch.setattr(otlp_http, "sender_for", lambda signal, env: (None, "not ours"))


def test_without_our_sender_the_sdks_client_posts_our_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    _without_our_sender(monkeypatch)
    sdk_encoding = SdkEncoding(monkeypatch, "http/protobuf")
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        spans, logs = _export_all("http/protobuf")
        assert receiver.raw_bodies == [OtlpEncoder().spans(ALL_SPANS), OtlpEncoder().logs(ALL_LOGS)]
    assert (spans.transport, spans.sender_reason, spans.fast_path) == ("sdk", "not ours", True)
    assert (logs.transport, logs.sender_reason, logs.fast_path) == ("sdk", "not ours", True)
    assert (sdk_encoding.spans, sdk_encoding.logs) == (0, 0)


def test_the_fast_path_sends_our_bytes_with_the_pinned_sdk(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk_encoding = SdkEncoding(monkeypatch, receiver.protocol)
    spans, logs = _export_all(receiver.protocol)
    assert (spans.fast_path, spans.fallback_reason) == (True, None)
    assert (logs.fast_path, logs.fallback_reason) == (True, None)
    assert (sdk_encoding.spans, sdk_encoding.logs) == (0, 0)  # the SDK encoded nothing...
    assert [s["span_id"] for s in receiver.spans()] == [
        f"{s.span_id:016x}" for s in ALL_SPANS
    ]  # ...and everything arrived, so what went out was ours
    assert len(receiver.logs()) == len(ALL_LOGS)
    ours = [OtlpEncoder().spans(ALL_SPANS), OtlpEncoder().logs(ALL_LOGS)]
    if receiver.protocol == "grpc":  # our bytes parsed into the exporter's request, written anew
        requests = (ExportTraceServiceRequest, ExportLogsServiceRequest)
        ours = [r.FromString(b).SerializeToString() for r, b in zip(requests, ours, strict=True)]
    assert receiver.raw_bodies == ours


def test_the_fallback_sends_the_same_records_through_the_sdk(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _export_all(receiver.protocol)
    fast_spans, fast_logs = receiver.spans(), receiver.logs()
    _break_fast_path(receiver.protocol, monkeypatch)
    sdk_encoding = SdkEncoding(monkeypatch, receiver.protocol)
    spans, logs = _export_all(receiver.protocol)
    assert (spans.fast_path, logs.fast_path) == (False, False)
    assert spans.fallback_reason and logs.fallback_reason
    assert (sdk_encoding.spans, sdk_encoding.logs) == (len(ALL_SPANS), len(ALL_LOGS))
    # the second export (the fallback's) arrived whole, and decodes as the first did
    assert receiver.spans() == fast_spans + fast_spans
    assert receiver.logs() == fast_logs + fast_logs
    huge_span = next(s for s in fast_spans if s["span_id"] == f"{11:016x}")
    assert {k: huge_span["attributes"][k] for k in HUGE_AS_SENT} == HUGE_AS_SENT
    assert fast_logs[len(LOGS)]["body"]["arguments"] == HUGE_AS_SENT


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "fallback"])
def test_a_batch_too_large_for_one_request_goes_in_halves(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    limit = len(OtlpEncoder().spans(SPANS[:2]))  # two of SPANS fit in a request, three do not
    monkeypatch.setattr(sdk_adapter, "MAX_REQUEST_BYTES", limit)
    if not fast:
        _break_fast_path(receiver.protocol, monkeypatch)
    spans, _ = _exporters(receiver.protocol)
    try:
        assert spans.fast_path is fast
        assert spans.export(SPANS) is SpanExportResult.SUCCESS  # 5 spans: 2, then 3 as 1 and 2
    finally:
        spans.shutdown()
    assert [len(ExportTraceServiceRequest.FromString(b).resource_spans[0].scope_spans[0].spans)
            for b in receiver.raw_bodies] == [2, 1, 2]  # fmt: skip
    assert max(len(b) for b in receiver.raw_bodies) <= limit
    assert sorted(s["span_id"] for s in receiver.spans()) == [f"{i:016x}" for i in range(1, 6)]


def test_a_failed_export_and_an_export_after_shutdown_are_failures(
    receiver: OTLPReceiver,
) -> None:
    receiver.status = 400  # not retryable: the exporters give up at once
    spans, logs = _exporters(receiver.protocol)
    assert spans.export(SPANS) is SpanExportResult.FAILURE
    assert logs.export(LOGS) is LogRecordExportResult.FAILURE
    receiver.status = 200
    spans.shutdown()
    logs.shutdown()
    requests = len(receiver.requests)
    assert spans.export(SPANS) is SpanExportResult.FAILURE
    assert logs.export(LOGS) is LogRecordExportResult.FAILURE
    assert len(receiver.requests) == requests == 2
    assert receiver.spans() == [] and receiver.logs() == []


# -- the start-up checks, one reliance at a time --------------------------------------------


class DeadlineClient:
    def export(self, data: bytes, deadline: float) -> Any: ...


class Answer:
    ok: bool


class RenamedClient:
    def export(self, data: bytes) -> Answer: ...


class Other:
    pass


def test_http_check_wants_the_client_and_its_export() -> None:
    sdk = http_spans.OTLPSpanExporter()
    assert sdk_adapter.http_problem(sdk) is None
    client = sdk.__dict__.pop("_client")
    assert sdk_adapter.http_problem(sdk) == "OTLPSpanExporter has no _client.export"

    sdk._client = DeadlineClient()
    problem = sdk_adapter.http_problem(sdk)
    assert problem == (
        "_client.export is not export(data: bytes) -> result: "
        "TypeError(\"missing a required argument: 'deadline'\")"
    )

    sdk._client = RenamedClient()
    problem = sdk_adapter.http_problem(sdk)
    assert problem is not None
    assert problem.startswith("_client.export is not export(data: bytes) -> result with success")
    client.shutdown()


def test_grpc_check_wants_translate_data_returning_the_request_and_used_by_export() -> None:
    sdk = grpc_spans.OTLPSpanExporter()
    assert sdk_adapter.grpc_problem(sdk, ExportTraceServiceRequest) is None

    class SelfEncoding(grpc_spans.OTLPSpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS  # never asks _translate_data

    assert sdk_adapter.grpc_problem(SelfEncoding(), ExportTraceServiceRequest) == (
        "export does not build its request with _translate_data"
    )

    assert sdk_adapter.grpc_problem(sdk, Other) == (
        f"_translate_data returns {ExportTraceServiceRequest!r}, not Other"
    )
    assert sdk_adapter.grpc_problem(object(), Other) == "object has no _translate_data"
    sdk.shutdown()


def test_a_fallback_exporter_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    _break_fast_path("grpc", monkeypatch)
    spans, logs = _exporters("grpc")
    assert spans.fallback_reason == ("_translate_data returns None, not ExportTraceServiceRequest")
    assert logs.fallback_reason == "_translate_data returns None, not ExportLogsServiceRequest"
    spans.shutdown()
    logs.shutdown()
