"""How soon a call through a real proxy shows in `logs --follow` and `logs --follow --grep`.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_follow.py                        # 2,000 calls/s for 20 s
    .venv/bin/python benchmarks/bench_follow.py --rate 5000 --seconds 10 --otlp

A proxy with the store (and, with ``--otlp``, OTLP to the local receiver of
``tests/otlp_receiver.py``) wraps ``echo_server.py``; two viewers follow its store, one plain
and one with ``--grep marker``, both as ``--format ndjson``. A client sends small ``tools/call``
at ``--rate`` calls/s; every 50th carries a word of its own (``markerN``). The lag of a marked
call is from its send to the first line either viewer prints that holds the word: the relay's
hand-over, the worker, the store's batching and commit, and the viewer's poll, end to end. The
targets (issue 15, the store issue): the newest record in ``--follow`` within 0.5 s, in
``--grep`` within 2 s. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relay import ECHO_SERVER, REPO, Helper, base_env

EVERY = 50  # one call in this many is marked


class Viewer:
    """`helmet-otel logs --follow` on the store; when each marker word was first printed."""

    def __init__(self, store: Path, env: dict[str, str], extra: list[str]) -> None:
        argv = [sys.executable, "-m", "helmet_otel", "logs", "--store", str(store), "-f",
                "--format", "ndjson", *extra]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE)
        self.seen: dict[str, float] = {}
        self.lines = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            self.lines += 1
            for word in line.replace(b'"', b" ").split():
                if word.startswith(b"marker"):
                    self.seen.setdefault(word.decode(), now)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _send(stdin: IO[bytes], message: dict[str, object]) -> None:
    stdin.write(json.dumps(message).encode() + b"\n")
    stdin.flush()


def run(args: argparse.Namespace) -> dict[str, dict[str, float | int]]:
    env = base_env()
    receiver = Helper("--_receiver", "http/protobuf") if args.otlp else None
    workdir = Path(tempfile.mkdtemp(prefix="helmet-follow-"))
    store = workdir / "store.db"
    try:
        if receiver is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.ask()["endpoint"]
        argv = [sys.executable, "-m", "helmet_otel", "--store", str(store), sys.executable,
                str(ECHO_SERVER)]  # fmt: skip
        proxy = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)  # fmt: skip
        assert proxy.stdin is not None and proxy.stdout is not None
        _send(proxy.stdin, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bench-follow", "version": "1"}}})  # fmt: skip
        proxy.stdout.readline()
        _send(proxy.stdin, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        out = proxy.stdout
        threading.Thread(target=lambda: all(iter(out.readline, b"")), daemon=True).start()
        while not store.exists():  # (the viewers need the store; the worker makes it)
            time.sleep(0.05)
        viewers = {
            "follow": Viewer(store, env, []),
            "grep": Viewer(store, env, ["--grep", "marker"]),
        }
        time.sleep(1.0)  # the viewers are up (benchmark only)
        sent: dict[str, float] = {}
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < args.seconds:
            i += 1
            word = f"marker{i}" if i % EVERY == 0 else "x"
            if word != "x":
                sent[word] = time.monotonic()
            _send(proxy.stdin, {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                "params": {"name": "echo", "arguments": {"text": word}}})  # fmt: skip
            ahead = start + i / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        achieved = i / (time.monotonic() - start)
        time.sleep(args.settle)  # what is late shows, or counts as missing
        for viewer in viewers.values():
            viewer.stop()
        proxy.stdin.close()
        proxy.wait(30)
    finally:
        if receiver is not None:
            receiver.kill()
    result: dict[str, dict[str, float | int]] = {}
    for name, viewer in viewers.items():
        lags = sorted(viewer.seen[w] - t for w, t in sent.items() if w in viewer.seen)
        result[name] = {
            "calls_per_s": round(achieved),
            "marked": len(sent),
            "missing": len(sent) - len(lags),
            "median_s": round(statistics.median(lags), 3) if lags else float("nan"),
            "p99_s": round(lags[int(len(lags) * 0.99) - 1], 3) if lags else float("nan"),
            "max_s": round(lags[-1], 3) if lags else float("nan"),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=3.0, help="wait after the last call")
    parser.add_argument("--otlp", action="store_true", help="OTLP to a local receiver too")
    args = parser.parse_args(argv)
    for name, figures in run(args).items():
        print(f"{name:>6}: " + "  ".join(f"{k} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
