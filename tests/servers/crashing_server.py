"""A small stdio MCP server (both eras, stdlib only) that crashes on demand, for the
``--restart on-failure`` tests.

Every start appends a line to ``$CRASH_LOG`` (``start <n>``, n counting from 1 over the
processes that shared the log) and every line it reads (``in <n> <line>``), so a test can see
which server got what. Tools: ``echo`` (answers ``gen <n>: <text>``), ``crash`` (exits with
``code``, default 3, without answering), ``ask_then_crash`` (sends the client a ``roots/list``
request with id ``"srv-1"``, then exits with status 3). Behaviour of the servers after the first, set by the
environment:

- ``CRASH_LOOP=1``: exit with status 1 at once;
- ``CRASH_VERSION=V``: answer ``initialize`` with protocol version V;
- ``CRASH_INIT_ERROR=MESSAGE``: answer ``initialize`` with an error of that message;
- ``CRASH_GO=PATH``: answer ``initialize`` only once PATH exists.

Answers are compact JSON (``separators=(",", ":")``), so a test can build the exact bytes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def main() -> int:
    log_path = os.environ["CRASH_LOG"]
    with open(log_path, "a+") as log:
        log.seek(0)
        generation = sum(1 for line in log if line.startswith("start ")) + 1
        log.write(f"start {generation}\n")
    later = generation > 1
    if later and os.environ.get("CRASH_LOOP"):
        return 1
    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        with open(log_path, "a") as log:
            log.write(f"in {generation} {raw.decode().rstrip()}\n")
        message: dict[str, Any] = json.loads(raw)
        method, msg_id = message.get("method"), message.get("id")
        if msg_id is None:
            continue
        params: dict[str, Any] = message.get("params") or {}
        if method == "initialize":
            go = os.environ.get("CRASH_GO")
            while later and go and not os.path.exists(go):
                time.sleep(0.01)  # (the test says when: a held message must wait for this)
            if later and os.environ.get("CRASH_INIT_ERROR"):
                error = {"code": -32603, "message": os.environ["CRASH_INIT_ERROR"]}
                out.write(dumps({"jsonrpc": "2.0", "id": msg_id, "error": error}))
                out.flush()
                continue
            version = params.get("protocolVersion")
            if later and os.environ.get("CRASH_VERSION"):
                version = os.environ["CRASH_VERSION"]
            result: dict[str, Any] = {
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "crashing", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": [
                {"name": name, "inputSchema": {"type": "object"}} for name in ("echo", "crash")
            ]}  # fmt: skip
        elif method == "tools/call" and params.get("name") == "ask_then_crash":
            out.write(dumps({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"}))
            out.flush()
            return 3
        elif method == "tools/call" and params.get("name") == "crash":
            return int(params.get("arguments", {}).get("code", 3))
        elif method == "tools/call":
            text = f"gen {generation}: {params.get('arguments', {}).get('text', '')}"
            result = {"content": [{"type": "text", "text": text}], "isError": False}
        else:
            result = {}
        out.write(dumps({"jsonrpc": "2.0", "id": msg_id, "result": result}))
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
