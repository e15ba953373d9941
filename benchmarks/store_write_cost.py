"""What the store writer costs in CPU per call (``bench_store.py --write-cost``).

1. Capture: a real proxy (``python -m helmet_otel --store ...``) wraps ``echo_server.py`` for
   ``--capture-calls`` small ``tools/call``; the log rows and span rows its worker stored are
   read back as the ``LogRow``/``SpanRow`` values the store exporters produced for them.
2. Replay: those rows, repeated with fresh timestamps, go through ``Store.write_log_batch`` and
   ``Store.write_span_batch`` (their row tuples made untimed: the worker makes them, and
   ``bench_worker_replay.py`` times that) in batches of 512 (the worker's batch size), log and span batches
   interleaved as the two export threads write them, into a fresh store (after ``--base``
   calls' worth of rows written first, untimed). The process's CPU time (user + system; the
   replay is single-threaded) over the timed calls is the writer's CPU per call.
3. Breakdown: the same replay into stores with parts of the schema removed (the full-text
   table, the log indexes, the span indexes), so the difference is what each part costs;
   ``--profile`` prints a cProfile summary of the full replay.
"""

from __future__ import annotations

import asyncio
import cProfile
import dataclasses
import io
import pickle
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_relay import ECHO_SERVER, Session, base_env  # noqa: E402

from helmet_otel.store import Store  # noqa: E402
from helmet_otel.store.model import LogRow, SpanRow, decode  # noqa: E402

BATCH = 512  # records per batch (``--batch``)
TOGETHER = False  # a log batch and a span batch per transaction (``--together``)
_HAS_BATCHES = hasattr(Store, "write_batches")
_LOG_COLUMNS = (
    "ts, session_id, event, severity_number, severity_text, direction, kind, method, target, "
    "request_id, latency_ms, size, is_error, error_type, service, trace_id, span_id, body, attrs"
)
_SPAN_COLUMNS = (
    "trace_id, span_id, parent_span_id, name, kind, start_ts, end_ts, status, status_message, "
    "session_id, segment, service, attrs, links"
)


async def _drive(store: Path, calls: int, workdir: Path) -> None:
    argv = [sys.executable, "-m", "helmet_otel", "--store", str(store),
            sys.executable, str(ECHO_SERVER)]  # fmt: skip
    async with Session(argv, base_env(), workdir / "proxy.stderr") as session:
        await session.initialize()
        await session.paced(calls, 16, 1000.0)
        await session.close(grace=60)


def capture(calls: int) -> tuple[list[LogRow], list[SpanRow]]:
    """The rows a real proxy's worker stored for ``calls`` small tools/call."""
    with tempfile.TemporaryDirectory(prefix="helmet-capture-") as tmp:
        path = Path(tmp) / "store.db"
        asyncio.run(_drive(path, calls, Path(tmp)))
        conn = sqlite3.connect(path)
        try:
            logs = [
                LogRow(
                    ts=r[0],
                    session_id=r[1],
                    event=r[2],
                    severity_number=r[3],
                    severity_text=r[4],
                    direction=r[5],
                    kind=r[6],
                    method=r[7],
                    target=r[8],
                    request_id=r[9],
                    latency_ms=r[10],
                    size=r[11],
                    is_error=bool(r[12]),
                    error_type=r[13],
                    service=r[14],
                    trace_id=r[15],
                    span_id=r[16],
                    body=r[17],
                    attrs=decode(r[18]) or {},  # pyright: ignore[reportArgumentType]
                )
                for r in conn.execute(f"SELECT {_LOG_COLUMNS} FROM logs ORDER BY id")
            ]
            spans = [
                SpanRow(
                    trace_id=r[0],
                    span_id=r[1],
                    parent_span_id=r[2],
                    name=r[3],
                    kind=r[4],
                    start_ts=r[5],
                    end_ts=r[6],
                    status=r[7],
                    status_message=r[8],
                    session_id=r[9],
                    segment=r[10],
                    service=r[11],
                    attrs=decode(r[12]) or {},  # pyright: ignore[reportArgumentType]
                    links=decode(r[13]) or [],  # pyright: ignore[reportArgumentType]
                )
                for r in conn.execute(f"SELECT {_SPAN_COLUMNS} FROM spans ORDER BY id")
            ]
        finally:
            conn.close()
    return logs, spans


def _shifted(
    logs: list[LogRow], spans: list[SpanRow], n: int, offset: int
) -> Iterator[tuple[list[LogRow], list[SpanRow]]]:
    """``n`` copies of the captured rows as new sessions: timestamps moved on by ``offset``
    a copy, fresh random span ids (as every call has), JSON-RPC ids counting on."""
    rng = random.Random(15)
    for k in range(n):
        delta = (k + 1) * offset
        ids: dict[str, str] = {}

        def span(old: str | None, ids: dict[str, str] = ids) -> str | None:
            if old is None:
                return None
            new = ids.get(old)
            if new is None:
                new = ids[old] = f"{rng.getrandbits(64):016x}"
            return new

        def rid(old: str | None, k: int = k) -> str | None:
            return str(int(old) + k * 100_000) if old is not None and old.isdigit() else old

        def sid(old: str | None, k: int = k) -> str | None:
            return f"{old}-{k}" if old is not None else None

        yield (
            [
                dataclasses.replace(
                    r,
                    ts=r.ts + delta,
                    attrs=dict(r.attrs),
                    span_id=span(r.span_id),
                    request_id=rid(r.request_id),
                    session_id=sid(r.session_id),
                )
                for r in logs
            ],
            [
                dataclasses.replace(
                    s,
                    start_ts=s.start_ts + delta,
                    end_ts=None if s.end_ts is None else s.end_ts + delta,
                    attrs=dict(s.attrs),
                    span_id=span(s.span_id) or "0" * 16,
                    parent_span_id=span(s.parent_span_id),
                    session_id=sid(s.session_id),
                )
                for s in spans
            ],
        )


def _batches(logs: list[LogRow], spans: list[SpanRow]) -> list[tuple[str, list[object]]]:
    """Log and span batches of ``BATCH``, interleaved."""
    out: list[tuple[str, list[object]]] = []
    li = si = 0
    while li < len(logs) or si < len(spans):
        if li < len(logs):
            out.append(("logs", list(logs[li : li + BATCH])))
            li += BATCH
        if si < len(spans):
            out.append(("spans", list(spans[si : si + BATCH])))
            si += BATCH
    return out


def _prepared(kind: str, batch: list[object]) -> object:
    """What the writer takes: the row tuples of a batch (``store.batch``, made by the worker's
    conversion, timed by ``bench_worker_replay.py``'s "rows"), or the rows themselves where the
    writer has no such boundary (revisions before it)."""
    if _HAS_BATCHES:
        from helmet_otel.store import batch as b

        if kind == "logs":
            return b.log_batch_of_rows(batch)  # pyright: ignore[reportArgumentType]
        return b.span_batch_of_rows(batch)  # pyright: ignore[reportArgumentType]
    return batch


def _write(store: Store, kind: str, batch: object) -> bool:
    if kind == "both":
        return store.write_batches(*batch)  # pyright: ignore
    if _HAS_BATCHES:
        return (store.write_log_batch if kind == "logs" else store.write_span_batch)(batch)  # pyright: ignore
    return (store.write_logs if kind == "logs" else store.write_spans)(batch)  # pyright: ignore


def replay(
    logs: list[LogRow],
    spans: list[SpanRow],
    calls_per_copy: int,
    copies: int,
    base_copies: int,
    prepare: Callable[[sqlite3.Connection], None] | None = None,
    profile: bool = False,
) -> tuple[float, str]:
    """CPU seconds per call of writing ``copies`` copies (after ``base_copies`` untimed)."""
    span = max(r.ts for r in logs) - min(r.ts for r in logs) + 1_000_000
    with tempfile.TemporaryDirectory(prefix="helmet-write-cost-") as tmp:
        path = Path(tmp) / "store.db"
        store = Store.open(path, max_bytes=0, max_age_s=0)
        if prepare is not None:
            conn = sqlite3.connect(path, isolation_level=None)
            prepare(conn)
            conn.close()
        copies_rows = list(_shifted(logs, spans, base_copies + copies, span))
        all_logs = [r for c in copies_rows[:base_copies] for r in c[0]]
        all_spans = [s for c in copies_rows[:base_copies] for s in c[1]]
        for kind, batch in _batches(all_logs, all_spans):
            (store.write_logs if kind == "logs" else store.write_spans)(batch)  # pyright: ignore
        timed_logs = [r for c in copies_rows[base_copies:] for r in c[0]]
        timed_spans = [s for c in copies_rows[base_copies:] for s in c[1]]
        work = [(kind, _prepared(kind, batch)) for kind, batch in _batches(timed_logs, timed_spans)]
        if TOGETHER:  # a log batch and the span rows of the same calls in one transaction
            per_log = len(timed_spans) / len(timed_logs)
            work = []
            for start in range(0, len(timed_logs), BATCH):
                first, last = round(start * per_log), round((start + BATCH) * per_log)
                work.append(
                    (
                        "both",
                        (
                            _prepared("logs", timed_logs[start : start + BATCH]),  # pyright: ignore[reportArgumentType]
                            _prepared("spans", timed_spans[first:last]),  # pyright: ignore[reportArgumentType]
                        ),
                    )
                )
        profiler = cProfile.Profile(time.process_time) if profile else None
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        for kind, batch in work:
            ok = _write(store, kind, batch)
            if not ok:
                raise RuntimeError(f"the store dropped a batch: {store.last_error}")
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - started
        store.close()
    report = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        report = out.getvalue()
    return cpu / (calls_per_copy * copies), report


def _drop(sql: str) -> Callable[[sqlite3.Connection], None]:
    def prepare(conn: sqlite3.Connection) -> None:
        names = [r[0] for r in conn.execute(sql)]
        for name in names:
            conn.execute(f"DROP INDEX IF EXISTS {name}")

    return prepare


def _no_fts(conn: sqlite3.Connection) -> None:
    # the writer's FTS insert then goes into an ordinary table that costs next to nothing
    conn.execute("DROP TABLE IF EXISTS logs_fts")
    conn.execute("CREATE TABLE logs_fts (logs_fts, rowid_ INTEGER, body)")


_LOG_INDEXES = (
    "logs_ts",
    "logs_session_ts",
    "logs_event_ts",
    "logs_target_ts",
    "logs_errors_ts",
    "logs_service_ts",
    "logs_method_ts",
)
_SPAN_INDEXES = ("spans_session",)


def main(
    capture_calls: int,
    copies: int,
    base_copies: int,
    rounds: int,
    profile: bool,
    breakdown: bool,
    rows_file: Path | None = None,
    batch: int = BATCH,
    together: bool = False,
) -> int:
    global BATCH, TOGETHER
    BATCH, TOGETHER = batch, together
    if together and not _HAS_BATCHES:
        raise SystemExit("--together: this revision's Store has no write_batches")
    if rows_file is not None and rows_file.exists():  # the same rows for a before/after pair
        logs, spans = pickle.loads(rows_file.read_bytes())
    else:
        print(
            f"capturing the rows of {capture_calls:,} calls from a real proxy ...", file=sys.stderr
        )
        logs, spans = capture(capture_calls)
        if rows_file is not None:
            rows_file.write_bytes(pickle.dumps((logs, spans)))
    print(
        f"captured {len(logs):,} log rows and {len(spans):,} span rows "
        f"({len(logs) / capture_calls:.2f} and {len(spans) / capture_calls:.2f} per call)"
    )
    variants: list[tuple[str, Callable[[sqlite3.Connection], None] | None]] = [
        ("as shipped", None),
        ("without the full-text index", _no_fts),
        (
            "without the log indexes",
            _drop(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='logs'"
                " AND sql IS NOT NULL"
            ),
        ),
        (
            "without the span indexes",
            _drop(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='spans'"
                " AND sql IS NOT NULL"
            ),
        ),
    ]
    if breakdown:
        for name in _LOG_INDEXES + _SPAN_INDEXES:
            variants.append((f"without {name}", _drop(f"SELECT '{name}'")))
    results: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _ in range(rounds):  # alternate the variants: the machine's load hits them alike
        for name, prepare in variants:
            per_call, _report = replay(logs, spans, capture_calls, copies, base_copies, prepare)
            results[name].append(per_call)
    total = statistics.median(results["as shipped"]) * 1e6
    print(
        f"\nwriter CPU per call, median of {rounds} ({copies * capture_calls:,} calls timed"
        f" after {base_copies * capture_calls:,}):"
    )
    print("| store | us per call | the part removed costs |")
    print("|---|---|---|")
    for name, _ in variants:
        us = statistics.median(results[name]) * 1e6
        print(f"| {name} | {us:.1f} | {'-' if us == total else f'{total - us:.1f}'} |")
    if profile:
        _, report = replay(logs, spans, capture_calls, copies, base_copies, None, profile=True)
        print(report)
    return 0
