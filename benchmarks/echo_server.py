"""A minimal stdio MCP-ish echo server for the benchmarks (stdlib only).

Reads newline-delimited JSON-RPC from stdin and answers on stdout, one ``write`` + ``flush``
per response:

* ``initialize`` -> echoes the client's ``protocolVersion``, with ``serverInfo`` and tools;
* notifications (no ``id``) -> ignored;
* ``tools/call`` -> ``{"content": [{"type": "text", "text": ...}]}`` where the text is
  ``arguments["text"]`` when that is a string, else the JSON of the arguments;
* anything else with an ``id`` -> ``{}``.

Lines of any size are handled (``readline`` on the binary stream has no length limit).
"""

from __future__ import annotations

import json
import sys
from typing import Any

SERVER_INFO = {"name": "bench-echo", "version": "1.0.0"}


def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    if "id" not in message or "method" not in message:
        return None  # a notification, or a response to something we never sent
    method = message["method"]
    params = message.get("params") or {}
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": SERVER_INFO,
        }
    elif method == "tools/call":
        arguments = params.get("arguments") or {}
        text = arguments.get("text") if isinstance(arguments, dict) else None
        if not isinstance(text, str):
            text = json.dumps(arguments, separators=(",", ":"))
        result = {"content": [{"type": "text", "text": text}]}
    elif method == "tools/list":
        result = {
            "tools": [
                {
                    "name": "echo",
                    "description": "Echoes its arguments back.",
                    "inputSchema": {"type": "object"},
                }
            ]
        }
    else:
        result = {}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def main() -> int:
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    while True:
        line = stdin.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        response = answer(message)
        if response is None:
            continue
        stdout.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
