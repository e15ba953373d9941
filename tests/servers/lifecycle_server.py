"""A stdio "server" for the proxy's process-lifecycle tests (stderr, environment, signals).

Usage: python lifecycle_server.py MODE [ARGS...]

Every request (a line with "id" and "method") is answered with
{"jsonrpc":"2.0","id":<id>,"result":{"pid":..,"grandchild":..,"argv":..,"cwd":..,"env":..}}
where argv is sys.argv[1:], cwd is os.getcwd() and env is os.environ. SIGINT has its default
action (death by SIGINT) unless the mode says otherwise.

Modes:
- flood PRE PER: before reading anything, write PRE bytes of stderr lines (`flood_bytes("pre",
  PRE)`); before each answer, PER more (`flood_bytes(f"req{id}", PER)`). Exit 0 on stdin EOF.
- stream: write STREAM_MARKER to stderr, then serve. Exit 0 on stdin EOF.
- dump [ARGS...]: serve (the answers carry argv, cwd, env). Exit 0 on stdin EOF.
- family GRANDCHILD ON_EOF: spawn a grandchild (same process group, inherited stdio) that sleeps
  60 s, and serve only once it has started; GRANDCHILD is "plain" or "stubborn" (ignores SIGINT and SIGTERM). ON_EOF is "exit"
  (exit 0 on stdin EOF, leaving the grandchild behind) or "stay" (ignore EOF).
- sigterm-exit0: on SIGTERM exit with status 0. Ignore EOF.
- deaf: on SIGINT/SIGTERM write "lifecycle: got signal N" to stderr and carry on. Ignore EOF.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from types import FrameType

STREAM_MARKER = b"lifecycle: streaming marker, the server is still running\n"

# The grandchild reports on the fd named in argv[1] once its interpreter is up and its signal
# dispositions are set, so a test's signal never lands while Python is still starting (which
# would print a "Fatal Python error" that is the test's race, not the proxy's).
_READY = "import os, sys; fd = int(sys.argv[1]); os.write(fd, b'r'); os.close(fd)"
GRANDCHILD_CODE = {
    # default dispositions: SIGINT kills it outright instead of raising KeyboardInterrupt
    "plain": f"import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); {_READY}; time.sleep(60)",
    "stubborn": (
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        f"signal.signal(signal.SIGTERM, signal.SIG_IGN); {_READY}; time.sleep(60)"
    ),
}


def flood_bytes(tag: str, size: int) -> bytes:
    """Deterministic stderr lines of about 1 KiB, `size` bytes in all (the last line may be short)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        line = f"{tag} {i:08d} ".encode() + b"abcdefghijklmnopqrstuvwxyz" * 39 + b"\n"
        out += line
        i += 1
    del out[size:]
    if out and not out.endswith(b"\n"):
        out[-1:] = b"\n"
    return bytes(out)


def write_err(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


def main() -> int:
    mode = sys.argv[1]
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    grandchild: int | None = None
    exit_on_eof = mode in ("flood", "stream", "dump")
    per = 0
    if mode == "flood":
        write_err(flood_bytes("pre", int(sys.argv[2])))
        per = int(sys.argv[3])
    elif mode == "stream":
        write_err(STREAM_MARKER)
    elif mode == "family":
        ready_r, ready_w = os.pipe()
        code = GRANDCHILD_CODE[sys.argv[2]]
        child = subprocess.Popen([sys.executable, "-c", code, str(ready_w)], pass_fds=(ready_w,))
        os.close(ready_w)
        if os.read(ready_r, 1) != b"r":
            raise SystemExit("lifecycle: the grandchild did not start")
        os.close(ready_r)
        grandchild = child.pid
        exit_on_eof = sys.argv[3] == "exit"
    elif mode == "sigterm-exit0":

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            os._exit(0)

        signal.signal(signal.SIGTERM, on_sigterm)
    elif mode == "deaf":

        def on_signal(signum: int, frame: FrameType | None) -> None:
            os.write(2, f"lifecycle: got signal {signum}\n".encode())

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    elif mode != "dump":
        raise SystemExit(f"unknown mode {mode!r}")

    for line in sys.stdin.buffer:
        try:
            message: object = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict) or "id" not in message or "method" not in message:
            continue
        if per:
            write_err(flood_bytes(f"req{message['id']}", per))
        result = {
            "pid": os.getpid(),
            "grandchild": grandchild,
            "argv": sys.argv[1:],
            "cwd": os.getcwd(),
            "env": dict(os.environ),
        }
        reply: dict[str, object] = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        sys.stdout.buffer.write(json.dumps(reply).encode() + b"\n")
        sys.stdout.buffer.flush()
    if exit_on_eof:
        return 0
    while True:  # ignore EOF: only a signal ends us
        threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
