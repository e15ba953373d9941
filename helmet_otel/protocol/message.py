"""A lenient, read-only view of one JSON-RPC / MCP message.

`inspect` never raises: whatever it cannot read comes back as ``Kind.INVALID`` (not JSON,
not an object) or ``Kind.BATCH`` (a JSON array, the 2025-03-26 batch form). The relay forwards
every kind unchanged; this view only feeds sessions, telemetry and policy.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson

JsonId = str | int | float

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
NAMED_METHODS = ("tools/call", "prompts/get")  # methods whose params.name is the span target


class Kind(enum.Enum):
    REQUEST = "request"
    RESPONSE = "response"  # a result
    ERROR = "error"  # an error response
    NOTIFICATION = "notification"
    BATCH = "batch"
    INVALID = "invalid"
    BLANK = "blank"  # an empty or whitespace-only line


@dataclass(slots=True)
class Message:
    kind: Kind
    id: JsonId | None = None
    method: str | None = None
    payload: dict[str, Any] | None = None  # the parsed object, when it is one
    error_code: int | None = None
    error_message: str | None = None
    parse_error: str | None = None

    @property
    def params(self) -> dict[str, Any] | None:
        if self.payload is None:
            return None
        params = self.payload.get("params")
        return params if isinstance(params, dict) else None  # pyright: ignore[reportUnknownVariableType]

    @property
    def result(self) -> dict[str, Any] | None:
        if self.payload is None:
            return None
        result = self.payload.get("result")
        return result if isinstance(result, dict) else None  # pyright: ignore[reportUnknownVariableType]

    @property
    def target_name(self) -> str | None:
        """``params.name`` of ``tools/call`` / ``prompts/get``: the span target."""
        if self.method not in NAMED_METHODS:
            return None
        params = self.params
        name = params.get("name") if params else None
        return name if isinstance(name, str) else None

    @property
    def is_tool_error(self) -> bool:
        result = self.result
        return bool(result and result.get("isError") is True)


def id_key(value: JsonId) -> tuple[bool, JsonId]:
    """A dict key that keeps ``1`` and ``"1"`` apart, as JSON-RPC does."""
    return (isinstance(value, str), value)


# The kinds as module constants, for the per-message paths here and in the core and telemetry:
# enum members are slow to look up on their class in Python 3.11 (the enum metaclass has a
# ``__getattr__``; 192 ns against 21 ns for a module global). JSON decoded by orjson holds exact
# builtin types only, so ``type(x) is ...`` tests suffice.
REQUEST: Final = Kind.REQUEST
RESPONSE: Final = Kind.RESPONSE
ERROR: Final = Kind.ERROR
NOTIFICATION: Final = Kind.NOTIFICATION
BATCH: Final = Kind.BATCH
INVALID: Final = Kind.INVALID
BLANK: Final = Kind.BLANK
_ID_TYPES = frozenset((str, int, float))  # not bool: a JSON-RPC id is a string or a number


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_stdlib_decode = json.JSONDecoder(parse_constant=_no_constant).decode


def _exact_loads(text: str) -> Any:
    try:
        return _stdlib_decode(text)
    except RecursionError:  # nested deeper than the stdlib parser goes: not readable here
        raise ValueError("JSON nested too deeply") from None


def float_id(value: Any) -> bool:
    """Whether ``value`` is an object whose ``id`` orjson read as a float: an integer beyond 64
    bits, which only the stdlib parser reads exactly."""
    if type(value) is not dict:
        return False
    # (no ``cast(dict[str, Any], ...)``: subscripting a generic costs more than the test)
    obj: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
    return type(obj.get("id")) is float


def loads_exact(data: bytes) -> Any:
    """The JSON value of ``data``, exactly: orjson where it can (fast), else the stdlib parser.

    orjson refuses valid JSON that does not fit a double or UTF-8 (``1e400``, a lone surrogate
    escape such as ``"\\ud834"``, which Node's ``JSON.stringify`` writes for a cut emoji) and
    reads integers beyond 64 bits as floats. The stdlib parser keeps big integers exact and
    accepts the rest (``NaN`` and ``Infinity``, which are not JSON, stay refused). Raises
    ``ValueError`` when neither can read it.
    """
    try:
        value: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _exact_loads(data.decode("utf-8"))
    if float_id(value):
        return _exact_loads(data.decode("utf-8"))  # an id beyond 64 bits is an exact integer
    return value


def _valid_unicode(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD."""
    if type(value) is str:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if type(value) is dict:
        items: dict[Any, Any] = value  # pyright: ignore[reportUnknownVariableType]
        return {_valid_unicode(k): _valid_unicode(v) for k, v in items.items()}
    if type(value) is list:
        return [_valid_unicode(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def loads_for_record(data: bytes) -> Any:
    """`loads_exact`, for telemetry: what it records must be valid Unicode (a store or an OTLP
    encoder refuses a lone surrogate), so those become U+FFFD. Never on the forwarding path."""
    try:
        value: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _valid_unicode(_exact_loads(data.decode("utf-8")))
    if float_id(value):
        return _exact_loads(data.decode("utf-8"))  # (orjson read it: no surrogates in it)
    return value


def inspect(line: bytes) -> Message:
    try:
        data: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:  # rare: valid JSON orjson refuses, or not JSON
        if not line.strip():  # a blank line never parses: tell it apart here
            return Message(BLANK)
        try:
            data = _exact_loads(line.decode("utf-8"))
        except ValueError:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
            return Message(INVALID, parse_error=str(exc))
        return classify(data)
    message = classify(data)
    if type(message.id) is float:  # rare: orjson reads integers beyond 64 bits as floats
        return classify(loads_exact(line))
    return message


def classify(data: Any) -> Message:
    """The view of an already parsed JSON value."""
    if type(data) is not dict:
        if type(data) is list:
            return Message(BATCH)
        return Message(INVALID, parse_error="not a JSON object")
    obj: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]  # (cheaper than cast)
    method = obj.get("method")
    raw_id = obj.get("id")
    msg_id: JsonId | None = raw_id if type(raw_id) in _ID_TYPES else None
    if type(method) is str:
        if raw_id is not None:  # present and not null
            return Message(REQUEST, msg_id, method, obj)
        return Message(NOTIFICATION, None, method, obj)
    error = obj.get("error")
    if type(error) is dict:
        fields = cast(dict[str, Any], error)
        code: object = fields.get("code")
        message: object = fields.get("message")
        return Message(
            ERROR,
            msg_id,
            None,
            obj,
            code if type(code) is int else None,
            message if type(message) is str else None,
        )
    if "result" in obj:
        return Message(RESPONSE, msg_id, None, obj)
    return Message(INVALID, id=msg_id, payload=obj, parse_error="not a JSON-RPC message")


PROGRESS = "notifications/progress"


def progress_key(msg: Message) -> object:
    """The progress token that ties a request to its progress notifications, as a dict key
    (its type included, so ``1`` and ``"1"`` differ), or None: a request's
    ``params._meta.progressToken``, a progress notification's ``params.progressToken``."""
    params = msg.params
    if params is None:
        return None
    if msg.method == PROGRESS:
        token: object = params.get("progressToken")
    else:
        meta: object = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if isinstance(token, str | int) and not isinstance(token, bool):
        return (type(token).__name__, token)
    return None


def error_response(msg_id: JsonId | None, code: int, message: str, data: object = None) -> bytes:
    """A JSON-RPC error response line (with its ``\\n``)."""
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    response = {"jsonrpc": "2.0", "id": msg_id, "error": error}
    try:
        return orjson.dumps(response) + b"\n"
    except TypeError:  # an id beyond 64 bits: the stdlib writes any integer exactly
        return json.dumps(response, separators=(",", ":")).encode() + b"\n"


def cancelled_notification(request_id: JsonId, reason: str) -> bytes:
    """A ``notifications/cancelled`` for ``request_id`` (one line, with its ``\\n``)."""
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": reason}}  # fmt: skip
    try:
        return orjson.dumps(note) + b"\n"
    except TypeError:  # an id beyond 64 bits
        return json.dumps(note, separators=(",", ":")).encode() + b"\n"
