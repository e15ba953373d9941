"""Benchmark of the local store and the viewer commands (issue 4's targets).

    .venv/bin/python benchmarks/bench_store.py [--records 1000000] [--sessions 100]

1. Builds a store of ``--records`` log records (tools/call request + response pairs, a few
   notifications, stderr lines and errors; ~100 sessions spread over the last 24 hours) plus
   the SERVER and CLIENT span of every call, written with ``Store.write_logs/write_spans``.
2. Times the viewer commands as a user runs them (a subprocess each, Python start-up included;
   median of 3 runs): ``logs`` with session + event + time filters, ``logs --grep`` (a rare
   and a common word), ``stats --since 1h``, ``sessions``.
3. Ingest rate through ``StoreLogExporter.export`` with real SDK ``ReadableLogRecord``s in
   batches of 512 (the batch processor's size), into the full store.
4. ``logs --follow --format ndjson`` while another thread writes 5,000 records/s for 10 s:
   every record must arrive, and how late.
5. Store size per million log records (the spans that came with them included).

``--write-cost`` measures only the writer's CPU per call on the rows a real proxy stores for
small ``tools/call`` (``store_write_cost.py``): ``--rounds``, ``--copies``, ``--base``,
``--profile``.

Prints a markdown table; the numbers in ``benchmarks/STORE.md`` come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opentelemetry._logs import SeverityNumber  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402

from helmet_otel import semconv as sc  # noqa: E402
from helmet_otel.store import Store, StoreLogExporter  # noqa: E402
from helmet_otel.store.model import LogRow, SpanRow, log_row  # noqa: E402

WORDS = [
    "weather",
    "forecast",
    "london",
    "paris",
    "tokyo",
    "berlin",
    "report",
    "summary",
    "issue",
    "pull",
    "request",
    "file",
    "read",
    "write",
    "search",
    "query",
    "result",
    "status",
    "build",
    "deploy",
    "invoice",
    "customer",
    "order",
    "ticket",
    "message",
    "calendar",
    "meeting",
    "repository",
    "branch",
    "commit",
    "table",
    "column",
    "index",
]
TOOLS = ("search", "read_file", "write_file", "list_issues", "create_ticket", "run_query", "fetch")
RARE = "quokka"  # in ~0.1% of the responses
NS = 1_000_000_000


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def build(path: Path, records: int, sessions: int, seed: int = 7) -> tuple[float, list[str]]:
    rng = random.Random(seed)
    now = time.time_ns()
    start = now - 24 * 3600 * NS
    ids = [f"{rng.getrandbits(96):024x}" for _ in range(sessions)]
    session_services = {sid: f"server-{i % 12}" for i, sid in enumerate(ids)}
    store = Store.open(path, max_bytes=0, max_age_s=0)
    t0 = time.perf_counter()
    logs: list[LogRow] = []
    spans: list[SpanRow] = []
    counter = dict.fromkeys(ids, 0)
    for sid in ids:  # session starts
        logs.append(
            log_row(
                ts=start,
                event=sc.EVENT_SESSION_START,
                severity_number=9,
                severity_text="INFO",
                service=session_services[sid],
                trace_id=None,
                span_id=None,
                body=None,
                has_body=False,
                attributes={
                    sc.HELMET_SESSION_ID: sid,
                    sc.HELMET_PROXY_PID: 1,
                    sc.HELMET_PROXY_HOST: "bench",
                },
            )
        )
    step = (now - start) // (records // 2 + 1)
    written = len(logs)
    k = 0
    while written + len(logs) < records:
        k += 1
        ts = start + k * step
        sid = ids[rng.randrange(sessions)]
        counter[sid] += 1
        rid = str(counter[sid])
        tool = TOOLS[rng.randrange(len(TOOLS))]
        trace_id = f"{int(sid, 16):032x}"
        span_id = f"{rng.getrandbits(64):016x}"
        service = session_services[sid]
        roll = rng.random()
        if roll < 0.02:  # a stderr line
            logs.append(
                log_row(
                    ts=ts, event=sc.EVENT_SERVER_STDERR, severity_number=13, severity_text="WARN",
                    service=service, trace_id=trace_id, span_id=None,
                    body=f"warn: {_text(rng, 8)}", has_body=True, attributes={sc.HELMET_SESSION_ID: sid},
                )
            )  # fmt: skip
        elif roll < 0.04:  # a notification
            logs.append(
                log_row(
                    ts=ts, event=sc.EVENT_NOTIFICATION, severity_number=9, severity_text="INFO",
                    service=service, trace_id=trace_id, span_id=None,
                    body={"progressToken": rid, "progress": rng.randrange(100), "total": 100}, has_body=True,
                    attributes={sc.HELMET_SESSION_ID: sid, sc.HELMET_DIRECTION: sc.DIRECTION_S2C,
                                sc.HELMET_MESSAGE_KIND: "notification", sc.MCP_METHOD_NAME: "notifications/progress"},
                )
            )  # fmt: skip
        common: dict[str, object] = {
            sc.HELMET_SESSION_ID: sid,
            sc.MCP_METHOD_NAME: "tools/call",
            sc.JSONRPC_REQUEST_ID: rid,
            sc.GEN_AI_TOOL_NAME: tool,
        }
        params = {
            "name": tool,
            "arguments": {"query": _text(rng, 5), "limit": rng.randrange(1, 50)},
        }
        latency = rng.lognormvariate(3.0, 1.0)
        failed = rng.random() < 0.03
        text = _text(rng, rng.randrange(15, 45)) + (f" {RARE}" if rng.random() < 0.001 else "")
        result = {"content": [{"type": "text", "text": text}], "isError": failed}
        logs.append(
            log_row(
                ts=ts, event=sc.EVENT_REQUEST, severity_number=9, severity_text="INFO", service=service,
                trace_id=trace_id, span_id=span_id, body=params, has_body=True,
                attributes={**common, sc.HELMET_DIRECTION: sc.DIRECTION_C2S, sc.HELMET_MESSAGE_KIND: "request",
                            sc.HELMET_MESSAGE_SIZE: 120 + len(params["arguments"]["query"])},  # type: ignore[index]
            )
        )  # fmt: skip
        end = ts + int(latency * 1e6)
        logs.append(
            log_row(
                ts=end, event=sc.EVENT_RESPONSE, severity_number=17 if failed else 9,
                severity_text="ERROR" if failed else "INFO", service=service, trace_id=trace_id,
                span_id=span_id, body=result, has_body=True,
                attributes={**common, sc.HELMET_DIRECTION: sc.DIRECTION_S2C, sc.HELMET_MESSAGE_KIND: "response",
                            sc.HELMET_MESSAGE_SIZE: 80 + len(text), sc.HELMET_LATENCY_MS: latency,
                            **({sc.ERROR_TYPE: "tool_error"} if failed else {})},
            )
        )  # fmt: skip
        for kind, sp, parent in (
            ("SERVER", span_id, None),
            ("CLIENT", f"{rng.getrandbits(64):016x}", span_id),
        ):
            spans.append(
                SpanRow(
                    trace_id=trace_id, span_id=sp, parent_span_id=parent, name=f"tools/call {tool}", kind=kind,
                    start_ts=ts, end_ts=end, status="ERROR" if failed else "UNSET",
                    status_message="tool_error" if failed else None, session_id=sid, segment=None,
                    service=service, attrs={sc.MCP_METHOD_NAME: "tools/call", sc.GEN_AI_TOOL_NAME: tool,
                                            sc.JSONRPC_REQUEST_ID: rid}, links=[],
                )
            )  # fmt: skip
        if len(logs) >= 2000:
            store.write_logs(logs)
            store.write_spans(spans)
            written += len(logs)
            logs, spans = [], []
    store.write_logs(logs)
    store.write_spans(spans)
    written += len(logs)
    elapsed = time.perf_counter() - t0
    assert store.dropped == 0, store.last_error
    store.close()
    return written / elapsed, ids


def cli(store: Path, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "helmet_otel", *args, "--store", str(store)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{args}: {r.stderr}")
    return elapsed, r.stdout


def timed(store: Path, *args: str, runs: int = 3) -> tuple[float, int]:
    times: list[float] = []
    out = ""
    for _ in range(runs):
        t, out = cli(store, *args)
        times.append(t)
    return statistics.median(times), len(out.splitlines())


def exporter_rate(path: Path, n: int = 102_400) -> float:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({sc.SERVICE_NAME: "ingest"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger(sc.SCOPE_NAME)
    rng = random.Random(3)
    for i in range(n):
        request = i % 2 == 0
        logger.emit(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            event_name=sc.EVENT_REQUEST if request else sc.EVENT_RESPONSE,
            body={"name": "search", "arguments": {"query": _text(rng, 5)}}
            if request
            else {"content": [{"type": "text", "text": _text(rng, 30)}], "isError": False},
            attributes={
                sc.HELMET_SESSION_ID: f"ingest-{i % 4}",
                sc.HELMET_DIRECTION: sc.DIRECTION_C2S if request else sc.DIRECTION_S2C,
                sc.HELMET_MESSAGE_KIND: "request" if request else "response",
                sc.MCP_METHOD_NAME: "tools/call",
                sc.JSONRPC_REQUEST_ID: str(i // 2),
                sc.GEN_AI_TOOL_NAME: "search",
                sc.HELMET_MESSAGE_SIZE: 200,
                **({} if request else {sc.HELMET_LATENCY_MS: 12.5}),
            },
        )
    batch = memory.get_finished_logs()
    store = Store.open(path, max_bytes=0, max_age_s=0)
    exporter = StoreLogExporter(store)
    t0 = time.perf_counter()
    for start in range(0, len(batch), 512):
        exporter.export(batch[start : start + 512])
    elapsed = time.perf_counter() - t0
    assert store.dropped == 0
    store.close()
    return len(batch) / elapsed


def follow_rate(
    path: Path, rate: int = 5000, seconds: float = 10.0
) -> tuple[int, int, float, float]:
    """-> (written, received, p99 lag s, max lag s)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "helmet_otel",
            "logs",
            "-f",
            "--format",
            "ndjson",
            "--limit",
            "0",
            "--session",
            "follow-",
            "--store",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.time_ns() / 1e9, line))

    threading.Thread(target=pump, daemon=True).start()
    time.sleep(1.0)  # let the follower start (benchmark only)
    store = Store.open(path, max_bytes=0, max_age_s=0)
    per_tick = rate // 10
    written = 0
    t0 = time.monotonic()
    tick = 0
    while time.monotonic() - t0 < seconds:
        now = time.time_ns()
        store.write_logs(
            [
                log_row(
                    ts=now, event=sc.EVENT_REQUEST, severity_number=9, severity_text="INFO", service="follow",
                    trace_id=None, span_id=None, body={"n": written + i, "text": "follow me " * 10}, has_body=True,
                    attributes={sc.HELMET_SESSION_ID: f"follow-{(written + i) % 8}", sc.MCP_METHOD_NAME: "tools/call"},
                )
                for i in range(per_tick)
            ]
        )  # fmt: skip
        written += per_tick
        tick += 1
        pause = t0 + tick * 0.1 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    store.close()
    lags: list[float] = []
    deadline = time.monotonic() + 5
    while len(lags) < written and time.monotonic() < deadline:
        try:
            arrived, line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        lags.append(arrived - json.loads(line)["time_unix_nano"] / 1e9)
    proc.terminate()
    proc.wait()
    lags.sort()
    return (
        written,
        len(lags),
        lags[int(len(lags) * 0.99) - 1] if lags else float("nan"),
        lags[-1] if lags else float("nan"),
    )


def _span_of(path: Path, record_id: int) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT span_id FROM logs WHERE id >= ? AND span_id IS NOT NULL LIMIT 1", (record_id,)
        ).fetchone()
    finally:
        conn.close()
    return str(row[0])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--keep", metavar="DIR", help="keep the store in DIR")
    parser.add_argument(
        "--write-cost",
        action="store_true",
        help="only measure the writer's CPU per call (see store_write_cost.py)",
    )
    parser.add_argument("--capture-calls", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=10, help="--write-cost: timed copies")
    parser.add_argument("--base", type=int, default=10, help="--write-cost: untimed copies first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--rows", type=Path, help="--write-cost: captured rows kept in (or read from) this file"
    )
    parser.add_argument("--breakdown", action="store_true", help="--write-cost: index by index")
    parser.add_argument("--batch", type=int, default=512, help="--write-cost: records per batch")
    parser.add_argument(
        "--together",
        action="store_true",
        help="--write-cost: a log batch and a span batch in one transaction (Store.write_batches)",
    )
    args = parser.parse_args()
    if args.write_cost:
        import store_write_cost

        return store_write_cost.main(
            args.capture_calls,
            args.copies,
            args.base,
            args.rounds,
            args.profile,
            args.breakdown,
            args.rows,
            args.batch,
            args.together,
        )
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="helmet-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "store.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rows: list[tuple[str, str, str, str]] = []

    print(f"building {args.records:,} records in {path} ...", file=sys.stderr)
    build_rate, ids = build(path, args.records, args.sessions)
    size = path.stat().st_size
    rows.append(
        (
            "store size per 1,000,000 log records (+ their spans)",
            f"{size / args.records * 1e6 / 1e6:,.0f} MB",
            "report",
            "-",
        )
    )
    rows.append(
        ("direct writer build rate (logs + spans)", f"{build_rate:,.0f} records/s", "-", "-")
    )

    sid = ids[0][:8]
    queries = [
        (
            "logs --session S --event response --since 2h (table, newest 100)",
            ("logs", "--session", sid, "--event", "response", "--since", "2h"),
            1.0,
        ),
        (
            "logs --session S --event response --since 2h --format ndjson (all)",
            (
                "logs",
                "--session",
                sid,
                "--event",
                "response",
                "--since",
                "2h",
                "--format",
                "ndjson",
            ),
            1.0,
        ),
        (f"logs --grep {RARE} (rare word, table)", ("logs", "--grep", RARE), 1.0),
        (
            f"logs --grep {RARE} --format ndjson (all matches)",
            ("logs", "--grep", RARE, "--format", "ndjson"),
            1.0,
        ),
        ("logs --grep weather (common word, table)", ("logs", "--grep", "weather"), 1.0),
        (
            "logs --grep weather --session S --since 6h --format ndjson",
            ("logs", "--grep", "weather", "--session", sid, "--since", "6h", "--format", "ndjson"),
            1.0,
        ),
        ("stats --since 1h", ("stats", "--since", "1h"), 2.0),
        ("stats --since 1h --by tool", ("stats", "--since", "1h", "--by", "tool"), 2.0),
        ("stats (whole store)", ("stats",), 0.0),
        ("sessions", ("sessions",), 0.0),
        ("trace S", ("trace", ids[1][:10]), 0.0),
        # issue 13: servers, calls, globs, show, notes
        ("logs --server server-3 (table)", ("logs", "--server", "server-3"), 1.0),
        (
            "logs --server 'SERVER-1*' --since 1h --format ndjson",
            ("logs", "--server", "SERVER-1*", "--since", "1h", "--format", "ndjson"),
            1.0,
        ),
        ("logs -m 'Tools/*' (glob, any case, table)", ("logs", "-m", "Tools/*"), 1.0),
        ("logs -t nosuchtool (no match, suggestions)", ("logs", "-t", "nosuchtool"), 1.0),
        ("logs --calls (table, newest 100)", ("logs", "--calls"), 1.0),
        ("logs --calls --errors (table, newest 100)", ("logs", "--calls", "--errors"), 1.0),
        (
            "logs --calls --session S --since 1h --format ndjson",
            ("logs", "--calls", "--session", sid, "--since", "1h", "--format", "ndjson"),
            1.0,
        ),
        (f"logs --regex {RARE} (a scan, table)", ("logs", "--regex", RARE), 1.0),
        ("sessions --active", ("sessions", "--active"), 1.0),
        ("stats --session S", ("stats", "--session", sid), 1.0),
        (
            "stats --server server-3 --since 1h",
            ("stats", "--server", "server-3", "--since", "1h"),
            1.0,
        ),
        ("show ID (a record and its answer)", ("show", str(args.records // 2)), 1.0),
        ("show SPAN_ID (through logs_spans)", ("show", _span_of(path, args.records // 3)), 1.0),
        ("trace last", ("trace", "last"), 1.0),
    ]
    baseline, _ = timed(path, "logs", "--help")
    rows.append(
        (
            "python start-up + argparse (`logs --help`), included below",
            f"{baseline:.2f} s",
            "-",
            "-",
        )
    )
    for label, argv, target in queries:
        seconds, nlines = timed(path, *argv)
        verdict = "-" if not target else ("ok" if seconds < target else "MISSED")
        rows.append(
            (
                f"`{label}` ({nlines:,} lines)",
                f"{seconds:.2f} s",
                f"< {target:g} s" if target else "-",
                verdict,
            )
        )

    ingest = exporter_rate(path)
    rows.append(
        (
            "ingest through StoreLogExporter (512-record batches, into the full store)",
            f"{ingest:,.0f} records/s",
            ">= 20,000/s",
            "ok" if ingest >= 20_000 else "MISSED",
        )
    )

    written, received, p99, worst = follow_rate(path)
    ok = received == written and worst < 1.0
    rows.append(
        (
            "`logs -f` at 5,000 records/s for 10 s",
            f"{received:,}/{written:,} received, lag p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms",
            "all, lag < 1 s",
            "ok" if ok else "MISSED",
        )
    )

    print("| measurement | result | target | |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
