"""A lenient, read-only view of one JSON-RPC / MCP message.

`inspect` never raises: whatever it cannot read comes back as ``Kind.INVALID`` (not JSON,
not an object) or ``Kind.BATCH`` (a JSON array, the 2025-03-26 batch form). The relay forwards
every kind unchanged; this view only feeds sessions, telemetry and policy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, cast

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


# `inspect` runs for every line. Enum members are slow to look up on their class in Python
# 3.11 (the enum metaclass has a ``__getattr__``), so the hot path uses module constants; and
# JSON decoded by orjson holds exact builtin types only, so ``type(x) is ...`` tests suffice.
_REQUEST = Kind.REQUEST
_RESPONSE = Kind.RESPONSE
_ERROR = Kind.ERROR
_NOTIFICATION = Kind.NOTIFICATION
_BATCH = Kind.BATCH
_INVALID = Kind.INVALID
_BLANK = Kind.BLANK
_ID_TYPES = frozenset((str, int, float))  # not bool: a JSON-RPC id is a string or a number


def inspect(line: bytes) -> Message:
    try:
        data: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:  # a blank line never parses: tell it apart here
        if not line.strip():
            return Message(_BLANK)
        return Message(_INVALID, parse_error=str(exc))
    return classify(data)


def classify(data: Any) -> Message:
    """The view of an already parsed JSON value."""
    if type(data) is not dict:
        if type(data) is list:
            return Message(_BATCH)
        return Message(_INVALID, parse_error="not a JSON object")
    obj: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]  # (cheaper than cast)
    method = obj.get("method")
    raw_id = obj.get("id")
    msg_id: JsonId | None = raw_id if type(raw_id) in _ID_TYPES else None
    if type(method) is str:
        if raw_id is not None:  # present and not null
            return Message(_REQUEST, msg_id, method, obj)
        return Message(_NOTIFICATION, None, method, obj)
    error = obj.get("error")
    if type(error) is dict:
        fields = cast(dict[str, Any], error)
        code: object = fields.get("code")
        message: object = fields.get("message")
        return Message(
            _ERROR,
            msg_id,
            None,
            obj,
            code if type(code) is int else None,
            message if type(message) is str else None,
        )
    if "result" in obj:
        return Message(_RESPONSE, msg_id, None, obj)
    return Message(_INVALID, id=msg_id, payload=obj, parse_error="not a JSON-RPC message")


def error_response(msg_id: JsonId | None, code: int, message: str, data: object = None) -> bytes:
    """A JSON-RPC error response line (with its ``\\n``)."""
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": msg_id, "error": error}) + b"\n"
