"""A small stdio MCP server that speaks both protocol eras, for demos and tests.

Run it directly with ``python -m helmet_otel.examples.demo_server`` or behind the proxy with
``helmet-otel python -m helmet_otel.examples.demo_server``. It needs nothing beyond the standard
library and orjson.

Legacy era (2025-11-25 and earlier): the ``initialize`` handshake, ``notifications/initialized``,
``ping``, ``logging/setLevel`` and real server-to-client ``sampling/createMessage`` requests.
Modern era (2026-07-28), picked per request from ``params._meta``: ``server/discover``,
``resultType`` and ``_meta`` server info on every result, cache hints on list and read results,
and sampling as an ``input_required`` result that the client answers by retrying.

Tools: ``echo``, ``add``, ``slow`` (progress and cancellation), ``fail``, ``sample``, ``log``
and ``stderr``. Prompt: ``greet``. Resource: ``demo://readme``.

The server reads newline-delimited messages of any size from stdin, answers on stdout (one
writer at a time) and exits when stdin ends. It writes one line to stderr when it starts.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, Final, TextIO, cast

import orjson

__all__ = ["SERVER_INFO", "DemoServer", "main"]

SERVER_INFO: Final[dict[str, str]] = {"name": "helmet-demo", "version": "1.0.0"}
LEGACY_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: Final = ("2026-07-28",)
LATEST_LEGACY_VERSION: Final = "2025-11-25"

README_URI: Final = "demo://readme"
README_TEXT: Final = (
    "helmet demo server\n"
    "Tools: echo, add, slow, fail, sample, log, stderr. Prompt: greet. Resource: demo://readme.\n"
)
INSTRUCTIONS: Final = "A demo server: call echo or add, or slow to watch progress notifications."

_META_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
_META_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
_META_LOG_LEVEL: Final = "io.modelcontextprotocol/logLevel"
_META_SERVER_INFO: Final = "io.modelcontextprotocol/serverInfo"

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
RESOURCE_NOT_FOUND_LEGACY: Final = -32002
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022

LOG_LEVELS: Final = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)

_CACHEABLE: Final = frozenset(
    {
        "server/discover",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    }
)

_CAPABILITIES: Final[dict[str, object]] = {
    "tools": {"listChanged": False},
    "prompts": {"listChanged": False},
    "resources": {"subscribe": False, "listChanged": False},
    "logging": {},
}

_TOOLS: Final[list[dict[str, object]]] = [
    {
        "name": "echo",
        "description": "Return the given text unchanged.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
        "outputSchema": {
            "type": "object",
            "properties": {"sum": {"type": "number"}},
            "required": ["sum"],
        },
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "slow",
        "description": (
            "Sleep for `seconds` in `steps` steps, reporting progress after each step when the "
            "request carries a progress token. A cancelled call is never answered."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "seconds": {"type": "number", "minimum": 0},
                "steps": {"type": "integer", "minimum": 1, "default": 4},
            },
            "required": ["seconds"],
        },
    },
    {
        "name": "fail",
        "description": "Always fail with a tool execution error (isError: true).",
        "inputSchema": {
            "type": "object",
            "properties": {"message": {"type": "string", "default": "this tool always fails"}},
        },
    },
    {
        "name": "sample",
        "description": "Ask the client's model for a completion of `prompt` and return its text.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "prompt": {"type": "string"},
                "maxTokens": {"type": "integer", "minimum": 1, "default": 100},
            },
            "required": ["prompt"],
        },
    },
    {
        "name": "log",
        "description": "Send `data` to the client as a notifications/message at `level`.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "level": {"type": "string", "enum": list(LOG_LEVELS), "default": "info"},
                "data": {"type": "string"},
            },
            "required": ["data"],
        },
    },
    {
        "name": "stderr",
        "description": "Write `text` as one line to the server's stderr.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
]

_PROMPTS: Final[list[dict[str, object]]] = [
    {
        "name": "greet",
        "description": "Greet someone by name.",
        "arguments": [{"name": "name", "description": "Who to greet", "required": True}],
    }
]

_RESOURCES: Final[list[dict[str, object]]] = [
    {
        "uri": README_URI,
        "name": "readme",
        "description": "What this demo server offers.",
        "mimeType": "text/plain",
    }
]

JsonObject = dict[str, Any]


class RpcError(Exception):
    """A JSON-RPC error to send back instead of a result."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class ToolError(Exception):
    """A tool execution failure, reported as a result with ``isError: true``."""


class _Call:
    """One request from the client, with what the era rules need to answer it."""

    __slots__ = ("cancelled", "id", "log_level", "method", "modern", "params")

    def __init__(self, request_id: object, method: str, params: JsonObject) -> None:
        self.id = request_id
        self.method = method
        self.params = params
        meta = _as_object(params.get("_meta")) or {}
        version = meta.get(_META_VERSION)
        self.modern = version is not None
        level = meta.get(_META_LOG_LEVEL)
        self.log_level: str | None = level if isinstance(level, str) else None
        self.cancelled = threading.Event()

    @property
    def progress_token(self) -> object:
        meta = _as_object(self.params.get("_meta")) or {}
        token = meta.get("progressToken")
        return token if isinstance(token, str | int) and not isinstance(token, bool) else None


class _Waiter:
    """A server-to-client request waiting for the client's response."""

    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: JsonObject | None = None


def _as_object(value: object) -> JsonObject | None:
    return cast(JsonObject, value) if isinstance(value, dict) else None


def _id_key(request_id: object) -> bytes:
    # 1 and "1" are different ids: key on the JSON spelling.
    return orjson.dumps(request_id)


def _text(text: str) -> JsonObject:
    return {"type": "text", "text": text}


def _number(value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("expected a number")
    return value


class DemoServer:
    """The server's state and message handling; `serve` runs it over a pair of byte streams."""

    def __init__(self, out: BinaryIO, err: TextIO) -> None:
        self._out = out
        self._err = err
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._client_capabilities: JsonObject = {}
        self._min_log_level: str | None = None
        self._in_flight: dict[bytes, _Call] = {}
        self._waiting: dict[bytes, _Waiter] = {}
        self._next_id = 0
        self._methods: dict[str, Callable[[_Call], JsonObject]] = {
            "initialize": self._initialize,
            "ping": lambda call: {},
            "server/discover": self._discover,
            "logging/setLevel": self._set_level,
            "tools/list": lambda call: {"tools": _TOOLS},
            "tools/call": self._call_tool,
            "prompts/list": lambda call: {"prompts": _PROMPTS},
            "prompts/get": self._get_prompt,
            "resources/list": lambda call: {"resources": _RESOURCES},
            "resources/templates/list": lambda call: {"resourceTemplates": []},
            "resources/read": self._read_resource,
        }

    # ---- wire -------------------------------------------------------------------------------

    def serve(self, stdin: BinaryIO) -> None:
        """Handle lines from `stdin` until it ends."""
        while True:
            line = stdin.readline()
            if not line:
                return
            if line.strip():
                self.handle_line(line)

    def handle_line(self, line: bytes) -> None:
        try:
            message: object = orjson.loads(line)
        except orjson.JSONDecodeError:
            self._send(_error_response(None, PARSE_ERROR, "Parse error"))
            return
        if isinstance(message, list):
            batch = cast(list[object], message)
            if not batch:
                self._send(_error_response(None, INVALID_REQUEST, "Invalid Request: empty batch"))
                return
            answers = [a for a in (self._handle_message(m) for m in batch) if a is not None]
            if answers:
                self._send(answers)
            return
        answer = self._handle_message(message)
        if answer is not None:
            self._send(answer)

    def _send(self, message: object) -> None:
        data = orjson.dumps(message) + b"\n"
        with self._write_lock:
            try:
                self._out.write(data)
                self._out.flush()
            except (BrokenPipeError, ValueError):
                pass  # the client is gone; stdin EOF ends the server

    def _handle_message(self, message: object) -> JsonObject | None:
        """Answer one message; None when there is nothing to send now."""
        obj = _as_object(message)
        if obj is None:
            return _error_response(None, INVALID_REQUEST, "Invalid Request")
        method = obj.get("method")
        has_id = "id" in obj
        request_id = obj.get("id")
        if method is None:
            if has_id and ("result" in obj or "error" in obj):
                self._on_client_response(request_id, obj)
                return None
            return _error_response(request_id, INVALID_REQUEST, "Invalid Request")
        params = _as_object(obj.get("params")) or {}
        if not isinstance(method, str):
            return (
                _error_response(request_id, INVALID_REQUEST, "Invalid Request") if has_id else None
            )
        if not has_id:
            self._on_notification(method, params)
            return None
        call = _Call(request_id, method, params)
        try:
            self._check_era(call)
            if method == "tools/call" and params.get("name") in ("slow", "sample"):
                self._start_in_thread(call)
                return None
            handler = self._methods.get(method)
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
            return self._result_response(call, handler(call))
        except RpcError as exc:
            return _error_response(request_id, exc.code, exc.message, exc.data)

    def _result_response(self, call: _Call, result: JsonObject) -> JsonObject:
        if call.modern or call.method == "server/discover":
            result = dict(result)
            result.setdefault("resultType", "complete")
            meta = dict(_as_object(result.get("_meta")) or {})
            meta[_META_SERVER_INFO] = SERVER_INFO
            result["_meta"] = meta
            if call.method in _CACHEABLE and result["resultType"] == "complete":
                result.setdefault("ttlMs", 0)
                result.setdefault("cacheScope", "public")
        return {"jsonrpc": "2.0", "id": call.id, "result": result}

    def _check_era(self, call: _Call) -> None:
        if not call.modern:
            return
        meta = _as_object(call.params.get("_meta")) or {}
        version = meta.get(_META_VERSION)
        if version not in MODERN_VERSIONS:
            raise RpcError(
                UNSUPPORTED_PROTOCOL_VERSION,
                "Unsupported protocol version",
                {"supported": list(MODERN_VERSIONS), "requested": version},
            )
        if _as_object(meta.get(_META_CAPABILITIES)) is None:
            raise RpcError(INVALID_PARAMS, f"Missing required _meta field {_META_CAPABILITIES}")
        if call.log_level is not None and call.log_level not in LOG_LEVELS:
            raise RpcError(INVALID_PARAMS, f"Invalid log level: {call.log_level}")

    def _on_notification(self, method: str, params: JsonObject) -> None:
        if method == "notifications/cancelled":
            key = _id_key(params.get("requestId"))
            with self._state_lock:
                call = self._in_flight.get(key)
            if call is not None:
                call.cancelled.set()
        # notifications/initialized and anything unknown need no action.

    def _on_client_response(self, request_id: object, response: JsonObject) -> None:
        with self._state_lock:
            waiter = self._waiting.pop(_id_key(request_id), None)
        if waiter is not None:
            waiter.response = response
            waiter.done.set()

    # ---- threads for calls that wait ---------------------------------------------------------

    def _start_in_thread(self, call: _Call) -> None:
        with self._state_lock:
            self._in_flight[_id_key(call.id)] = call
        threading.Thread(target=self._run_in_thread, args=(call,), daemon=True).start()

    def _run_in_thread(self, call: _Call) -> None:
        try:
            try:
                response = self._result_response(call, self._call_tool(call))
            except RpcError as exc:
                response = _error_response(call.id, exc.code, exc.message, exc.data)
            if call.cancelled.is_set():
                # A cancelled request gets no response; say so in a log message instead.
                self._log(call, "info", f"request {orjson.dumps(call.id).decode()} cancelled")
            else:
                self._send(response)
        finally:
            with self._state_lock:
                self._in_flight.pop(_id_key(call.id), None)

    # ---- handlers ----------------------------------------------------------------------------

    def _initialize(self, call: _Call) -> JsonObject:
        requested = call.params.get("protocolVersion")
        version = requested if requested in LEGACY_VERSIONS else LATEST_LEGACY_VERSION
        with self._state_lock:
            self._client_capabilities = _as_object(call.params.get("capabilities")) or {}
        return {
            "protocolVersion": version,
            "capabilities": _CAPABILITIES,
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        }

    def _discover(self, call: _Call) -> JsonObject:
        return {
            "supportedVersions": [*LEGACY_VERSIONS, *MODERN_VERSIONS],
            "capabilities": _CAPABILITIES,
            "instructions": INSTRUCTIONS,
        }

    def _set_level(self, call: _Call) -> JsonObject:
        level = call.params.get("level")
        if level not in LOG_LEVELS:
            raise RpcError(INVALID_PARAMS, f"Invalid log level: {level}")
        with self._state_lock:
            self._min_log_level = cast(str, level)
        return {}

    def _get_prompt(self, call: _Call) -> JsonObject:
        name = call.params.get("name")
        if name != "greet":
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name}")
        arguments = _as_object(call.params.get("arguments")) or {}
        who = arguments.get("name")
        if not isinstance(who, str):
            raise RpcError(INVALID_PARAMS, "Missing required argument: name")
        return {
            "description": "Greet someone by name.",
            "messages": [{"role": "user", "content": _text(f"Hello, {who}!")}],
        }

    def _read_resource(self, call: _Call) -> JsonObject:
        uri = call.params.get("uri")
        if uri != README_URI:
            code = INVALID_PARAMS if call.modern else RESOURCE_NOT_FOUND_LEGACY
            raise RpcError(code, f"Resource not found: {uri}", {"uri": uri})
        return {"contents": [{"uri": README_URI, "mimeType": "text/plain", "text": README_TEXT}]}

    def _call_tool(self, call: _Call) -> JsonObject:
        name = call.params.get("name")
        arguments = _as_object(call.params.get("arguments")) or {}
        tools: dict[str, Callable[[_Call, JsonObject], JsonObject]] = {
            "echo": self._tool_echo,
            "add": self._tool_add,
            "slow": self._tool_slow,
            "fail": self._tool_fail,
            "sample": self._tool_sample,
            "log": self._tool_log,
            "stderr": self._tool_stderr,
        }
        tool = tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}")
        try:
            return tool(call, arguments)
        except ToolError as exc:
            return {"content": [_text(f"{name}: {exc}")], "isError": True}

    def _tool_echo(self, call: _Call, arguments: JsonObject) -> JsonObject:
        text = arguments.get("text")
        if not isinstance(text, str):
            raise ToolError("argument 'text' must be a string")
        return {"content": [_text(text)]}

    def _tool_add(self, call: _Call, arguments: JsonObject) -> JsonObject:
        total = _number(arguments.get("a")) + _number(arguments.get("b"))
        return {
            "content": [_text(orjson.dumps(total).decode())],
            "structuredContent": {"sum": total},
        }

    def _tool_slow(self, call: _Call, arguments: JsonObject) -> JsonObject:
        seconds = _number(arguments.get("seconds"))
        steps = arguments.get("steps", 4)
        if seconds < 0 or not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ToolError("'seconds' must be >= 0 and 'steps' an integer >= 1")
        token = call.progress_token
        for step in range(1, steps + 1):
            if call.cancelled.wait(seconds / steps):
                return {"content": []}  # never sent: the caller sees the cancellation
            if token is not None:
                progress = {
                    "progressToken": token,
                    "progress": step,
                    "total": steps,
                    "message": f"step {step} of {steps}",
                }
                self._send(
                    {"jsonrpc": "2.0", "method": "notifications/progress", "params": progress}
                )
        return {"content": [_text(f"slept {orjson.dumps(seconds).decode()} seconds")]}

    def _tool_fail(self, call: _Call, arguments: JsonObject) -> JsonObject:
        message = arguments.get("message", "this tool always fails")
        return {"content": [_text(str(message))], "isError": True}

    def _tool_sample(self, call: _Call, arguments: JsonObject) -> JsonObject:
        prompt = arguments.get("prompt")
        max_tokens = arguments.get("maxTokens", 100)
        if not isinstance(prompt, str) or not isinstance(max_tokens, int):
            raise ToolError("'prompt' must be a string and 'maxTokens' an integer")
        request = {
            "messages": [{"role": "user", "content": _text(prompt)}],
            "maxTokens": max_tokens,
        }
        if call.modern:
            responses = _as_object(call.params.get("inputResponses")) or {}
            answer = _as_object(responses.get("sample"))
            if answer is None:
                return {
                    "resultType": "input_required",
                    "inputRequests": {
                        "sample": {"method": "sampling/createMessage", "params": request}
                    },
                    "requestState": "sample",
                }
            return {"content": [_text(_sampled_text(answer))]}
        with self._state_lock:
            if "sampling" not in self._client_capabilities:
                raise ToolError("the client does not support sampling")
            self._next_id += 1
            request_id = f"demo-{self._next_id}"
            waiter = _Waiter()
            self._waiting[_id_key(request_id)] = waiter
        self._send(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "method": "sampling/createMessage",
                "params": request,
            }
        )
        while not waiter.done.wait(0.05):
            if call.cancelled.is_set():
                with self._state_lock:
                    self._waiting.pop(_id_key(request_id), None)
                return {"content": []}  # never sent
        response = waiter.response or {}
        error = _as_object(response.get("error"))
        if error is not None:
            raise ToolError(f"sampling failed: {error.get('message')}")
        return {"content": [_text(_sampled_text(_as_object(response.get("result")) or {}))]}

    def _tool_log(self, call: _Call, arguments: JsonObject) -> JsonObject:
        level = arguments.get("level", "info")
        data = arguments.get("data")
        if level not in LOG_LEVELS or not isinstance(data, str):
            raise ToolError(f"'level' must be one of {', '.join(LOG_LEVELS)} and 'data' a string")
        sent = self._log(call, cast(str, level), data)
        return {"content": [_text(f"logged at {level}" if sent else f"not logged at {level}")]}

    def _tool_stderr(self, call: _Call, arguments: JsonObject) -> JsonObject:
        text = arguments.get("text")
        if not isinstance(text, str):
            raise ToolError("argument 'text' must be a string")
        self._err.write(text.replace("\n", " ") + "\n")
        self._err.flush()
        return {"content": [_text("written to stderr")]}

    def _log(self, call: _Call, level: str, data: str) -> bool:
        """Send a notifications/message if the era's rules allow it; True when sent."""
        threshold = call.log_level if call.modern else self._min_log_level
        if call.modern and threshold is None:
            return False  # modern servers log only for requests that opt in
        if threshold is not None and LOG_LEVELS.index(level) < LOG_LEVELS.index(threshold):
            return False
        params = {"level": level, "logger": "demo", "data": data}
        self._send({"jsonrpc": "2.0", "method": "notifications/message", "params": params})
        return True


def _sampled_text(result: JsonObject) -> str:
    content: object = result.get("content")
    blocks = cast(list[object], content) if isinstance(content, list) else [content]
    texts: list[str] = []
    for block in blocks:
        obj = _as_object(block)
        if obj is not None and obj.get("type") == "text" and isinstance(obj.get("text"), str):
            texts.append(cast(str, obj["text"]))
    return "".join(texts)


def _error_response(request_id: object, code: int, message: str, data: object = None) -> JsonObject:
    error: JsonObject = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def main() -> int:
    sys.stderr.write("demo server ready\n")
    sys.stderr.flush()
    server = DemoServer(sys.stdout.buffer, sys.stderr)
    try:
        server.serve(sys.stdin.buffer)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
