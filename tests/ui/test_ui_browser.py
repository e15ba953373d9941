"""The viewer in a real browser (Debian's chromium, driven by Playwright) over a store written
by real proxy sessions: servers, "View logs", the live stream with pause and resume, filters and
search, a record beside its answer, a session's waterfall, an export compared with
`helmet-otel logs`, markup shown as text, and the token refused. A screenshot of every view is
kept in build/ui-screenshots/."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, unquote

import orjson
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.helpers import REPO_ROOT, clean_env
from tests.ui.helpers import ProxySession, Ui, start_ui, wait_for

pytestmark = [pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO_ROOT / "build" / "ui-screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.is_file(), "the browser tests need Debian's chromium (.ci/run installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, ui: Ui) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda exc: problems.append(str(exc)))
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    opened.goto(ui.url)
    expect(opened.locator("body[data-painted='1']")).to_have_count(1)
    yield opened
    context.close()
    assert problems == []


def fmt_ms(ms: float) -> str:
    """A duration as the page writes it (fmtDur in app.js), for durations of 1 ms to 60 s."""
    if ms < 1000:
        return f"{ms:.{2 if ms < 10 else 1}f} ms"
    return f"{ms / 1000:.2f} s"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def go(page: Page, ui: Ui, hash_: str) -> None:
    page.goto(ui.base + hash_)


def test_servers_view_logs_filter_search_expand_and_markup(page: Page, ui: Ui) -> None:
    assert page.url == ui.base  # the token went into a cookie and out of the address
    rows = page.locator("tr.server")
    expect(rows).to_have_count(2)
    expect(page.locator("tr.server td.name")).to_have_text(["demo-b", "demo-a"])
    expect(page.locator("tr.server td.p95")).not_to_have_text(["…", "…"])
    # one response made the page; its first query was started by boot.js and used, not repeated
    fetched = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched == [ui.base + "api/servers", ui.base + "api/servers/p95"]
    shot(page, "servers")

    page.locator("tr.server[data-server='demo-a']").get_by_text("View logs").click()
    assert page.url.endswith("#/logs?server=demo-a")
    expect(page.locator("select[name=server]")).to_have_value("demo-a")
    records = page.locator("tr.rec")
    expect(records.first).to_be_visible()
    sessions = set(records.locator("td.sid a").evaluate_all("els => els.map(e => e.title)"))
    assert len(sessions) == 1

    # markup in a body is shown as text: nothing ran, no element was made from it
    page.fill("input[name=q]", "script document")
    expect(records).to_have_count(2)
    expect(records.first.locator("td.body")).to_contain_text('<script>document.title=\\"pwned\\"')
    assert page.title() == "helmet-otel"
    assert page.locator("table.logs img, table.logs script").count() == 0
    expect(records.first.locator("mark").first).to_have_text("script")

    page.fill("input[name=q]", "quokk")
    page.select_option("select[name=event]", "helmet.request")
    expect(records).to_have_count(1)
    assert "q=quokk" in page.url and "event=helmet.request" in page.url
    expect(records.first.locator("mark")).to_have_text(["quokka"])
    records.first.click()
    detail = page.locator("tr.detail")
    expect(detail.locator("section h4")).to_have_text(["Record", "Its answer"])
    expect(detail.locator("pre").nth(0)).to_contain_text('"arguments":{"text":"hello quokka"}')
    expect(detail.locator("pre").nth(1)).to_contain_text('"event": "helmet.response"')
    expect(detail.locator("pre mark").first).to_have_text("quokka")
    shot(page, "logs")

    # the filters are in the URL: a bookmark opens the same view
    page.reload()
    expect(page.locator("input[name=q]")).to_have_value("quokk")
    expect(records).to_have_count(1)


def test_live_stream_pause_resume_and_history(page: Page, ui: Ui, filled_store: Path) -> None:
    go(page, ui, "#/logs?event=helmet.request")
    page.reload()
    records = page.locator("tr.rec")
    expect(records.first).to_be_visible()
    # the first page's query was started by boot.js, before anything app.js asked for (a
    # request is listed once its answer is in: wait for both, however the two finish)
    page.wait_for_function(
        "performance.getEntriesByType('resource').some(e => e.name.endsWith('/api/servers'))"
    )
    fetched = page.evaluate(
        "performance.getEntriesByType('resource').sort((a, b) => a.startTime - b.startTime)"
        ".map(e => e.name)"
    )
    assert fetched[:2] == [
        ui.base + "api/logs?event=helmet.request&limit=200", ui.base + "api/servers"
    ]  # fmt: skip
    before = records.count()
    live = ProxySession(filled_store, "demo-live")
    try:
        live.call(1, "echo", text="first live marker")
        expect(records.first.locator("td.body")).to_contain_text("first live marker", timeout=5000)
        page.get_by_role("button", name="Pause").click()
        expect(page.locator(".status-line")).to_contain_text("paused")
        live.call(2, "echo", text="second live marker")
        live.call(3, "echo", text="third live marker")
        # paused: the page does not move (the records wait in the store)
        expect(records.first.locator("td.body")).to_contain_text("first live marker")
        page.get_by_role("button", name="Resume").click()
        expect(records.nth(0).locator("td.body")).to_contain_text("third live marker")
        expect(records.nth(1).locator("td.body")).to_contain_text("second live marker")
        expect(records.nth(2).locator("td.body")).to_contain_text("first live marker")
        expect(records).to_have_count(before + 4)  # initialize and the three calls
        shot(page, "live")
    finally:
        live.close()


def test_session_waterfall_records_and_numbers(page: Page, ui: Ui) -> None:
    go(page, ui, "#/sessions")
    sessions = page.locator("tr.session")
    expect(sessions.first).to_be_visible()
    shot(page, "sessions")
    target = page.locator("tr.session", has_text="demo-a")
    target.locator("td.sid a").click()
    expect(page.locator(".waterfall")).to_be_visible()
    labels = page.locator(".waterfall .wrow .label")
    expect(page.locator(".waterfall .wrow", has_text="tools/call fail").first).to_have_class(
        "wrow err"
    )
    kinds = set(page.locator(".waterfall .wrow .label .tag").all_inner_texts())
    assert {"SERVER", "CLIENT"} <= kinds, kinds
    assert labels.count() >= 10
    expect(page.locator(".cards .card", has_text="requests").locator(".value")).to_have_text("5")
    expect(page.locator(".cards .card", has_text="errors").locator(".value")).to_have_text("1")
    expect(page.locator("table.logs.compact tr.rec").first).to_be_visible()
    shot(page, "session")

    # zoom: drag across the last stretch of the time axis (after initialize, which the calls
    # follow); the page asks for that range and shows exactly the spans that overlap it
    sid = unquote(page.url.split("#/sessions/", 1)[1])
    whole = ui.api(f"/api/session?id={sid}")
    assert whole["zoom"] is None and whole["spans_in_range"] == whole["spans_total"]
    track = page.locator(".waterfall .wrow:not(.axis) .track").first.bounding_box()
    assert track is not None
    y = track["y"] + track["height"] / 2
    page.mouse.move(track["x"] + track["width"] * 0.95, y)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.999, y, steps=4)
    page.mouse.up()
    expect(page).to_have_url(re.compile(r"\?from=[0-9.]+&to=[0-9.]+$"))
    zoom = dict(parse_qsl(page.url.split("?", 1)[1]))
    low, high = float(zoom["from"]), float(zoom["to"])
    assert whole["span_ms"] * 0.94 < low < high <= whole["span_ms"]
    zoomed = ui.api(f"/api/session?id={sid}&from={zoom['from']}&to={zoom['to']}")
    expected = [
        (s["kind"], s["name"]) for s in whole["spans"]
        if s["offset_ms"] <= high and s["offset_ms"] + (s["duration_ms"] or 0) >= low
    ]  # fmt: skip
    assert [(s["kind"], s["name"]) for s in zoomed["spans"]] == expected
    assert 0 < len(expected) < len(whole["spans"]) and zoomed["zoom"] == [low, high]
    labels = page.locator(".waterfall .wrow:not(.axis) .label")
    expect(labels).to_have_count(len(expected))
    expect(page.locator(".zoom-bar")).to_contain_text(f"of {fmt_ms(whole['span_ms'])}")
    shot(page, "session-zoomed")
    page.get_by_role("button", name="Whole session").click()
    expect(labels).to_have_count(len(whole["spans"]))
    assert "?" not in page.url


def test_in_flight_calls_are_shown(page: Page, ui: Ui, filled_store: Path) -> None:
    live = ProxySession(filled_store, "demo-slow")
    try:
        live.proc.write(
            orjson.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                          "params": {"name": "slow", "arguments": {"seconds": 30}}}) + b"\n"
        )  # fmt: skip
        stored = wait_for(
            lambda: ui.api("/api/logs?server=demo-slow&tool=slow")["records"], 10, "the slow call"
        )
        sid = stored[0]["session"]
        go(page, ui, f"#/sessions/{sid}")
        row = page.locator(".waterfall .pending-row")
        expect(row).to_contain_text("IN FLIGHT", timeout=5000)
        expect(row).to_contain_text("tools/call slow")
        shot(page, "in-flight")
    finally:
        live.proc.write(
            orjson.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": 9}}) + b"\n"
        )  # fmt: skip
        live.close()


def test_export_matches_helmet_otel_logs(page: Page, ui: Ui, filled_store: Path) -> None:
    sid = ui.api("/api/sessions?server=demo-a")["sessions"][0]["id"]
    go(page, ui, f"#/logs?session={sid[:8]}&event=helmet.response")
    page.reload()
    expect(page.locator("tr.rec")).to_have_count(5)
    for fmt in ("ndjson", "csv"):
        with page.expect_download() as info:
            page.locator(f"a.export-{fmt}").click()
        got = Path(info.value.path()).read_bytes()
        cli = subprocess.run(
            [sys.executable, "-m", "helmet_otel", "logs", "--store", str(filled_store),
             f"--session={sid[:8]}", "--event", "response", "--format", fmt],
            capture_output=True, env=clean_env(), cwd=REPO_ROOT, timeout=30, check=True,
        )  # fmt: skip
        assert got == cli.stdout
    assert len(got.splitlines()) == 6  # the header and five responses


def test_stats_security_and_the_token(page: Page, ui: Ui, browser: Browser) -> None:
    go(page, ui, "#/stats?window=all&by=tool")
    expect(page.locator("table.stats tbody tr").first).to_be_visible()
    expect(page.locator("table.stats tbody")).to_contain_text("fail")
    shot(page, "stats")
    go(page, ui, "#/security")
    expect(page.locator(".empty")).to_contain_text("No security findings in this window.")
    expect(page.locator(".empty")).to_contain_text("Policy blocks")
    shot(page, "security")
    stranger = browser.new_context()
    try:
        refused = stranger.new_page()
        response = refused.goto(ui.base)
        assert response is not None and response.status == 401
        expect(refused.locator("body")).to_contain_text("needs its access token")
    finally:
        stranger.close()


ENFORCED = """
mode = "enforce"

[[rule]]
id = "no-add"
tools = ["add"]
action = "deny"
"""


def test_security_page_shows_real_blocks_and_findings(browser: Browser, tmp_path: Path) -> None:
    """Proxies run with a policy: enforced blocks, a shadow-mode denial and a sensitive
    argument, all written by the proxies' own detectors, as the page and its route show them."""
    store = tmp_path / "store.db"
    enforce = tmp_path / "enforce.toml"
    enforce.write_text(ENFORCED)
    shadow = tmp_path / "shadow.toml"
    shadow.write_text(ENFORCED.replace('"enforce"', '"shadow"'))
    guarded = ProxySession(store, "guarded", "--policy", str(enforce))
    try:
        for i in (1, 2):
            denied = guarded.call(i, "add", a=1, b=2)
            assert denied["error"] == {
                "code": -32001, "message": "Tool access denied by policy",
                "data": {"type": "policy_block", "policy_id": "no-add"},
            }  # fmt: skip
        assert "result" in guarded.call(3, "echo", text="see ../../etc/hosts")
    finally:
        guarded.close()
    watched = ProxySession(store, "watched", "--policy", str(shadow))
    try:
        assert watched.call(1, "add", a=1, b=2)["result"]["content"][0]["text"] == "3"
    finally:
        watched.close()
    viewer = start_ui(store)
    try:
        data = viewer.api("/api/security?window=24h")
        assert (data["total"], data["blocks"], data["shadow_blocks"]) == (4, 2, 1)
        assert [(b["rule"], b["tool"], b["server"], b["enforced"], b["shadow"])
                for b in data["blocks_by_rule"]] == [
            ("no-add", "add", "guarded", 2, 0), ("no-add", "add", "watched", 0, 1),
        ]  # fmt: skip
        assert [(c["type"], c["severity"], c["count"]) for c in data["by_type"]] == [
            ("policy_block", "medium", 2), ("policy_block", "low", 1),
            ("sensitive_argument", "medium", 1),
        ]  # fmt: skip
        assert [(f["type"], f["rule"], f["target"], f["service"]) for f in data["latest"]] == [
            ("policy_block", "no-add", "add", "watched"),
            ("sensitive_argument", "sensitive_argument", "echo", "guarded"),
            ("policy_block", "no-add", "add", "guarded"),
            ("policy_block", "no-add", "add", "guarded"),
        ]  # fmt: skip
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            page = context.new_page()
            page.goto(viewer.url + "#/security")
            expect(page.locator(".cards .card .value")).to_have_text(["4", "2", "1"])
            blocks = page.locator("table.blocks tbody tr")
            expect(blocks).to_have_count(2)
            expect(blocks.nth(0).locator("td")).to_have_text(
                ["no-add", "add", "guarded", "2", "", re.compile(r"^\d{4}-"), "View logs"]
            )
            expect(blocks.nth(1).locator("td").nth(4)).to_have_text("1")
            expect(page.locator("table.types tbody tr td:first-child")).to_have_text(
                ["policy_block", "policy_block", "sensitive_argument"]
            )
            findings = page.locator("table.findings tbody tr")
            expect(findings).to_have_count(4)
            expect(findings.nth(1).locator(".sev")).to_have_text("medium")
            expect(findings.nth(1).locator("td").last).to_contain_text("path traversal")
            shot(page, "security-findings")
            blocks.nth(0).get_by_text("View logs").click()
            expect(page.locator("tr.rec")).to_have_count(3)  # the add blocks of both servers
            assert page.url.endswith("#/logs?event=helmet.security&tool=add")
        finally:
            context.close()
    finally:
        viewer.stop()
