"""A stdio "server" that misbehaves on request, for the proxy's lifecycle tests.

Usage: python misbehaving.py MODE

It writes "pid N" to stderr when it starts. Requests are answered with
{"jsonrpc":"2.0","id":<id>,"result":{}} except:
- "test/hang": never answered;
- "test/exit" with params {"code": N}: the process exits with status N at once.

Modes:
- plain: exit 0 on stdin EOF;
- stubborn: ignore SIGTERM and stdin EOF (only SIGKILL ends it);
- on-sigterm: on SIGTERM write the notification {"jsonrpc":"2.0","method":"test/signal",
  "params":{"signal":15}} to stdout and exit with status 42.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from types import FrameType


def send(message: object) -> None:
    sys.stdout.buffer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    sys.stdout.buffer.flush()


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    send({"jsonrpc": "2.0", "method": "test/signal", "params": {"signal": signum}})
    os._exit(42)


def main() -> int:
    mode = sys.argv[1]
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif mode == "on-sigterm":
        signal.signal(signal.SIGTERM, on_sigterm)
    sys.stderr.write(f"pid {os.getpid()}\n")
    sys.stderr.flush()
    for line in sys.stdin.buffer:
        message = json.loads(line)
        if "method" not in message or "id" not in message:
            continue
        if message["method"] == "test/hang":
            continue
        if message["method"] == "test/exit":
            os._exit(message["params"]["code"])
        send({"jsonrpc": "2.0", "id": message["id"], "result": {}})
    if mode == "stubborn":
        threading.Event().wait()  # stdin is gone; keep running until killed
    return 0


if __name__ == "__main__":
    sys.exit(main())
