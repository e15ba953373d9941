"""Benchmark of the web viewer (issue 14's targets) on a big store.

    .venv/bin/python benchmarks/bench_ui.py [--store PATH | --records 1000000]

1. Uses the store at ``--store`` or builds one with ``bench_store.build`` (1,000,000 records
   from 100 sessions over 24 hours).
2. Starts ``helmet-otel ui`` and opens it in headless Chromium (Playwright, Debian's chromium):
   first meaningful paint (``performance.mark('helmet:painted')``: the first view's data on the
   screen, from navigation start) of the Servers and the Logs views: 5 loads of the printed URL
   in a new browser context each (median, and the range), and 3 reloads.
3. Each filter or page as the page asks for it (``/api/...`` over HTTP, median of 3), and the
   same filters typed into the page (time until the rows are on the screen).
4. Live: the Logs view open while a writer adds 5,000 records/s for 10 s; the page's tail must
   reach the last record within 1 s of the writer stopping, and the page must stay bounded.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from helmet_otel import semconv as sc  # noqa: E402
from helmet_otel.store import Store  # noqa: E402
from helmet_otel.store.model import log_row  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def start_ui(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "helmet_otel", "ui", "--listen", "127.0.0.1:0", "--store", str(store)],
        stdout=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


def timed_get(url: str, path: str, token: str, runs: int = 3) -> float:
    parts = urlsplit(url)
    times: list[float] = []
    for _ in range(runs):
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        res = conn.getresponse()
        res.read()
        times.append(time.perf_counter() - t0)
        assert res.status == 200, (path, res.status)
        conn.close()
    return statistics.median(times)


def paint(page: Page) -> float:
    page.wait_for_selector("body[data-painted='1']")
    return float(page.evaluate("performance.getEntriesByName('helmet:painted')[0].startTime"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=5000)
    args = parser.parse_args()
    store: Path = args.store
    if store is None:
        import bench_store

        store = Path(tempfile.mkdtemp(prefix="helmet-ui-bench-")) / "store.db"
        print(f"building {args.records:,} records in {store} ...", file=sys.stderr)
        bench_store.build(store, args.records, 100)
    proc, url = start_ui(store)
    base, _, token = url.partition("?token=")
    rows: list[tuple[str, str, str]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for view in ("servers", "logs"):
                paints: list[float] = []
                for _ in range(5):
                    context = browser.new_context()
                    page = context.new_page()
                    page.goto(f"{url}#/{view}")
                    paints.append(paint(page))
                    context.close()
                context = browser.new_context()
                page = context.new_page()
                page.goto(f"{url}#/{view}")
                paint(page)
                reloads: list[float] = []
                for _ in range(3):
                    page.reload()
                    reloads.append(paint(page))
                context.close()
                rows.append((f"first meaningful paint, {view}: the printed URL in a new browser context (median, range) / a reload",
                             f"{statistics.median(paints):.0f} ms ({min(paints):.0f}-{max(paints):.0f}) / "
                             f"{statistics.median(reloads):.0f} ms", "< 300 ms"))  # fmt: skip

            sid = subprocess.run(
                [sys.executable, "-m", "helmet_otel", "sessions", "--format", "json", "--store", str(store)],
                capture_output=True, check=True, cwd=REPO,
            ).stdout  # fmt: skip
            import orjson

            first = orjson.loads(sid)[0]["session_id"]
            server = subprocess.run(
                [sys.executable, "-c", "import sys; print(sys.argv[1])", "server-3"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for label, path in [
                ("logs, newest 200", "/api/logs?limit=200"),
                ("logs, server filter", f"/api/logs?server={server}"),
                (
                    "logs, session + event + since 2h",
                    f"/api/logs?session={first[:8]}&event=response&since=2h",
                ),
                ("logs, search a rare word", "/api/logs?q=quokka"),
                ("logs, search a common word", "/api/logs?q=weather"),
                ("logs, search a word nothing has", "/api/logs?q=zyzzyva"),
                ("logs, search a one-letter prefix", "/api/logs?q=q"),
                ("logs, errors only", "/api/logs?errors=1"),
                ("logs, tool + direction", "/api/logs?tool=search&direction=c2s"),
                (
                    "logs, next page (before a cursor)",
                    "/api/logs?before=1796400000000000000:900000",
                ),
                ("record with its answer", "/api/record?id=500000"),
                ("servers (without p95)", "/api/servers"),
                ("servers p95", "/api/servers/p95"),
                ("sessions", "/api/sessions"),
                ("session page (10,000 records)", f"/api/session?id={first}"),
                ("stats, last 1h", "/api/stats?window=1h"),
                ("stats, last 24h (the whole store)", "/api/stats?window=24h"),
                ("security, last 24h", "/api/security?window=24h"),
            ]:
                rows.append((label, f"{timed_get(base, path, token) * 1000:.0f} ms", "< 500 ms"))
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{url}#/logs")
            paint(page)
            for label, selector, value in [
                ("pick an event", "select[name=event]", "helmet.request"),
                ("pick any event again", "select[name=event]", ""),
                ("type a rare word (the 90 ms typing pause included)", "input[name=q]", "quokka"),
                ("type a common word", "input[name=q]", "weather"),
                ("type a word nothing has", "input[name=q]", "zyzzyva"),
            ]:
                t0 = time.perf_counter()
                marker = page.evaluate("document.getElementById('log-rows').dataset.loads")
                if selector.startswith("select"):
                    page.select_option(selector, value)
                else:
                    page.fill(selector, value)
                page.wait_for_function(
                    "m => document.getElementById('log-rows').dataset.loads !== m",
                    arg=marker,
                )
                rows.append(
                    (
                        f"in the page: {label}",
                        f"{(time.perf_counter() - t0) * 1000:.0f} ms",
                        "< 500 ms",
                    )
                )
            # live at --rate records/s
            page.goto(f"{base}#/logs")
            page.reload()
            paint(page)
            writer = Store.open(store, max_bytes=0, max_age_s=0)
            stop_at = time.monotonic() + 10
            written = [0]
            max_rows = [0]

            def write() -> None:
                tick = 0
                t0 = time.monotonic()
                while time.monotonic() < stop_at:
                    batch = [
                        log_row(ts=time.time_ns(), event=sc.EVENT_REQUEST, severity_number=9, severity_text="INFO",
                                service="live", trace_id=None, span_id=None, body={"n": written[0] + i},
                                has_body=True, attributes={sc.HELMET_SESSION_ID: "live-bench"})
                        for i in range(args.rate // 10)
                    ]  # fmt: skip
                    writer.write_logs(batch)
                    written[0] += len(batch)
                    tick += 1
                    pause = t0 + tick * 0.1 - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)

            thread = threading.Thread(target=write)
            thread.start()
            while thread.is_alive():
                max_rows[0] = max(
                    max_rows[0], page.evaluate("document.querySelectorAll('#log-rows tr').length")
                )
                page.wait_for_timeout(250)
            done = time.monotonic()
            last = f'{{"n":{written[0] - 1}}}'
            page.wait_for_function(
                "t => document.querySelector('#log-rows tr.rec td.body')?.textContent.startsWith(t)",
                arg=last, timeout=5000,
            )  # fmt: skip
            caught_up = time.monotonic() - done
            nodes = page.evaluate("document.getElementsByTagName('*').length")
            writer.close()
            rows.append((f"live at {args.rate:,} records/s for 10 s: newest record on the page after the writer stopped",
                         f"{caught_up * 1000:.0f} ms ({written[0]:,} written)", "< 1 s"))  # fmt: skip
            rows.append(("live: most rows on the page at once / DOM elements at the end",
                         f"{max_rows[0]:,} / {nodes:,}", "bounded"))  # fmt: skip
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    print("| measurement | result | target |\n|---|---|---|")
    for label, result, target in rows:
        print(f"| {label} | {result} | {target} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
