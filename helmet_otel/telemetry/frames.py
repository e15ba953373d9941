"""Frames between the relay and the telemetry worker.

The relay writes batches to the worker's stdin. A batch is a header (payload length, records
the relay dropped since the previous batch because the worker was behind, and because the
relay itself was busy) followed by records:

- ``M``: a message the relay forwarded whole, in a fixed binary header followed by its bytes.
  This is nearly every message, and it costs the relay one ``struct.pack`` and two appends: the
  worker, not the relay's loop, parses it again and works out its summary (`summarize`).
- ``P``: any other frame, pickled (pickle is safe here: both ends are this package, parent and
  child process). These are rare: session start and end, changes of session info, stderr lines,
  trace roll-overs, and messages too large to hand over whole, which carry the summary the relay
  worked out from its own parse.

`read_batch` turns a batch back into tuples (first item is the tag):
  ("config", dict)                      once, first
  ("start", ts, dict)                   the session started (ids, command, pid, ...)
  ("msg", ts, direction, size, body, summary, trace_id, server_span_id, client_span_id, weight,
   parsed)
  ("info", dict)                        era, protocol version, client/server info changed
  ("segment", ts, trace_id, root_span_id)      a long session rolls over into a new trace
  ("stderr", ts, line)
  ("failed", ts, reason)                the server could not be started
  ("end", ts, dict)                     the session ended (exit status, reason, counts)
  ("dropped", reason, n)                records the relay shed (relay_queue_full, relay_busy)
  ("close", ts, dict)                   the proxy is shutting down

``weight`` is how many calls (or notifications) the message stands for while the relay traces
only one in so many (1 otherwise); ``parsed`` is the body's JSON value, `CUT` when the body is
only the head of the message, or `NOT_JSON`.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import IO, Any, Final

import orjson

from helmet_otel.protocol.message import NAMED_METHODS, Kind, Message, classify

BATCH = struct.Struct("<III")  # payload length, records the relay shed (queue full, busy)
WHOLE = struct.Struct("<cBHqQQQQQ")  # b"M", flags, weight, ts, size, trace id (hi, lo), spans
_PICKLED = struct.Struct("<cI")  # b"P", length
FLAG_S2C: Final = 1
FLAG_REPLIED: Final = 2  # the proxy answered the message itself; it was not forwarded
_LOW64 = (1 << 64) - 1

CUT: Final = object()
NOT_JSON: Final = object()

Frame = tuple[Any, ...]
Summary = tuple[Any, ...]
# Summary fields, in order: kind, id, method, target name, resource uri, error code, error
# message, is tool error, client traceparent (client requests only), answered by the proxy.


def summarize(msg: Message, c2s: bool, replied: bool) -> Summary:
    """The protocol facts the recorder needs, with ``params`` and ``result`` each read once."""
    method = msg.method
    payload = msg.payload
    target_name: str | None = None
    resource_uri: str | None = None
    client_traceparent: str | None = None
    is_tool_error = False
    if payload is not None:
        if method is not None:
            params = payload.get("params")
            if type(params) is dict:
                fields: dict[str, object] = params  # pyright: ignore[reportUnknownVariableType]
                if method in NAMED_METHODS:
                    name = fields.get("name")
                    target_name = name if type(name) is str else None
                uri = fields.get("uri")
                resource_uri = uri if type(uri) is str else None
                meta = fields.get("_meta")
                if c2s and msg.kind is Kind.REQUEST and type(meta) is dict:
                    entries: dict[str, object] = meta  # pyright: ignore[reportUnknownVariableType]
                    traceparent = entries.get("traceparent")
                    client_traceparent = traceparent if type(traceparent) is str else None
        result = payload.get("result")
        if type(result) is dict:
            result_fields: dict[str, object] = result  # pyright: ignore[reportUnknownVariableType]
            is_tool_error = result_fields.get("isError") is True
    return (
        msg.kind.value, msg.id, method, target_name, resource_uri, msg.error_code,
        msg.error_message, is_tool_error, client_traceparent, replied,
    )  # fmt: skip


def pickled(frame: Frame) -> bytes:
    """A ``P`` record."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    # No memo: frames are trees of plain values (never cyclic), and any unpickler reads the
    # result; shared objects merely arrive as equal copies.
    pickler.fast = True
    pickler.dump(frame)
    data = buffer.getvalue()
    return _PICKLED.pack(b"P", len(data)) + data


def whole(
    direction: int, replied: bool, ts: int, raw: bytes, trace_id: int, server_span: int,
    client_span: int, weight: int = 1,
) -> bytes:  # fmt: skip
    """An ``M`` record (the relay's loop packs these inline; this is the same, for tests)."""
    flags = direction | (FLAG_REPLIED if replied else 0)
    header = WHOLE.pack(
        b"M", flags, weight, ts, len(raw), trace_id >> 64, trace_id & _LOW64, server_span,
        client_span,
    )  # fmt: skip
    return header + raw


def batch(records: bytes, queue_full: int = 0, busy: int = 0) -> bytes:
    return BATCH.pack(len(records), queue_full, busy) + records


def _message(record: tuple[Any, ...], body: bytes) -> Frame:
    _, flags, weight, ts, size, trace_hi, trace_lo, server_span, client_span = record
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = NOT_JSON
        msg = Message(Kind.INVALID)
    else:
        msg = classify(parsed)
    direction = flags & FLAG_S2C
    summary = summarize(msg, not direction, bool(flags & FLAG_REPLIED))
    trace_id = (trace_hi << 64) | trace_lo
    return (
        "msg", ts, direction, size, body, summary, trace_id, server_span, client_span, weight,
        parsed,
    )  # fmt: skip


def decode(data: bytes) -> list[Frame]:
    """The frames of one batch's records."""
    frames: list[Frame] = []
    view = memoryview(data)
    at = 0
    end = len(data)
    while at < end:
        tag = data[at : at + 1]
        if tag == b"M":
            record = WHOLE.unpack_from(data, at)
            at += WHOLE.size
            size = record[4]
            frames.append(_message(record, bytes(view[at : at + size])))
            at += size
        elif tag == b"P":
            _, size = _PICKLED.unpack_from(data, at)
            at += _PICKLED.size
            frame: Frame = pickle.loads(view[at : at + size])
            if frame[0] == "msg":  # a message too large to hand over whole
                frame = (*frame, CUT)
            frames.append(frame)
            at += size
        else:
            raise ValueError(f"unknown frame record {tag!r}")
    return frames


def read_batch(stream: IO[bytes]) -> list[Frame] | None:
    """The next batch, or None at end of stream (a torn last batch counts as the end)."""
    header = stream.read(BATCH.size)
    if len(header) < BATCH.size:
        return None
    size, queue_full, busy = BATCH.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    frames = decode(data)
    if busy:
        frames.insert(0, ("dropped", "relay_busy", busy))
    if queue_full:
        frames.insert(0, ("dropped", "relay_queue_full", queue_full))
    return frames
