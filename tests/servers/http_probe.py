"""A stdio MCP server for the HTTP front's tests: records what it receives, hangs or exits on cue.

Usage: python http_probe.py RECORD_FILE

- every line read is appended to RECORD_FILE (flushed at once);
- ``initialize`` is answered like a legacy server; ``server/discover`` gets -32601;
- ``probe/echo`` answers ``{"params": <params>}`` (after one progress notification when
  ``params._meta.progressToken`` is given, so an HTTP front streams the answer);
- ``probe/progress`` sends two ``notifications/progress`` for ``params._meta.progressToken``,
  then answers;
- ``probe/slow`` (params ``steps``, ``interval``) sends ``steps`` progress notifications for
  ``params._meta.progressToken``, ``interval`` seconds apart (none without a token; it still
  takes that long), then answers ``{"done": true}``;
- ``probe/hang`` is never answered;
- ``probe/exit`` exits at once with status 3 (without answering);
- ``probe/ask`` sends a server-to-client request ``roots/list`` (id "srv-1") and answers with
  the client's answer once it arrives.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main() -> int:
    record = open(sys.argv[1], "a", encoding="utf-8")  # noqa: SIM115
    asked: Any = None
    for line in sys.stdin:
        record.write(line)
        record.flush()
        message = json.loads(line)
        method = message.get("method")
        msg_id = message.get("id")
        params = message.get("params") or {}
        if method is None and msg_id == "srv-1" and asked is not None:
            send({"jsonrpc": "2.0", "id": asked, "result": {"answer": message.get("result")}})
            asked = None
        elif method == "initialize":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": msg_id,
                    "result": {
                        "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "probe", "version": "1"},
                    },
                }
            )
        elif method == "server/discover":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": msg_id,
                    "error": {"code": -32601, "message": "Method not found"},
                }
            )
        elif method == "probe/echo":
            token = params.get("_meta", {}).get("progressToken")
            if token is not None:
                send(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": 1},
                    }
                )
            send({"jsonrpc": "2.0", "id": msg_id, "result": {"params": params}})
        elif method == "probe/progress":
            token = params.get("_meta", {}).get("progressToken")
            for step in (1, 2):
                send(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": step, "total": 2},
                    }
                )
            send({"jsonrpc": "2.0", "id": msg_id, "result": {"done": True}})
        elif method == "probe/slow":
            token = params.get("_meta", {}).get("progressToken")
            steps = int(params.get("steps", 1))
            for step in range(1, steps + 1):
                time.sleep(float(params.get("interval", 0.1)))
                if token is not None:
                    send(
                        {
                            "jsonrpc": "2.0",
                            "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": step, "total": steps},
                        }
                    )
            send({"jsonrpc": "2.0", "id": msg_id, "result": {"done": True}})
        elif method == "probe/exit":
            return 3
        elif method == "probe/ask":
            asked = msg_id
            send({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list", "params": {}})
        elif method is not None and msg_id is not None and method != "probe/hang":
            send({"jsonrpc": "2.0", "id": msg_id, "result": {}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
