"""Frames between the relay and the telemetry worker.

The relay writes batches to the worker's stdin. A batch is a header (payload length, records
the relay dropped since the previous batch because the worker was behind, and because the
relay itself was busy) followed by records:

- ``M``: a message the relay forwarded whole, in a fixed binary header followed by its bytes.
  This is nearly every message, and it costs the relay one ``struct.pack`` and two appends: the
  worker, not the relay's loop, parses it again and works out its summary (`summarize`).
- ``P``: any other frame, pickled (pickle is safe here: both ends are this package, parent and
  child process). These are rare: the configuration, session start and end, changes of session
  info, stderr lines, trace roll-overs, policy decisions and security findings (`Security`),
  and messages too large to hand over whole, which carry the summary the relay worked out
  from its own parse.

One proxy process carries any number of sessions: every session frame names its session by a
``u32`` key the relay chose (`Start` introduces it, `End` retires it). `read_batch` turns a
batch back into the typed frames below (`Frame`); `Dropped` frames come first when the header
counts records the relay shed.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import IO, Any, Final, NamedTuple

from orjson import JSONDecodeError
from orjson import loads as _orjson_loads

from helmet_otel.config import ProxyOptions
from helmet_otel.core.verdicts import Decision, Finding
from helmet_otel.protocol.message import (
    NAMED_METHODS,
    JsonId,
    Kind,
    Message,
    loads_for_record,
)

BATCH = struct.Struct("<III")  # payload length, records the relay shed (queue full, busy)
# b"M", flags, weight, session key, ts, size, server span id, client span id (no trace id: a
# message belongs to its session's current trace, which `Start` and `Segment` tell)
WHOLE = struct.Struct("<cBHIqQQQ")
_PICKLED = struct.Struct("<cI")  # b"P", length
_M, _P = ord("M"), ord("P")  # the tags, as indexing a batch reads them
FLAG_S2C: Final = 1  # direction server->client
FLAG_REPLIED: Final = 2  # on a request: the proxy answered it itself; it was not forwarded
FLAG_PROXY: Final = 4  # on a response or error: the proxy wrote it, not the server
STDERR_LINE_MAX: Final = 8192  # bytes of a server's stderr line handed over (a longer one is cut)
# Builds a NamedTuple from a tuple of its fields: a third of the cost of the generated
# ``__new__`` (0.3 us), which the worker would pay twice for every message it parses.
_tuple = tuple[Any, ...].__new__
_Object = dict[str, object]
_ID_TYPES = frozenset((str, int, float))  # not bool: a JSON-RPC id is a string or a number

CUT: Final = object()  # `Msg.parsed` when the body is only the head of the message
NOT_JSON: Final = object()  # `Msg.parsed` when the body is not JSON


class Summary(NamedTuple):
    """The protocol facts of one message the recorder needs."""

    kind: str  # a `Kind` value
    id: JsonId | None
    method: str | None
    target: str | None  # params.name of tools/call and prompts/get
    resource_uri: str | None
    error_code: int | None
    error_message: str | None
    is_tool_error: bool
    client_traceparent: str | None  # params._meta.traceparent of a client's request
    replied: bool  # a request the proxy answered itself
    proxy: bool  # a response or error the proxy wrote
    http_traceparent: str | None = None  # the ``traceparent`` header of its HTTP request


class Config(NamedTuple):
    """The worker's configuration: the first frame, once per process."""

    options: ProxyOptions
    service_name: str
    proxy_pid: int
    proxy_host: str
    transport: str  # "stdio" (helmet-otel run) or "http" (helmet-otel serve)


class Start(NamedTuple):
    """A session started."""

    session: int
    ts: int
    session_id: str
    transport: str  # the session's: "stdio" or "http"
    trace_id: int
    root_span_id: int
    upstream: dict[str, object]  # "command" (list[str]), "pid", "cwd", "url" when known
    resumed: bool = False  # told again to a new worker (the first died): no second start


class Msg(NamedTuple):
    """A message the relay forwarded (or answered, or wrote itself)."""

    session: int
    ts: int
    s2c: int  # 1: server to client
    size: int  # bytes on the wire
    body: bytes  # the message, or its head when it was too large to hand over whole
    summary: Summary
    server_span_id: int
    client_span_id: int
    weight: int  # how many calls it stands for while the relay traces one in so many
    parsed: object  # the body's JSON value, `CUT` or `NOT_JSON`


class Info(NamedTuple):
    """What the relay learned of a session (all of it, each time something changed)."""

    session: int
    era: str
    protocol_version: str | None
    client_info: dict[str, Any] | None
    server_info: dict[str, Any] | None
    mcp_session_id: str | None  # the protocol's session id (HTTP, legacy era)


class Segment(NamedTuple):
    """A long session rolls over into a new trace."""

    session: int
    ts: int
    trace_id: int
    root_span_id: int


class Stderr(NamedTuple):
    session: int
    ts: int
    line: bytes


class Failed(NamedTuple):
    """The session's server could not be started."""

    session: int
    ts: int
    reason: str


class Restarted(NamedTuple):
    """A crashed server was replaced by a new one (``--restart on-failure``)."""

    session: int
    ts: int
    number: int  # restarts in the session so far, this one included
    upstream: dict[str, object]  # the new server: "command", "pid", "cwd"
    previous: str  # how the crashed server ended
    replayed: bool  # the client's initialize went to the new server again
    failure: str | None  # why the new server cannot take over the session
    usage: tuple[float, float, int] | None  # what the session's servers used so far (`End`)


class End(NamedTuple):
    """A session ended."""

    session: int
    ts: int
    exit_status: int | None
    exit_reason: str | None
    requests: int
    errors: int
    method_counts: dict[str, int]
    era: str
    protocol_version: str | None
    client_info: dict[str, Any] | None
    server_info: dict[str, Any] | None
    # what the server process used, as the relay reaped it: CPU user and system seconds, and
    # its largest resident set in bytes (None: not reaped by us, or no process)
    usage: tuple[float, float, int] | None = None


# The session key of a `Security` frame about the process itself, not a session: a failed
# authentication at the HTTP front happens before any session exists. Keys of sessions start
# at 1.
PROCESS: Final = 0


class Security(NamedTuple):
    """What a policy or a detector concluded on a message, handed over just before the
    message's own record (when that is handed over at all): never shed. ``session`` is
    `PROCESS` for a finding of the process (an auth failure)."""

    session: int
    ts: int
    server_span_id: int  # the request's SERVER span; 0 when the message is not traced
    decision: Decision | None
    findings: tuple[Finding, ...]
    policy: dict[str, object] | None  # a policy (re)loaded: its summary (helmet.configuration)


class Dropped(NamedTuple):
    """Records the relay shed (``relay_queue_full``, ``relay_busy``)."""

    reason: str
    count: int  # pyright: ignore[reportIncompatibleMethodOverride]  # (the contract's name)


class Close(NamedTuple):
    """The proxy is shutting down."""

    ts: int
    reason: str


Frame = (
    Config | Start | Msg | Info | Segment | Stderr | Failed | Restarted | End | Security | Dropped
    | Close
)  # fmt: skip


def summarize(msg: Message, c2s: bool, replied: bool, proxy: bool = False) -> Summary:
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
    return _tuple(Summary, (
        msg.kind._value_, msg.id, method, target_name, resource_uri, msg.error_code,  # (no enum descriptor)
        msg.error_message, is_tool_error, client_traceparent, replied, proxy, None,
    ))  # fmt: skip


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
    session: int, s2c: int, flags_extra: int, ts: int, raw: bytes, server_span: int,
    client_span: int, weight: int = 1,
) -> bytes:  # fmt: skip
    """An ``M`` record (the relay's loop packs these inline; this is the same, for tests).
    ``flags_extra``: `FLAG_REPLIED` and `FLAG_PROXY`, or 0."""
    header = WHOLE.pack(
        b"M", s2c | flags_extra, weight, session, ts, len(raw), server_span, client_span
    )  # fmt: skip
    return header + raw


def batch(records: bytes, queue_full: int = 0, busy: int = 0) -> bytes:
    return BATCH.pack(len(records), queue_full, busy) + records


def _exactly(body: bytes) -> object:
    try:
        return loads_for_record(body)
    except ValueError:
        return NOT_JSON


def summary_of(parsed: Any, flags: int) -> Summary:
    """`summarize` of a parsed ``M`` record's message (``flags``: its record's), read straight
    from its JSON value: no `Message` in between. The same facts (`classify` then `summarize`;
    a test holds them equal)."""
    if type(parsed) is not dict:
        return _tuple(Summary, (
            "batch" if type(parsed) is list else "invalid", None, None, None, None, None, None,
            False, None, flags & FLAG_REPLIED != 0, flags & FLAG_PROXY != 0, None,
        ))  # fmt: skip
    obj: _Object = parsed  # pyright: ignore[reportUnknownVariableType]
    method = obj.get("method")
    raw_id = obj.get("id")
    msg_id = raw_id if type(raw_id) in _ID_TYPES else None
    result = obj.get("result")
    tool_error = False
    if type(result) is dict:
        outcome: _Object = result  # pyright: ignore[reportUnknownVariableType]
        tool_error = outcome.get("isError") is True
    if type(method) is str:
        target = uri = traceparent = None
        params = obj.get("params")
        if type(params) is dict:
            fields: _Object = params  # pyright: ignore[reportUnknownVariableType]
            if method in NAMED_METHODS:
                name = fields.get("name")
                target = name if type(name) is str else None
            value = fields.get("uri")
            uri = value if type(value) is str else None
            if raw_id is not None and not flags & FLAG_S2C:
                meta = fields.get("_meta")
                if type(meta) is dict:
                    entries: _Object = meta  # pyright: ignore[reportUnknownVariableType]
                    value = entries.get("traceparent")
                    traceparent = value if type(value) is str else None
        return _tuple(Summary, (
            "notification" if raw_id is None else "request", msg_id, method, target, uri, None,
            None, tool_error, traceparent, flags & FLAG_REPLIED != 0, flags & FLAG_PROXY != 0,
            None,
        ))  # fmt: skip
    error = obj.get("error")
    if type(error) is dict:
        details: _Object = error  # pyright: ignore[reportUnknownVariableType]
        value = details.get("code")
        code = value if type(value) is int else None
        value = details.get("message")
        return _tuple(Summary, (
            "error", msg_id, None, None, None, code, value if type(value) is str else None,
            tool_error, None, flags & FLAG_REPLIED != 0, flags & FLAG_PROXY != 0, None,
        ))  # fmt: skip
    return _tuple(Summary, (
        "response" if result is not None or "result" in obj else "invalid", msg_id, None, None,
        None, None, None, tool_error, None, flags & FLAG_REPLIED != 0, flags & FLAG_PROXY != 0,
        None,
    ))  # fmt: skip


def _parsed(frame: Msg) -> object:
    """The JSON value of a pickled message: `CUT` when only its head came (too large to hand
    over whole); a whole one (an HTTP message with a traceparent header) is parsed here."""
    if len(frame.body) < frame.size:
        return CUT
    try:
        return loads_for_record(frame.body)
    except ValueError:
        return NOT_JSON


def decode(data: bytes | bytearray, at: int = 0, end: int | None = None) -> list[Frame]:
    """The frames of one batch's records (``data[at:end]``)."""
    frames: list[Frame] = []
    if end is None:
        end = len(data)
    if type(data) is not bytes:  # (copied once: a message's body is then one slice of it)
        data, at, end = bytes(memoryview(data)[at:end]), 0, end - at
    whole = WHOLE.size
    unpack, append, loads = WHOLE.unpack_from, frames.append, _orjson_loads
    while at < end:
        tag = data[at]
        if tag == _M:  # a message, parsed here (no call per message but `summary_of`)
            _, flags, weight, session, ts, size, server_span, client_span = unpack(data, at)
            at += whole
            body = data[at : at + size]
            at += size
            try:
                parsed: Any = loads(body)
            except JSONDecodeError:  # rare: valid JSON orjson refuses (lone surrogates...)
                parsed = _exactly(body)  # or not JSON
            else:
                top: Any = parsed  # (narrowed here, not ``parsed``)
                if type(top) is dict and type(top.get("id")) is float:  # pyright: ignore[reportUnknownMemberType,reportUnknownArgumentType]
                    parsed = _exactly(body)  # an id beyond 64 bits: an exact integer (`float_id`)
            append(_tuple(Msg, (
                session, ts, flags & FLAG_S2C, size, body, summary_of(parsed, flags),
                server_span, client_span, weight, parsed,
            )))  # fmt: skip
        elif tag == _P:
            _, size = _PICKLED.unpack_from(data, at)
            at += _PICKLED.size
            frame: Frame = pickle.loads(data[at : at + size])
            if type(frame) is Msg and frame.parsed is None:
                frame = frame._replace(parsed=_parsed(frame))
            append(frame)
            at += size
        else:
            raise ValueError(f"unknown frame record {bytes([tag])!r}")
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
    return _with_drops(decode(data), queue_full, busy)


def _with_drops(frames: list[Frame], queue_full: int, busy: int) -> list[Frame]:
    if busy:
        frames.insert(0, Dropped("relay_busy", busy))
    if queue_full:
        frames.insert(0, Dropped("relay_queue_full", queue_full))
    return frames


READ_SIZE = 1 << 14  # bytes read at once at most: the frames of a read are alive together


class BatchReader:
    """Batches from a pipe as they arrive, without a thread: `read` takes whatever the pipe
    holds in one read and returns the frames of every whole batch in it (a batch the pipe has
    only begun waits for the next read). The caller waits for the pipe to be readable (the
    worker polls it with its own timeout); `read` then does not block."""

    def __init__(self, fd: int, size: int = 1 << 20) -> None:
        self._raw = io.FileIO(fd, "rb", closefd=False)
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._length = 0  # bytes of ``_buffer`` read and not yet decoded

    def read(self) -> list[Frame] | None:
        """The frames of the whole batches read now (perhaps none), or None at the end of the
        stream (a torn last batch counts as the end)."""
        length = self._length
        if length == len(self._buffer):
            self._grow()
        count = self._raw.readinto(self._view[length : length + READ_SIZE])
        if not count:
            return None
        length += count
        buffer = self._buffer
        frames: list[Frame] = []
        at = 0
        header = BATCH.size
        while length - at >= header:
            size, queue_full, busy = BATCH.unpack_from(buffer, at)
            if length - at - header < size:
                if header + size > len(buffer):
                    self._grow(header + size)
                    buffer = self._buffer
                break
            if queue_full or busy:
                frames += _with_drops([], queue_full, busy)
            frames += decode(buffer, at + header, at + header + size)
            at += header + size
        if at:
            left = length - at
            buffer[:left] = buffer[at:length]
            length = left
        self._length = length
        return frames

    def _grow(self, size: int = 0) -> None:
        """Room for a batch larger than the buffer."""
        self._view.release()
        self._buffer = self._buffer + bytearray(
            max(size, len(self._buffer) * 2) - len(self._buffer)
        )
        self._view = memoryview(self._buffer)
