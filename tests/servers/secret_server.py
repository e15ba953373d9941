"""A stdio MCP server that puts secrets where a real one might, for the leak tests.

Usage: python secret_server.py SECRET_LINE

It writes SECRET_LINE to stderr when it starts (a server logging its connection string).
Requests are answered with a result, except:
- ``tools/call`` of the tool ``fail``: error -32603 whose message quotes the key it was given;
- ``tools/call`` of the tool ``hang``: never answered (the client cancels it);
- a method it does not know: error -32601 whose message names the method.
It exits on stdin EOF.
"""

from __future__ import annotations

import json
import sys
from typing import cast

KNOWN = {"initialize", "tools/call", "tools/list", "resources/read", "ping"}
REJECTED_KEY = "sk-proj-ZQLEAK01errAbcdefgh12345678"


def send(message: object) -> None:
    sys.stdout.buffer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    sys.stdout.buffer.flush()


def answer(message: dict[str, object]) -> None:
    method = message.get("method")
    request_id = message["id"]
    params = message.get("params")
    name = cast(dict[str, object], params).get("name") if isinstance(params, dict) else None
    if method == "initialize":
        result: object = {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "resources": {}},
            "serverInfo": {"name": "secret-server", "version": "1.0"},
        }
    elif method == "tools/call" and name == "hang":
        return
    elif method == "tools/call" and name == "fail":
        error = {"code": -32603, "message": f"upstream rejected key {REJECTED_KEY}"}
        send({"jsonrpc": "2.0", "id": request_id, "error": error})
        return
    elif method not in KNOWN:
        error = {"code": -32601, "message": f"Method not found: {method}"}
        send({"jsonrpc": "2.0", "id": request_id, "error": error})
        return
    else:
        result = {"content": [{"type": "text", "text": "ok"}]}
    send({"jsonrpc": "2.0", "id": request_id, "result": result})


def main() -> int:
    sys.stderr.write(sys.argv[1] + "\n")
    sys.stderr.flush()
    for line in sys.stdin.buffer:
        message = json.loads(line)
        if "id" in message and "method" in message:
            answer(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
