"""A stdio "server" whose answers are valid JSON that fast parsers refuse or misread.

Usage: python odd_answers.py

Every request is answered with the request's own id, written back exactly as it was sent (an
integer beyond 64 bits stays one), and a result chosen by the method:
- "odd/huge": ``{"big":1e400}`` (a number beyond a double);
- "odd/surrogate": ``{"text":"\\ud834"}`` (a lone surrogate escape, as Node's JSON.stringify
  writes for a cut emoji);
- anything else: ``{}``.
Notifications get nothing. stdin EOF: exit 0.
"""

from __future__ import annotations

import json
import sys

RESULTS = {"odd/huge": '{"big":1e400}', "odd/surrogate": '{"text":"\\ud834"}'}


def main() -> int:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        message = json.loads(line)  # the stdlib keeps integers of any size exact
        if "id" not in message or "method" not in message:
            continue
        result = RESULTS.get(message["method"], "{}")
        answer_id = json.dumps(message["id"])
        out.write(f'{{"jsonrpc":"2.0","id":{answer_id},"result":{result}}}\n'.encode())
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
