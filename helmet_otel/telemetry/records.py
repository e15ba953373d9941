"""Log records (the ``helmet.*`` events) as the worker builds them: `ReadableLogRecord`s made
directly, without the SDK's logger, and the bodies they carry as ``--capture`` allows."""

from __future__ import annotations

import time
from typing import Any, cast

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord

from helmet_otel import semconv as sc
from helmet_otel.redaction import Redactor
from helmet_otel.telemetry.frames import CUT, NOT_JSON
from helmet_otel.telemetry.pipeline import Pipeline

SEVERITY_TEXT = {s: s.name.rstrip("0123456789") or s.name for s in SeverityNumber}
_SECURITY = sc.EVENT_SECURITY
_POLICY_ID = sc.HELMET_POLICY_ID


class RecordWriter:
    """Emits log records into the pipeline's log queues."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._emit = pipeline.emit_log
        self._emit_urgent = pipeline.emit_urgent_log
        self._resource = pipeline.resource
        self._scope = pipeline.scope

    def emit(
        self,
        event: str,
        ts: int,
        context: Context,
        attributes: dict[str, Any],
        body: Any = None,
        severity: SeverityNumber = SeverityNumber.INFO,
    ) -> None:
        """``context`` gives the record its trace and span ids (an empty one: none). A finding
        and the records of a call a policy decided on are queued so that no sink sheds them."""
        record = LogRecord(
            timestamp=ts,
            observed_timestamp=time.time_ns(),
            context=context,
            severity_number=severity,
            severity_text=SEVERITY_TEXT[severity],
            body=body,
            attributes=attributes,
            event_name=event,
        )
        urgent = event == _SECURITY or _POLICY_ID in attributes
        (self._emit_urgent if urgent else self._emit)(
            ReadableLogRecord(
                log_record=record, resource=self._resource, instrumentation_scope=self._scope
            )
        )


def recorded_body(redactor: Redactor, raw: bytes, size: int, parsed: object, part: str) -> Any:
    """The body of a message's record: the redacted ``part`` of the message (all of it when
    ``part`` is empty), per ``--capture``."""
    if parsed is CUT:  # the relay sent only the head of a large message
        return redactor.body_from_json(raw, size)
    if parsed is NOT_JSON:
        return redactor.body(raw.decode("utf-8", "replace").rstrip("\r\n"))
    if part and isinstance(parsed, dict):
        return redactor.body(cast(dict[str, Any], parsed).get(part))
    return redactor.body(parsed)


def info_attributes(info: object, name_key: str, version_key: str) -> dict[str, str]:
    """``clientInfo`` / ``serverInfo`` as attributes."""
    if not isinstance(info, dict):
        return {}
    fields = cast(dict[str, Any], info)
    return {name_key: str(fields.get("name", "")), version_key: str(fields.get("version", ""))}
