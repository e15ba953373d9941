"""Log records (the ``helmet.*`` events) as the worker builds them: `Log`s
(``helmet_otel.store.records``), plain data both sinks read, and the bodies they carry as
``--capture`` allows."""

from __future__ import annotations

import time
from typing import Any, cast

from opentelemetry._logs import SeverityNumber

from helmet_otel import semconv as sc
from helmet_otel.redaction import Redactor
from helmet_otel.store.records import AttributeHead, Log, Origin, Span
from helmet_otel.telemetry.frames import CUT, NOT_JSON, Summary
from helmet_otel.telemetry.gathering import Gatherer
from helmet_otel.telemetry.pipeline import Pipeline

SEVERITY_TEXT = {s: s.name.rstrip("0123456789") or s.name for s in SeverityNumber}
# (number, text) by severity: one lookup per record (by the member's identity: hashing an enum
# member runs Python code)
_SEVERITIES = {id(s): (s.value, SEVERITY_TEXT[s]) for s in SeverityNumber}
_SECURITY = sc.EVENT_SECURITY
_POLICY_ID = sc.HELMET_POLICY_ID
_new_log = tuple[Any, ...].__new__  # a NamedTuple from its fields, without its __new__


class RecordWriter(Gatherer[Log]):
    """Emits log records into the pipeline's log queues."""

    def __init__(self, pipeline: Pipeline, origin: Origin) -> None:
        super().__init__(pipeline.emit_log, pipeline.emit_logs)
        self._emit_urgent = pipeline.emit_urgent_log
        self.origin = origin
        self._observed = 0  # between `gather` and `release`: when the worker read the frames

    def gather(self) -> None:
        """`Gatherer.gather`; the records made until `release` were observed now (what one
        read of the pipe made: their observed time is the read's, one clock reading)."""
        super().gather()
        self._observed = time.time_ns()

    def release(self) -> None:
        self._observed = 0
        super().release()

    def emit(
        self,
        event: str,
        ts: int,
        span: Span | None,
        attributes: dict[str, Any],
        body: Any = None,
        severity: SeverityNumber = SeverityNumber.INFO,
        body_json: str | None = None,
        head: AttributeHead | None = None,
    ) -> None:
        """The record carries ``span``'s trace and span ids (None: no trace). A finding and
        the records of a call a policy decided on are queued so that no sink sheds them.
        ``body_json``: ``body`` as compact JSON, when known (`recorded_body` gives it);
        ``head``: what ``attributes`` begin with (`AttributeHead`)."""
        pair = _SEVERITIES.get(id(severity))
        number, text = (severity.value, SEVERITY_TEXT[severity]) if pair is None else pair
        if span is None:
            trace_id = span_id = flags = 0
        else:
            trace_id, span_id, flags = span.trace_id, span.span_id, span.flags
        record = _new_log(Log, (
            ts, self._observed or time.time_ns(), trace_id, span_id, flags, number, text, event,
            body, attributes, self.origin, body_json, head,
        ))  # fmt: skip
        urgent = event == _SECURITY or _POLICY_ID in attributes
        (self._emit_urgent if urgent else self._emit)(record)


def recorded_body(
    redactor: Redactor, raw: bytes, size: int, parsed: object, part: str
) -> tuple[Any, str | None]:
    """The body of a message's record: the redacted ``part`` of the message (all of it when
    ``part`` is empty), per ``--capture``; and its compact JSON text when the scrubber made it
    (the store keeps that text; the OTLP encoder reuses its encoding of a body that repeats)."""
    if type(parsed) is dict:  # (nearly every message; JSON objects are exact dicts)
        message: dict[str, Any] = parsed  # pyright: ignore[reportUnknownVariableType]
        return redactor.body_and_json(message.get(part) if part else message)
    if parsed is CUT:  # the relay sent only the head of a large message
        return redactor.body_from_json(raw, size), None
    if parsed is NOT_JSON:
        return redactor.body(raw.decode("utf-8", "replace").rstrip("\r\n")), None
    return redactor.body_and_json(parsed)


def info_attributes(info: object, name_key: str, version_key: str) -> dict[str, str]:
    """``clientInfo`` / ``serverInfo`` as attributes."""
    if not isinstance(info, dict):
        return {}
    fields = cast(dict[str, Any], info)
    return {name_key: str(fields.get("name", "")), version_key: str(fields.get("version", ""))}


# Every string a record or span takes from the traffic goes through the redactor, not only the
# bodies: a tool name, a string id, a resource URI, an error message (a span's status) can
# each hold a secret.


def scrubbed_summary(redactor: Redactor, summary: Summary) -> Summary:
    """``summary`` with its strings scrubbed (the same object when none changes). The id is
    kept as it is: it matches a response to its request; `id_text` is what records show."""
    method, target, uri, message = (
        summary.method, summary.target, summary.resource_uri, summary.error_message
    )  # fmt: skip
    clean_method = method if method is None else redactor.scrub_name(method)
    clean_target = target if target is None else redactor.scrub_name(target)
    clean_uri = uri if uri is None else redactor.scrub_text(uri)
    clean_message = message if message is None else redactor.scrub_text(message)
    # (a remembered name is an equal string, not the same one)
    if (
        clean_method == method
        and clean_target == target
        and clean_uri is uri
        and clean_message is message
    ):
        return summary
    return summary._replace(
        method=clean_method, target=clean_target, resource_uri=clean_uri,
        error_message=clean_message,
    )  # fmt: skip


def id_text(redactor: Redactor, request_id: object) -> str:
    """A JSON-RPC id as a record shows it (``jsonrpc.request.id``), scrubbed: a string id can
    be anything the peer chose."""
    return redactor.scrub_text(request_id if type(request_id) is str else str(request_id))


def scrubbed_name(redactor: Redactor, text: str | None) -> str | None:
    return text if text is None else redactor.scrub_name(text)


def scrubbed_info(redactor: Redactor, info: dict[str, Any] | None) -> dict[str, Any] | None:
    """``clientInfo`` / ``serverInfo`` scrubbed like a body (a name or version can be
    anything the peer sent)."""
    if info is None:
        return None
    return cast(dict[str, Any], redactor.scrub(info))
