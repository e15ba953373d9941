"""What one OTLP/HTTP export costs the worker's CPU: encoding and posting, per transport.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_otlp_transport.py            # 300 batches of 512 records
    .venv/bin/python benchmarks/bench_otlp_transport.py --batch 64 --batches 1000 --gzip

A local receiver runs in its own process (sink mode), so only the sending side is measured:
this process's CPU time (user + system, all threads) per batch, for `OtlpEncoder` encoding a
batch of log records shaped like the worker's (``encode``), the SDK exporter's HTTP client
posting the bytes (``sdk``: requests + urllib3, as before issue 15) and `otlp_http.HttpSender`
posting them (``helmet``: http.client, one kept-alive connection). Medians over ``--rounds``.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relay import Helper
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
from helmet_otel.telemetry.otlp_http import sender_for
from tests.telemetry.records import log


def records(n: int) -> list[object]:
    """Log records like a ``tools/call`` request's: a JSON body, a dozen attributes."""
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hello world"}}}  # fmt: skip
    return [log(body, attributes={"event.name": "mcp.request", "mcp.method.name": "tools/call",
                                  "jsonrpc.request.id": str(i), "gen_ai.tool.name": "echo",
                                  "mcp.session.id": "s-1", "helmet.direction": "client_to_server",
                                  "helmet.message.bytes": 120, "helmet.sample.weight": 1})
            for i in range(n)]  # fmt: skip


def cpu_per_call(call: Callable[[], object], times: int) -> float:
    """Microseconds of this process's CPU per ``call()``."""
    start = time.process_time()
    for _ in range(times):
        call()
    return (time.process_time() - start) / times * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args(argv)
    receiver = Helper("--_receiver", "http/protobuf")
    try:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.ask()["endpoint"]
        if args.gzip:
            os.environ["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip"
        batch = records(args.batch)
        encoder = OtlpEncoder()
        data = encoder.logs(batch)  # type: ignore[arg-type]
        sdk = OTLPLogExporter()
        ours, reason = sender_for("logs", os.environ)
        assert ours is not None, reason
        runs: dict[str, list[float]] = {"encode": [], "sdk": [], "helmet": []}
        for _ in range(args.rounds):
            runs["encode"].append(cpu_per_call(lambda: encoder.logs(batch), args.batches))  # type: ignore[arg-type]
            runs["sdk"].append(cpu_per_call(lambda: sdk._client.export(data), args.batches))  # pyright: ignore[reportPrivateUsage]
            runs["helmet"].append(cpu_per_call(lambda: ours.send(data), args.batches))
        ours.shutdown()
        sdk.shutdown()
    finally:
        receiver.kill()
    print(f"batch of {args.batch} log records, {len(data):,} bytes"
          f"{' (gzip)' if args.gzip else ''}; CPU per batch, median of {args.rounds} rounds:")  # fmt: skip
    for name, values in runs.items():
        median = statistics.median(values)
        print(f"  {name:>6}: {median:8.0f} us  ({median / args.batch:6.2f} us per record)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
