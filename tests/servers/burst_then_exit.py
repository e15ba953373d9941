"""A stdio "server" that answers a burst of requests and exits at once, before a slow client
has read the answers.

Usage: python burst_then_exit.py N BIG

It reads N request lines, answers the first with a result of BIG bytes, takes 0.2 s (a server
at work: the proxy meanwhile waits for the client to take that answer), answers the others
with ``{}``, then exits with status 3 while its answers may still be unread.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    count, big = int(sys.argv[1]), int(sys.argv[2])
    out = sys.stdout.buffer
    for i in range(count):
        message = json.loads(sys.stdin.buffer.readline())
        result = {"blob": "x" * big} if i == 0 else {}
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        out.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
        if i == 0:
            out.flush()
            time.sleep(0.2)
    out.flush()
    return 3


if __name__ == "__main__":
    sys.exit(main())
