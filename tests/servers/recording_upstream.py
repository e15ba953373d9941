"""A stdio "server" that records every byte it receives and answers requests minimally.

Usage: python recording_upstream.py RECORD_FILE

- Every chunk read from stdin is appended to RECORD_FILE and flushed *before* the lines in it
  are answered, so once a client has the answer to a request, the file holds every byte that
  came before that request.
- A line that is a JSON object with "method" and "id" is answered with
  {"jsonrpc":"2.0","id":<id>,"result":{"method":<method>}}; a JSON array with an array of
  such answers for the requests in it. Notifications and responses get nothing. A line that is
  not JSON (bar blank lines) gets a parse error with id null.
- The request "test/emit" with params {"file": PATH} first writes PATH's bytes to stdout as they
  are, then answers.
- stdin EOF: the server exits 0 (a trailing line without a newline is recorded, not answered).

Answers are serialized compactly with ensure_ascii=False, so a test can predict their bytes.
The stdlib json module is used on purpose: it reads integers of any size.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def answer(message: Any) -> Any | None:
    if isinstance(message, dict) and "method" in message and "id" in message:
        return {"jsonrpc": "2.0", "id": message["id"], "result": {"method": message["method"]}}
    return None


def handle(line: bytes, out: Any) -> None:
    if not line.strip():
        return
    try:
        message = json.loads(line)
    except ValueError:
        error = {"code": -32700, "message": "Parse error"}
        out.write(dumps({"jsonrpc": "2.0", "id": None, "error": error}) + b"\n")
        out.flush()
        return
    if isinstance(message, dict) and message.get("method") == "test/emit":
        params = message.get("params") or {}
        with open(params["file"], "rb") as script:
            out.write(script.read())
        out.flush()
    if isinstance(message, list):
        answers = [a for a in (answer(m) for m in message) if a is not None]
        reply = answers or None
    else:
        reply = answer(message)
    if reply is not None:
        out.write(dumps(reply) + b"\n")
        out.flush()


def main() -> int:
    record_path = sys.argv[1]
    out = sys.stdout.buffer
    partial: list[bytes] = []  # the chunks of a line not yet complete
    with open(record_path, "ab") as record:
        while chunk := os.read(0, 1 << 20):
            record.write(chunk)
            record.flush()
            if b"\n" not in chunk:
                partial.append(chunk)
                continue
            *lines, rest = b"".join([*partial, chunk]).split(b"\n")
            partial = [rest]
            for line in lines:
                handle(line, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
