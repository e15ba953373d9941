"""A real OTLP receiver (HTTP/protobuf or gRPC) for the test suite and the benchmarks.

It listens on 127.0.0.1 on a port the OS picks, decodes every export with the
``opentelemetry-proto`` messages and keeps flattened, plain-Python views of the spans, log
records and metrics it accepted, plus every raw (decompressed) request body it received::

    with OTLPReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        ...  # run something that exports
        receiver.wait_for(lambda r: any(s["name"] == "session" for s in r.spans()))

Semantics worth knowing:

* ``raw_bodies`` holds the body of every request that arrived, whatever ``status`` answers;
  ``spans()``/``logs()``/``metrics()`` only hold exports that were answered with success (a
  collector that answered 503 did not accept the data).
* ``delay`` is applied after the request was recorded and before the answer, so a test can see
  the data arrive while the exporter is still waiting. Stopping the receiver cuts the delay short.
* ``hold()`` stalls the collector the same way until ``release()``: every request that arrives
  meanwhile is recorded and then waits for its answer (stopping the receiver releases it).
* HTTP only: ``script`` holds the statuses the next requests get, in order, before ``status``
  answers again; ``retry_after`` is sent as ``Retry-After`` with every answer that is not a
  success; ``headers`` holds every request's headers (lower-cased names); ``connections`` counts
  the connections accepted; ``tls=(certfile, keyfile)`` serves HTTPS (``endpoint`` is then
  ``https://localhost:PORT``).
* ``sink=True`` (for benchmarks) keeps no raw bodies and no flattened spans or log records,
  only ``counts`` and the (small) flattened metrics, so a long run does not grow the receiver.
* For gRPC, ``status`` is translated to the gRPC status code the OTLP spec pairs with it
  (503 -> UNAVAILABLE, 429 -> RESOURCE_EXHAUSTED, 400 -> INVALID_ARGUMENT, ...), and
  ``raw_bodies`` holds the re-serialised request message (gRPC decompresses and parses before
  the servicer sees it; protobuf keeps every field, so the bytes carry the same strings).
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["OTLPReceiver", "Protocol", "dead_endpoint", "decode_any_value"]

Protocol = Literal["http/protobuf", "grpc"]
Signal = Literal["traces", "logs", "metrics"]

_HTTP_PATHS: dict[str, Signal] = {
    "/v1/traces": "traces",
    "/v1/logs": "logs",
    "/v1/metrics": "metrics",
}

_GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}


def dead_endpoint() -> str:
    """An ``http://127.0.0.1:PORT`` URL where nothing listens (the port was just released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- decoding -------------------------------------------------------------------------------


def decode_any_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP ``AnyValue`` as plain Python (str/int/float/bool/bytes/list/dict, or None)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: decode_any_value(kv.value) for kv in pairs}


def _hex(raw: bytes) -> str:
    return raw.hex()


def _scope(scope: common_pb2.InstrumentationScope) -> dict[str, Any]:
    return {"name": scope.name, "version": scope.version}


def _enum_name(enum_type: Any, number: int, prefix: str) -> str:
    name: str = enum_type.Name(number)
    return name.removeprefix(prefix)


def _flatten_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = _scope(scope_spans.scope)
            for span in scope_spans.spans:
                out.append(
                    {
                        "name": span.name,
                        "kind": _enum_name(trace_pb2.Span.SpanKind, span.kind, "SPAN_KIND_"),
                        "trace_id": _hex(span.trace_id),
                        "span_id": _hex(span.span_id),
                        "parent_span_id": _hex(span.parent_span_id),
                        "attributes": _attributes(span.attributes),
                        "status": {
                            "code": _enum_name(
                                trace_pb2.Status.StatusCode, span.status.code, "STATUS_CODE_"
                            ),
                            "message": span.status.message,
                        },
                        "links": [
                            {
                                "trace_id": _hex(link.trace_id),
                                "span_id": _hex(link.span_id),
                                "attributes": _attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                        "events": [
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "attributes": _attributes(event.attributes),
                            }
                            for event in span.events
                        ],
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "resource": resource,
                        "scope": scope,
                    }
                )
    return out


def _flatten_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = _scope(scope_logs.scope)
            for record in scope_logs.log_records:
                out.append(
                    {
                        "event_name": record.event_name,
                        "severity_number": int(record.severity_number),
                        "severity_text": record.severity_text,
                        "body": decode_any_value(record.body),
                        "attributes": _attributes(record.attributes),
                        "trace_id": _hex(record.trace_id),
                        "span_id": _hex(record.span_id),
                        "flags": record.flags,
                        "time_unix_nano": record.time_unix_nano,
                        "observed_time_unix_nano": record.observed_time_unix_nano,
                        "resource": resource,
                        "scope": scope,
                    }
                )
    return out


def _exemplars(exemplars: Iterable[metrics_pb2.Exemplar]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for exemplar in exemplars:
        which = exemplar.WhichOneof("value")
        out.append(
            {
                "value": getattr(exemplar, which) if which else None,
                "trace_id": _hex(exemplar.trace_id),
                "span_id": _hex(exemplar.span_id),
                "attributes": _attributes(exemplar.filtered_attributes),
            }
        )
    return out


def _number_point(point: metrics_pb2.NumberDataPoint) -> dict[str, Any]:
    which = point.WhichOneof("value")
    return {
        "attributes": _attributes(point.attributes),
        "count": None,
        "sum": None,
        "bucket_counts": None,
        "explicit_bounds": None,
        "value": getattr(point, which) if which else None,
        "exemplars": _exemplars(point.exemplars),
    }


def _histogram_point(point: metrics_pb2.HistogramDataPoint) -> dict[str, Any]:
    return {
        "attributes": _attributes(point.attributes),
        "count": point.count,
        "sum": point.sum if point.HasField("sum") else None,
        "bucket_counts": list(point.bucket_counts),
        "explicit_bounds": list(point.explicit_bounds),
        "value": None,
        "exemplars": _exemplars(point.exemplars),
    }


def _exponential_point(point: metrics_pb2.ExponentialHistogramDataPoint) -> dict[str, Any]:
    return {
        "attributes": _attributes(point.attributes),
        "count": point.count,
        "sum": point.sum if point.HasField("sum") else None,
        "bucket_counts": list(point.positive.bucket_counts),
        "explicit_bounds": None,
        "value": None,
        "exemplars": _exemplars(point.exemplars),
        # exponential-only extras
        "scale": point.scale,
        "zero_count": point.zero_count,
        "positive_offset": point.positive.offset,
        "negative_offset": point.negative.offset,
        "negative_bucket_counts": list(point.negative.bucket_counts),
    }


def _temporality(value: int) -> str:
    return _enum_name(metrics_pb2.AggregationTemporality, value, "AGGREGATION_TEMPORALITY_")


def _flatten_metric(metric: metrics_pb2.Metric) -> dict[str, Any]:
    which = metric.WhichOneof("data")
    base: dict[str, Any] = {
        "name": metric.name,
        "unit": metric.unit,
        "description": metric.description,
    }
    if which == "histogram":
        base.update(
            type="histogram",
            temporality=_temporality(metric.histogram.aggregation_temporality),
            is_monotonic=None,
            data_points=[_histogram_point(p) for p in metric.histogram.data_points],
        )
    elif which == "sum":
        base.update(
            type="sum",
            temporality=_temporality(metric.sum.aggregation_temporality),
            is_monotonic=metric.sum.is_monotonic,
            data_points=[_number_point(p) for p in metric.sum.data_points],
        )
    elif which == "gauge":
        base.update(
            type="gauge",
            temporality=None,
            is_monotonic=None,
            data_points=[_number_point(p) for p in metric.gauge.data_points],
        )
    elif which == "exponential_histogram":
        base.update(
            type="exponential_histogram",
            temporality=_temporality(metric.exponential_histogram.aggregation_temporality),
            is_monotonic=None,
            data_points=[_exponential_point(p) for p in metric.exponential_histogram.data_points],
        )
    else:  # summary (legacy) or unset: keep the name visible, no points
        base.update(type=which or "unset", temporality=None, is_monotonic=None, data_points=[])
    return base


def _flatten_metrics(
    request: metrics_service_pb2.ExportMetricsServiceRequest,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = _scope(scope_metrics.scope)
            for metric in scope_metrics.metrics:
                flat = _flatten_metric(metric)
                flat["resource"] = resource
                flat["scope"] = scope
                out.append(flat)
    return out


_REQUEST_TYPES: dict[Signal, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
}

_RESPONSE_TYPES: dict[Signal, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
}


# --- the receiver ---------------------------------------------------------------------------


class OTLPReceiver:
    """An in-process OTLP collector stand-in; see the module docstring."""

    def __init__(
        self,
        *,
        protocol: Protocol = "http/protobuf",
        delay: float = 0.0,
        status: int = 200,
        sink: bool = False,
        tls: tuple[str, str] | None = None,
    ) -> None:
        if protocol not in ("http/protobuf", "grpc"):
            raise ValueError(f"unsupported protocol {protocol!r}")
        self.protocol: Protocol = protocol
        self.delay = delay
        self.status = status
        self.sink = sink
        self.tls = tls
        self.script: list[int] = []
        self.retry_after: str | None = None
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        self.endpoint = ""
        self.raw_bodies: list[bytes] = []
        # (signal, answered status) of every request, in arrival order
        self.requests: list[tuple[str, int]] = []
        # accepted items per kind: spans, log records, metric data points
        self.counts: dict[str, int] = {"spans": 0, "logs": 0, "data_points": 0}
        self._spans: list[dict[str, Any]] = []
        self._logs: list[dict[str, Any]] = []
        self._metrics: list[dict[str, Any]] = []
        self._cond = threading.Condition(threading.RLock())
        self._stopping = threading.Event()
        self._open = threading.Event()  # cleared by hold(): answers wait until release()
        self._open.set()
        self._inflight = 0
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._grpc: grpc.Server | None = None

    # -- lifecycle --

    def __enter__(self) -> OTLPReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()

    def stop(self) -> None:
        self._stopping.set()  # cuts every pending delay short
        with self._cond:  # let the requests in flight be answered before the servers go
            self._cond.wait_for(lambda: self._inflight == 0, timeout=5.0)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            with self._cond:
                connections = list(self._connections)
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            if self._http_thread is not None:
                self._http_thread.join()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=2.0).wait()  # lets answered calls finish sending
            self._grpc = None

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    # -- what was received --

    def spans(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._spans)

    def logs(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._logs)

    def metrics(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._metrics)

    def wait_for(self, predicate: Callable[[OTLPReceiver], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate(self)`` holds; re-checked after every export received."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"OTLPReceiver.wait_for timed out: {self.summary()}")
                self._cond.wait(remaining)

    def summary(self) -> str:
        with self._cond:
            span_names = sorted({s["name"] for s in self._spans})
            events = sorted({r["event_name"] for r in self._logs})
            metric_names = sorted({m["name"] for m in self._metrics})
            return (
                f"{len(self.requests)} requests ({self.protocol}, status {self.status}); "
                f"{len(self._spans)} spans {span_names}; "
                f"{len(self._logs)} log records {events}; "
                f"{len(self._metrics)} metrics {metric_names}"
            )

    # -- shared ingestion --

    def _next_status(self) -> int:
        with self._cond:
            return self.script.pop(0) if self.script else self.status

    def _ingest(
        self,
        signal: Signal,
        raw: bytes,
        message: Message,
        accepted: bool,
        status: int | None = None,
    ) -> None:
        kind, n, flat = "", 0, list[dict[str, Any]]()
        if accepted:
            if isinstance(message, trace_service_pb2.ExportTraceServiceRequest):
                kind = "spans"
                n = sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
                flat = [] if self.sink else _flatten_spans(message)
            elif isinstance(message, logs_service_pb2.ExportLogsServiceRequest):
                kind = "logs"
                n = sum(len(sl.log_records) for rl in message.resource_logs for sl in rl.scope_logs)
                flat = [] if self.sink else _flatten_logs(message)
            else:
                assert isinstance(message, metrics_service_pb2.ExportMetricsServiceRequest)
                kind = "data_points"
                flat = _flatten_metrics(message)
                n = sum(len(m["data_points"]) for m in flat)
        with self._cond:
            if not self.sink:
                self.raw_bodies.append(raw)
            self.requests.append((signal, self.status if status is None else status))
            if accepted:
                self.counts[kind] += n
                if kind == "spans":
                    self._spans.extend(flat)
                elif kind == "logs":
                    self._logs.extend(flat)
                else:
                    self._metrics.extend(flat)
            self._cond.notify_all()

    def hold(self) -> None:
        """Stall: requests are recorded, their answers wait until `release` (or `stop`)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _pause(self) -> None:
        if self.delay > 0:
            self._stopping.wait(self.delay)
        while not self._open.wait(0.05) and not self._stopping.is_set():
            pass

    def _track(self, delta: int) -> None:
        with self._cond:
            self._inflight += delta
            self._cond.notify_all()

    @property
    def _accepts(self) -> bool:
        return 200 <= self.status < 300

    # -- HTTP --

    def _start_http(self) -> None:
        receiver = self

        class Handler(_OTLPHTTPHandler):
            owner = receiver

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._http = server
        port = server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            self.endpoint = f"https://localhost:{port}"
        self._http_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-http-{port}",
            daemon=True,
        )
        self._http_thread.start()

    # -- gRPC --

    def _start_grpc(self) -> None:
        server = grpc.server(ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsServicer(self), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server
        self.endpoint = f"http://127.0.0.1:{port}"

    def _grpc_export(
        self, signal: Signal, request: Message, context: grpc.ServicerContext
    ) -> Message:
        self._track(+1)
        try:
            self._ingest(signal, request.SerializeToString(), request, self._accepts)
            self._pause()
        finally:
            self._track(-1)
        if not self._accepts:
            code = _GRPC_CODES.get(self.status, grpc.StatusCode.UNKNOWN)
            context.abort(code, f"OTLPReceiver answers {self.status}")
        return _RESPONSE_TYPES[signal]()


class _OTLPHTTPHandler(BaseHTTPRequestHandler):
    owner: OTLPReceiver
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporters expect

    def setup(self) -> None:
        super().setup()
        with self.owner._cond:
            self.owner._connections.add(self.connection)
            self.owner.connections += 1

    def finish(self) -> None:
        with self.owner._cond:
            self.owner._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(length)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            retry_after = self.owner.retry_after
            if retry_after is not None and not 200 <= status < 300:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        code = _GRPC_CODES.get(status, grpc.StatusCode.UNKNOWN).value[0]
        body = status_pb2.Status(code=code, message=message).SerializeToString()
        self._answer(status, body, "application/x-protobuf")

    def do_POST(self) -> None:
        self.owner._track(+1)
        try:
            self._post()
        finally:
            self.owner._track(-1)

    def _post(self) -> None:
        owner = self.owner
        signal = _HTTP_PATHS.get(self.path.split("?", 1)[0])
        body = self._read_body()
        with owner._cond:
            owner.headers.append({k.lower(): v for k, v in self.headers.items()})
        if signal is None:
            self._error(HTTPStatus.NOT_FOUND, f"unknown path {self.path}")
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if content_type != "application/x-protobuf":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported {content_type!r}")
            return
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported encoding {encoding}")
                return
            message = _REQUEST_TYPES[signal]()
            message.ParseFromString(body)
        except (OSError, zlib.error, EOFError, DecodeError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"undecodable body: {exc}")
            return
        status = owner._next_status()
        accepts = 200 <= status < 300
        owner._ingest(signal, body, message, accepts, status)
        owner._pause()
        if accepts:
            response = _RESPONSE_TYPES[signal]().SerializeToString()
            self._answer(status, response, "application/x-protobuf")
        else:
            self._error(status, f"OTLPReceiver answers {status}")


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: OTLPReceiver) -> None:
        self._owner = owner

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._owner._grpc_export("traces", request, context)


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, owner: OTLPReceiver) -> None:
        self._owner = owner

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._owner._grpc_export("logs", request, context)


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, owner: OTLPReceiver) -> None:
        self._owner = owner

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._owner._grpc_export("metrics", request, context)
