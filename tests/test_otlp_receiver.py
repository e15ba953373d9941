"""The test OTLP receiver, driven by the real OpenTelemetry SDK exporters over both protocols."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from helmet_otel import semconv
from tests.otlp_receiver import OTLPReceiver, Protocol, dead_endpoint

PROTOCOLS: tuple[Protocol, ...] = ("http/protobuf", "grpc")

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
LINKED_TRACE_ID = 0x11112222333344445555666677778888
LINKED_SPAN_ID = 0x99990000AAAABBBB
RESOURCE = {semconv.SERVICE_NAME: "echo-server", "deployment.environment": "test"}
SCOPE = {"name": semconv.SCOPE_NAME, "version": "9.8.7"}


class FixedIds(IdGenerator):
    def generate_trace_id(self) -> int:
        return TRACE_ID

    def generate_span_id(self) -> int:
        return SPAN_ID


@pytest.fixture(params=PROTOCOLS)
def receiver(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OTLPReceiver]:
    with OTLPReceiver(protocol=request.param) as r:
        # the standard variable, as the proxy will be configured: the exporters derive the rest
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.endpoint)
        yield r


def span_exporter(protocol: Protocol, **kwargs: Any) -> SpanExporter:
    if protocol == "grpc":
        return GrpcSpanExporter(**kwargs)
    return HttpSpanExporter(**kwargs)


def export_one_span(exporter: SpanExporter, attributes: dict[str, Any] | None = None) -> None:
    provider = TracerProvider(resource=Resource(RESOURCE), id_generator=FixedIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(semconv.SCOPE_NAME, "9.8.7")
    link = Link(
        SpanContext(LINKED_TRACE_ID, LINKED_SPAN_ID, is_remote=True, trace_flags=TraceFlags(1)),
        attributes={"link.kind": "client-traceparent"},
    )
    span = tracer.start_span(
        "tools/call echo",
        kind=SpanKind.SERVER,
        attributes=attributes
        or {
            semconv.MCP_METHOD_NAME: "tools/call",
            semconv.GEN_AI_TOOL_NAME: "echo",
            semconv.JSONRPC_REQUEST_ID: "7",
            semconv.HELMET_MESSAGE_SIZE: 123,
            semconv.HELMET_LATENCY_MS: 1.5,
            "helmet.flag": True,
            "helmet.list": ["a", "b"],
        },
        links=[link],
        start_time=1_000_000_000,
    )
    span.add_event("retry", attributes={"attempt": 2}, timestamp=1_500_000_000)
    span.set_status(Status(StatusCode.ERROR, "tool failed"))
    span.end(end_time=2_000_000_000)
    provider.shutdown()


def test_span_is_decoded_and_flattened(receiver: OTLPReceiver) -> None:
    export_one_span(span_exporter(receiver.protocol))

    receiver.wait_for(lambda r: len(r.spans()) == 1)
    assert receiver.spans() == [
        {
            "name": "tools/call echo",
            "kind": "SERVER",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "parent_span_id": "",
            "attributes": {
                semconv.MCP_METHOD_NAME: "tools/call",
                semconv.GEN_AI_TOOL_NAME: "echo",
                semconv.JSONRPC_REQUEST_ID: "7",
                semconv.HELMET_MESSAGE_SIZE: 123,
                semconv.HELMET_LATENCY_MS: 1.5,
                "helmet.flag": True,
                "helmet.list": ["a", "b"],
            },
            "status": {"code": "ERROR", "message": "tool failed"},
            "links": [
                {
                    "trace_id": "11112222333344445555666677778888",
                    "span_id": "99990000aaaabbbb",
                    "attributes": {"link.kind": "client-traceparent"},
                }
            ],
            "events": [
                {"name": "retry", "time_unix_nano": 1_500_000_000, "attributes": {"attempt": 2}}
            ],
            "start_time_unix_nano": 1_000_000_000,
            "end_time_unix_nano": 2_000_000_000,
            "resource": RESOURCE,
            "scope": SCOPE,
        }
    ]
    assert receiver.requests == [("traces", 200)]
    assert receiver.counts == {"spans": 1, "logs": 0, "data_points": 0}
    assert receiver.logs() == []
    assert receiver.metrics() == []


def test_log_record_with_event_name_and_map_body(receiver: OTLPReceiver) -> None:
    exporter = GrpcLogExporter() if receiver.protocol == "grpc" else HttpLogExporter()
    provider = LoggerProvider(resource=Resource(RESOURCE))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger(semconv.SCOPE_NAME, "9.8.7")
    span_context = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hi", "n": [1, 2.5, None, False]}},
    }
    logger.emit(
        timestamp=3_000_000_000,
        observed_timestamp=3_000_000_500,
        context=set_span_in_context(NonRecordingSpan(span_context)),
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        body=body,
        attributes={
            semconv.HELMET_SESSION_ID: "s-1",
            semconv.HELMET_DIRECTION: semconv.DIRECTION_C2S,
            semconv.MCP_METHOD_NAME: "tools/call",
        },
        event_name=semconv.EVENT_REQUEST,
    )
    logger.emit(
        timestamp=3_100_000_000,
        observed_timestamp=3_100_000_000,
        severity_number=SeverityNumber.WARN,
        body="a stderr line",
        event_name=semconv.EVENT_SERVER_STDERR,
    )
    provider.shutdown()

    receiver.wait_for(lambda r: len(r.logs()) == 2)
    assert receiver.logs() == [
        {
            "event_name": semconv.EVENT_REQUEST,
            "severity_number": 9,
            "severity_text": "INFO",
            "body": body,
            "attributes": {
                semconv.HELMET_SESSION_ID: "s-1",
                semconv.HELMET_DIRECTION: semconv.DIRECTION_C2S,
                semconv.MCP_METHOD_NAME: "tools/call",
            },
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "flags": 1,  # sampled
            "time_unix_nano": 3_000_000_000,
            "observed_time_unix_nano": 3_000_000_500,
            "resource": RESOURCE,
            "scope": SCOPE,
        },
        {
            "event_name": semconv.EVENT_SERVER_STDERR,
            "severity_number": 13,
            "severity_text": "",
            "body": "a stderr line",
            "attributes": {},
            "trace_id": "",
            "span_id": "",
            "flags": 0,
            "time_unix_nano": 3_100_000_000,
            "observed_time_unix_nano": 3_100_000_000,
            "resource": RESOURCE,
            "scope": SCOPE,
        },
    ]
    assert [signal for signal, _ in receiver.requests] == ["logs", "logs"]


def test_histogram_with_exemplar(receiver: OTLPReceiver) -> None:
    exporter = GrpcMetricExporter() if receiver.protocol == "grpc" else HttpMetricExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource(RESOURCE), metric_readers=[reader])
    meter = provider.get_meter(semconv.SCOPE_NAME, "9.8.7")
    histogram = meter.create_histogram(
        semconv.METRIC_SERVER_OPERATION_DURATION,
        unit="s",
        description="MCP request duration as observed on the receiver",
        explicit_bucket_boundaries_advisory=[0.01, 0.1, 1.0],
    )
    attributes = {semconv.MCP_METHOD_NAME: "tools/call"}
    sampled = set_span_in_context(
        NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1)))
    )
    histogram.record(0.005, attributes)
    histogram.record(0.05, attributes, context=sampled)
    histogram.record(3.0, attributes)
    assert provider.force_flush()

    receiver.wait_for(lambda r: len(r.metrics()) >= 1)
    provider.shutdown()
    assert receiver.metrics()[0] == {
        "name": semconv.METRIC_SERVER_OPERATION_DURATION,
        "unit": "s",
        "description": "MCP request duration as observed on the receiver",
        "type": "histogram",
        "temporality": "CUMULATIVE",
        "is_monotonic": None,
        "data_points": [
            {
                "attributes": attributes,
                "count": 3,
                "sum": 3.055,
                "bucket_counts": [1, 1, 0, 1],
                "explicit_bounds": [0.01, 0.1, 1.0],
                "value": None,
                "exemplars": [
                    {
                        "value": 0.05,
                        "trace_id": "0af7651916cd43dd8448eb211c80319c",
                        "span_id": "b7ad6b7169203331",
                        "attributes": {},
                    }
                ],
            }
        ],
        "resource": RESOURCE,
        "scope": SCOPE,
    }


def test_counter_and_gauge_points(receiver: OTLPReceiver) -> None:
    exporter = GrpcMetricExporter() if receiver.protocol == "grpc" else HttpMetricExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource(RESOURCE), metric_readers=[reader])
    meter = provider.get_meter(semconv.SCOPE_NAME, "9.8.7")
    meter.create_counter(semconv.METRIC_MESSAGES, unit="{message}").add(
        5, {semconv.HELMET_DIRECTION: semconv.DIRECTION_S2C}
    )
    meter.create_gauge("helmet.test.gauge", unit="1").set(2.5)
    assert provider.force_flush()

    receiver.wait_for(lambda r: len(r.metrics()) >= 2)
    provider.shutdown()
    by_name = {m["name"]: m for m in receiver.metrics()[:2]}
    assert by_name[semconv.METRIC_MESSAGES]["type"] == "sum"
    assert by_name[semconv.METRIC_MESSAGES]["is_monotonic"] is True
    assert by_name[semconv.METRIC_MESSAGES]["temporality"] == "CUMULATIVE"
    assert by_name[semconv.METRIC_MESSAGES]["data_points"] == [
        {
            "attributes": {semconv.HELMET_DIRECTION: semconv.DIRECTION_S2C},
            "count": None,
            "sum": None,
            "bucket_counts": None,
            "explicit_bounds": None,
            "value": 5,
            "exemplars": [],
        }
    ]
    assert by_name["helmet.test.gauge"]["type"] == "gauge"
    assert by_name["helmet.test.gauge"]["temporality"] is None
    assert [p["value"] for p in by_name["helmet.test.gauge"]["data_points"]] == [2.5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_raw_bodies_hold_the_exported_bytes_even_gzipped(protocol: Protocol) -> None:
    secret = "sk-live-THIS-MUST-BE-FOUND-0123456789"
    with OTLPReceiver(protocol=protocol) as receiver:
        if protocol == "grpc":
            exporter: SpanExporter = GrpcSpanExporter(
                endpoint=receiver.endpoint, compression=grpc.Compression.Gzip
            )
        else:
            exporter = HttpSpanExporter(
                endpoint=f"{receiver.endpoint}/v1/traces", compression=HttpCompression.Gzip
            )
        export_one_span(exporter, attributes={"leaky": secret})
        receiver.wait_for(lambda r: len(r.spans()) == 1)

    assert len(receiver.raw_bodies) == 1
    assert secret.encode() in receiver.raw_bodies[0]
    decoded = trace_service_pb2.ExportTraceServiceRequest.FromString(receiver.raw_bodies[0])
    assert decoded.resource_spans[0].scope_spans[0].spans[0].name == "tools/call echo"
    assert receiver.spans()[0]["attributes"] == {"leaky": secret}


def _raw_post(receiver: OTLPReceiver, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_http_decodes_gzip_and_rejects_what_is_not_otlp() -> None:
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = "handmade"
    span.kind = trace_pb2.Span.SPAN_KIND_CLIENT
    span.trace_id = bytes(range(16))
    span.span_id = bytes(range(8))
    span.parent_span_id = bytes(range(8, 16))
    span.attributes.add(key="blob", value=common_pb2.AnyValue(bytes_value=b"\x00\xff"))
    payload = request.SerializeToString()
    protobuf = {"Content-Type": "application/x-protobuf"}

    with OTLPReceiver() as receiver:
        assert (
            _raw_post(
                receiver,
                "/v1/traces",
                gzip.compress(payload),
                {**protobuf, "Content-Encoding": "gzip"},
            )
            == 200
        )
        assert _raw_post(receiver, "/v1/nothing", payload, protobuf) == 404
        assert _raw_post(receiver, "/v1/traces", b"{}", {"Content-Type": "application/json"}) == 415
        assert _raw_post(receiver, "/v1/traces", b"\xff\xff\xff", protobuf) == 400

    assert receiver.raw_bodies == [payload]
    [flat] = receiver.spans()
    assert (flat["kind"], flat["trace_id"], flat["span_id"], flat["parent_span_id"]) == (
        "CLIENT",
        "000102030405060708090a0b0c0d0e0f",
        "0001020304050607",
        "08090a0b0c0d0e0f",
    )
    assert flat["attributes"] == {"blob": b"\x00\xff"}
    assert flat["status"] == {"code": "UNSET", "message": ""}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("status", [503, 400])
def test_error_status_is_answered_and_nothing_is_accepted(protocol: Protocol, status: int) -> None:
    with OTLPReceiver(protocol=protocol, status=status) as receiver:
        # a short timeout: 503 is retryable, and the first backoff (>= 0.8 s) exceeds it
        endpoint = receiver.endpoint if protocol == "grpc" else f"{receiver.endpoint}/v1/traces"
        exporter = span_exporter(protocol, endpoint=endpoint, timeout=0.5)
        result = exporter.export(_one_readable_span())
        exporter.shutdown()

    assert result is SpanExportResult.FAILURE
    assert receiver.requests == [("traces", status)]
    assert len(receiver.raw_bodies) == 1
    assert receiver.spans() == []


def _one_readable_span() -> list[ReadableSpan]:
    provider = TracerProvider(resource=Resource(RESOURCE), id_generator=FixedIds())
    span = provider.get_tracer(semconv.SCOPE_NAME).start_span("s", start_time=1)
    span.end(end_time=2)
    assert isinstance(span, ReadableSpan)
    return [span]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_delay_holds_the_answer(protocol: Protocol) -> None:
    with OTLPReceiver(protocol=protocol, delay=0.3) as receiver:
        endpoint = receiver.endpoint if protocol == "grpc" else f"{receiver.endpoint}/v1/traces"
        exporter = span_exporter(protocol, endpoint=endpoint, timeout=5)
        started = time.monotonic()
        result = exporter.export(_one_readable_span())
        elapsed = time.monotonic() - started
        exporter.shutdown()

    assert result is SpanExportResult.SUCCESS
    assert 0.3 <= elapsed < 3.0
    assert [s["name"] for s in receiver.spans()] == ["s"]


def _export_in_background(
    exporter: SpanExporter,
) -> tuple[threading.Thread, threading.Event, list[SpanExportResult]]:
    """Export one span on a thread: the thread, an event set when the export returned, and
    the export's result once it did."""
    done = threading.Event()
    results: list[SpanExportResult] = []

    def export() -> None:
        results.append(exporter.export(_one_readable_span()))
        done.set()

    thread = threading.Thread(target=export, daemon=True)
    thread.start()
    return thread, done, results


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stop_cuts_a_long_delay_short(protocol: Protocol) -> None:
    receiver = OTLPReceiver(protocol=protocol, delay=60.0)
    receiver.start()
    endpoint = receiver.endpoint if protocol == "grpc" else f"{receiver.endpoint}/v1/traces"
    exporter = span_exporter(protocol, endpoint=endpoint, timeout=30)
    thread, done, results = _export_in_background(exporter)
    # the data is recorded on arrival, while the answer is still held back
    receiver.wait_for(lambda r: len(r.spans()) == 1)
    assert not done.is_set()

    started = time.monotonic()
    receiver.stop()
    stop_took = time.monotonic() - started
    assert done.wait(10.0)
    thread.join()
    exporter.shutdown()
    assert stop_took < 5.0
    # the held request was answered before the server went away
    assert results == [SpanExportResult.SUCCESS]


def test_hold_stalls_every_answer_until_release() -> None:
    with OTLPReceiver() as receiver:
        exporter = span_exporter("http/protobuf", endpoint=f"{receiver.endpoint}/v1/traces",
                                 timeout=30)  # fmt: skip
        receiver.hold()
        thread, done, results = _export_in_background(exporter)
        receiver.wait_for(lambda r: len(r.spans()) == 1)  # recorded, not answered
        assert not done.wait(0.2)
        receiver.release()
        assert done.wait(10.0)
        thread.join()
        exporter.shutdown()
    assert results == [SpanExportResult.SUCCESS]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sink_mode_only_counts(protocol: Protocol) -> None:
    with OTLPReceiver(protocol=protocol, sink=True) as receiver:
        endpoint = receiver.endpoint if protocol == "grpc" else f"{receiver.endpoint}/v1/traces"
        exporter = span_exporter(protocol, endpoint=endpoint)
        assert exporter.export(_one_readable_span() * 3) is SpanExportResult.SUCCESS
        exporter.shutdown()

    assert receiver.counts == {"spans": 3, "logs": 0, "data_points": 0}
    assert receiver.requests == [("traces", 200)]
    assert receiver.spans() == []
    assert receiver.raw_bodies == []


def test_wait_for_times_out_with_a_summary() -> None:
    with (
        OTLPReceiver() as receiver,
        pytest.raises(AssertionError, match=r"0 requests \(http/protobuf, status 200\); 0 spans"),
    ):
        receiver.wait_for(lambda r: len(r.spans()) > 0, timeout=0.05)


def test_dead_endpoint_refuses_connections() -> None:
    url = dead_endpoint()
    assert url.startswith("http://127.0.0.1:")
    port = int(url.rsplit(":", 1)[1])
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=5),
    ):
        pass
