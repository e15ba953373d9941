"""The one module that relies on the OpenTelemetry SDK's private parts.

The SDK's OTLP span and log exporters encode every batch themselves; `OtlpEncoder` writes the
same bytes in a fraction of the time. No public API takes pre-encoded bytes, so the fast path
leans on two things inside the SDK's exporters:

* OTLP/HTTP: our own `otlp_http.HttpSender` posts the bytes when it can take the
  configuration (`encoded_http` is given one); otherwise the exporter's ``_client`` posts them:
  ``_client.export(data: bytes)`` returns a result whose ``success: bool`` says how it went.
  Endpoint, headers, compression, TLS, timeouts and retries come from the
  ``OTEL_EXPORTER_OTLP_*`` variables either way.
* OTLP/gRPC: the exporter's ``export(batch)`` builds its request with
  ``self._translate_data(batch)``, annotated to return the request message. We hand it a batch
  that carries its encoding, and the exporter a ``_translate_data`` that parses it (in C).

`encoded_http` / `encoded_grpc` check these when the exporter is built (`http_problem`,
`grpc_problem`: the attributes exist, the signatures and annotations are the ones above, the
gRPC ``export`` reaches ``_translate_data``, which answers an empty batch with a request).
When anything is off, the exporter takes the fallback: the SDK's public ``export(batch)``
with the SDK's own encoder -- slower, never wrong. ``fast_path`` and ``fallback_reason`` say
which path an exporter is on; ``transport`` which posts an HTTP body ("helmet": our sender,
"sdk": the SDK's client or exporter), ``sender_reason`` why not ours.

On the fallback, the worker's records (``helmet_otel.store.records``) are first made the SDK's
readable types (`sdk_span`, `sdk_log`) with plain values, the way `OtlpEncoder` writes them (an
integer beyond int64 becomes its decimal string, ...): the SDK's encoder would fail a whole log
batch on such a body, and drop such an attribute. So neither path loses a batch to one value, and
both send the same data. Both paths send a batch whose encoding exceeds MAX_REQUEST_BYTES in
halves.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from helmet_otel.store.records import Log, Span
from helmet_otel.telemetry.otlp_encoding import Encoded, OtlpEncoder

__all__ = [
    "LOGS",
    "MAX_REQUEST_BYTES",
    "SPANS",
    "EncodedExporter",
    "Sender",
    "encoded_grpc",
    "encoded_http",
    "grpc_problem",
    "http_problem",
    "plain_log",
    "plain_span",
    "sdk_log",
    "sdk_span",
]

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # larger batches go in halves (collectors cap bodies)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

Item = TypeVar("Item", Span, Log)
Result = TypeVar("Result", SpanExportResult, LogRecordExportResult)
Send = Callable[[Sequence[Item], Encoded], bool]  # (batch, its encoding) -> accepted


class Sender(Protocol):
    """Posts an encoded request body (`otlp_http.HttpSender`)."""

    def send(self, data: Encoded) -> bool: ...

    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class Signal(Generic[Item, Result]):
    """What differs between exporting spans and exporting log records."""

    encode: Callable[[OtlpEncoder, Sequence[Item]], Encoded]
    plain: Callable[[Item], Any]  # the SDK's record as OtlpEncoder writes it, for its encoder
    success: Result
    failure: Result


class EncodedExporter(Generic[Item, Result]):
    """An SDK OTLP span or log exporter that sends `OtlpEncoder`'s bytes when it can."""

    def __init__(
        self,
        sdk: Any,
        signal: Signal[Item, Result],
        encoder: OtlpEncoder,
        send: Send[Item] | None,
        fallback_reason: str | None,
        sender: Sender | None = None,
        sender_reason: str | None = None,
    ) -> None:
        self.sdk = sdk
        self.fast_path = send is not None
        self.fallback_reason = fallback_reason
        self.transport = "sdk" if sender is None else "helmet"
        self.sender_reason = sender_reason
        self._sender = sender
        self._signal = signal
        self._encoder = encoder
        self._send: Send[Item] = send or self._sdk_export
        self._shutdown = False

    def export(self, batch: Sequence[Item]) -> Result:
        if self._shutdown:
            return self._signal.failure
        sent = self._in_halves(batch)
        return self._signal.success if sent else self._signal.failure

    def shutdown(self) -> None:
        self._shutdown = True
        if self._sender is not None:
            self._sender.shutdown()
        self.sdk.shutdown()

    def _in_halves(self, batch: Sequence[Item]) -> bool:
        data = self._signal.encode(self._encoder, batch)
        if len(data) > MAX_REQUEST_BYTES and len(batch) > 1:
            half = len(batch) // 2
            first = self._in_halves(batch[:half])
            return self._in_halves(batch[half:]) and first
        return self._send(batch, data)

    def _sdk_export(self, batch: Sequence[Item], data: Encoded) -> bool:
        """The fallback: the SDK encodes (``data`` only measured the batch)."""
        plain = [self._signal.plain(item) for item in batch]
        return self.sdk.export(plain) is self._signal.success


# -- OTLP/HTTP ------------------------------------------------------------------------------


def http_problem(sdk: Any) -> str | None:
    """Why the HTTP fast path cannot be taken with the SDK exporter ``sdk`` (None: it can)."""
    export = getattr(getattr(sdk, "_client", None), "export", None)
    if not callable(export):
        return f"{type(sdk).__name__} has no _client.export"
    try:
        signature = inspect.signature(export)
        signature.bind(b"")
        hints = typing.get_type_hints(export)
        data = next(iter(signature.parameters))
        answers = typing.get_type_hints(hints["return"])
    except Exception as error:  # a different signature, or annotations that do not resolve
        return f"_client.export is not export(data: bytes) -> result: {error!r}"
    if hints.get(data) is not bytes or answers.get("success") is not bool:
        return f"_client.export is not export(data: bytes) -> result with success: bool: {hints}"
    return None


def encoded_http(
    sdk: Any,
    signal: Signal[Item, Result],
    encoder: OtlpEncoder,
    sender: Sender | None = None,
    sender_reason: str | None = None,
) -> EncodedExporter[Item, Result]:
    """``sdk``, an OTLP/HTTP span or log exporter of the SDK, fed by ``encoder``; ``sender``
    posts the bodies when given (``sender_reason``: why there is none)."""
    if sender is not None:

        def post(batch: Sequence[Item], data: Encoded) -> bool:
            return sender.send(data)

        return EncodedExporter(sdk, signal, encoder, post, None, sender)
    problem = http_problem(sdk)
    if problem is not None:
        return EncodedExporter(sdk, signal, encoder, None, problem, None, sender_reason)

    def send(batch: Sequence[Item], data: Encoded) -> bool:
        return bool(sdk._client.export(bytes(data)).success)  # (bytes, as it is annotated)

    return EncodedExporter(sdk, signal, encoder, send, None, None, sender_reason)


# -- OTLP/gRPC ------------------------------------------------------------------------------


class _Encoded(list[Any]):
    """A batch with its encoding. The SDK's gRPC exporter takes it as any batch (it counts the
    records), and the ``_translate_data`` we give the exporter parses ``data``."""

    def __init__(self, batch: Sequence[Any], data: Encoded) -> None:
        super().__init__(batch)
        self.data = data


def _reaches(cls: type, start: str, target: str, depth: int = 3) -> bool:
    """Whether method ``start`` of ``cls`` refers to ``target``, itself or through the methods
    of ``cls`` it refers to, at most ``depth`` calls down."""
    todo, seen = [(start, 0)], set[str]()
    while todo:
        name, level = todo.pop()
        code = getattr(getattr(cls, name, None), "__code__", None)
        if code is None or name in seen:
            continue
        seen.add(name)
        names: tuple[str, ...] = code.co_names
        if target in names:
            return True
        if level < depth:
            todo += [(n, level + 1) for n in names if callable(getattr(cls, n, None))]
    return False


def grpc_problem(sdk: Any, request: type[Any]) -> str | None:
    """Why the gRPC fast path cannot be taken with the SDK exporter ``sdk``, whose requests
    are ``request`` messages (None: it can)."""
    cls = cast("type[Any]", type(sdk))
    translate = getattr(cls, "_translate_data", None)
    if not callable(translate):
        return f"{type(sdk).__name__} has no _translate_data"
    try:
        inspect.signature(translate).bind(sdk, [])
        returns = typing.get_type_hints(translate).get("return")
        empty = translate(sdk, [])
    except Exception as error:
        return f"_translate_data is not _translate_data(batch) -> request: {error!r}"
    if returns is not request or not isinstance(empty, request):
        return f"_translate_data returns {returns!r}, not {request.__name__}"
    if not _reaches(cls, "export", "_translate_data"):
        return "export does not build its request with _translate_data"
    return None


def encoded_grpc(
    sdk: Any, signal: Signal[Item, Result], encoder: OtlpEncoder, request: type[Any]
) -> EncodedExporter[Item, Result]:
    """``sdk``, an OTLP/gRPC span or log exporter of the SDK sending ``request`` messages, fed
    by ``encoder``."""
    problem = grpc_problem(sdk, request)
    if problem is not None:
        return EncodedExporter(sdk, signal, encoder, None, problem)
    cls = cast("type[Any]", type(sdk))
    sdk_translate: Callable[[Any, Any], Any] = cls._translate_data

    def translate(batch: Any) -> Any:
        if isinstance(batch, _Encoded):
            return request.FromString(batch.data)
        return sdk_translate(sdk, batch)  # a batch that did not come through us

    sdk._translate_data = translate

    def send(batch: Sequence[Item], data: Encoded) -> bool:
        return sdk.export(_Encoded(batch, data)) is signal.success

    return EncodedExporter(sdk, signal, encoder, send, None)


# -- plain records, for the fallback ---------------------------------------------------------


def _odd(value: Any) -> bool:
    """Whether the SDK's encoder could write ``value`` otherwise than `OtlpEncoder`, or fail."""
    kind = cast("type[object]", type(value))
    if kind is str or kind is bool or kind is float or kind is bytes or value is None:
        return False
    if kind is int:
        return not _INT64_MIN <= value <= _INT64_MAX
    if kind is dict:
        return any(_odd(v) for v in value.values())
    if kind is list or kind is tuple:
        return any(_odd(v) for v in value)
    return True  # anything else is made plain (cheap: it is rare)


def _plain(value: Any) -> Any:
    """``value`` in the types the SDK's encoder writes as `OtlpEncoder` writes ``value``."""
    kind = cast("type[object]", type(value))
    if kind is str or kind is bool or kind is float or kind is bytes or value is None:
        return value
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType]
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _plain(int(value))
    if isinstance(value, float):
        return float(value)
    return str(value)


def _plain_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if attributes is None else {k: _plain(v) for k, v in attributes.items()}


def _odd_attributes(attributes: Mapping[str, Any] | None) -> bool:
    return attributes is not None and any(_odd(v) for v in attributes.values())


def _same(attributes: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return attributes


def sdk_span(span: Span, values: Callable[[Any], Any] = _same) -> ReadableSpan:
    """``span`` as the SDK's ``ReadableSpan`` (its attribute maps passed through ``values``)."""
    flags = TraceFlags(span.flags)
    state = TraceState.from_header([span.trace_state]) if span.trace_state else None
    parent = (
        SpanContext(span.trace_id, span.parent, span.parent_remote, flags) if span.parent else None
    )
    code = StatusCode(span.status)
    return ReadableSpan(
        name=span.name,
        context=SpanContext(span.trace_id, span.span_id, False, flags, state),
        parent=parent,
        resource=span.origin.resource,
        attributes=values(span.attributes),
        events=[Event(e.name, values(e.attributes), e.ts) for e in span.events],
        links=[
            Link(SpanContext(k.trace_id, k.span_id, k.remote, flags), values(k.attributes))
            for k in span.links
        ],
        kind=SpanKind(span.kind),
        status=Status(code, span.description) if code is StatusCode.ERROR else Status(code),
        start_time=span.start,
        end_time=span.end,
        instrumentation_scope=span.origin.scope,
    )


def sdk_log(record: Log, values: Callable[[Any], Any] = _same) -> ReadableLogRecord:
    """``record`` as the SDK's ``ReadableLogRecord`` (its body and attributes passed through
    ``values``)."""
    context = Context()
    if record.trace_id:
        ids = SpanContext(record.trace_id, record.span_id, False, TraceFlags(record.flags))
        context = set_span_in_context(NonRecordingSpan(ids))
    log = LogRecord(
        timestamp=record.ts or None,
        observed_timestamp=record.observed,
        context=context,
        severity_number=SeverityNumber(record.severity) if record.severity else None,
        severity_text=record.severity_text,
        body=values(record.body),
        attributes=values(record.attributes),
        event_name=record.event,
    )
    return ReadableLogRecord(log, record.origin.resource, record.origin.scope)


def plain_span(span: Span) -> ReadableSpan:
    """``span`` as the SDK's span, its attribute values plain (see `_plain`)."""
    parts = [span.attributes, *(e.attributes for e in span.events)]
    if not any(_odd_attributes(a) for a in [*parts, *(link.attributes for link in span.links)]):
        return sdk_span(span)
    return sdk_span(span, _plain_attributes)


def plain_log(record: Log) -> ReadableLogRecord:
    """``record`` as the SDK's log record, its body and attribute values plain (see `_plain`)."""
    if not (_odd(record.body) or _odd_attributes(record.attributes)):
        return sdk_log(record)
    return sdk_log(record, _plain)


SPANS = Signal[Span, SpanExportResult](
    OtlpEncoder.spans, plain_span, SpanExportResult.SUCCESS, SpanExportResult.FAILURE
)
LOGS = Signal[Log, LogRecordExportResult](
    OtlpEncoder.logs, plain_log, LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE
)
