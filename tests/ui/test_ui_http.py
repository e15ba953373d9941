"""The viewer over plain HTTP: the access token, Host/Origin, the security headers, the JSON
routes over a store written by real proxy sessions, markup kept as data, and exports that are
byte for byte what `helmet-otel logs` writes."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from helmet_otel.ui.api import page_meta
from helmet_otel.ui.app import CSP
from helmet_otel.ui.assets import build_shell
from tests.e2e.helpers import REPO_ROOT, clean_env
from tests.ui.helpers import XSS, Ui, start_ui

pytestmark = [pytest.mark.e2e]


def test_the_first_stdout_line_is_the_url_with_a_fresh_token(ui: Ui) -> None:
    assert ui.url.startswith("http://127.0.0.1:") and ui.url.endswith(f"/?token={ui.token}")
    assert len(ui.token) >= 32
    status, headers, body = ui.get("/")
    assert (status, body) == (
        401,
        b"this viewer needs its access token: open the URL `helmet-otel ui` printed\n",
    )
    assert headers["content-security-policy"] == CSP.decode()


@pytest.mark.parametrize(
    "path", ["/", "/api/meta", "/api/servers", "/api/logs", "/api/export?format=csv", "/nope"]
)
def test_every_path_needs_the_token(ui: Ui, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"helmet_ui_{ui.port}=x"}):
        status, _, _ = ui.get(path, headers)
        assert status == 401, (path, headers)
    assert ui.get(path + ("&" if "?" in path else "?") + "token=wrong")[0] == 401


def _blocks(page: str, tag: str) -> list[str]:
    return re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_printed_url_sets_a_cookie_and_answers_the_whole_page(ui: Ui) -> None:
    status, headers, first = ui.get(f"/?token={ui.token}")
    assert status == 200 and "location" not in headers  # no redirect before the first paint
    assert headers["set-cookie"] == (
        f"helmet_ui_{ui.port}={ui.token}; Path=/; HttpOnly; SameSite=Strict"
    )
    status, headers, body = ui.get("/", {"Cookie": f"other=1; helmet_ui_{ui.port}={ui.token}"})
    assert (status, body) == (200, first) and "set-cookie" not in headers
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert (headers["x-content-type-options"], headers["referrer-policy"]) == (
        "nosniff",
        "no-referrer",
    )
    # one response: the stylesheet, boot.js and app.js inline, allowed by their hashes alone
    static = REPO_ROOT / "helmet_otel" / "ui" / "static"
    page = body.decode()
    scripts = _blocks(page, "script")
    styles = _blocks(page, "style")
    assert scripts == [(static / "boot.js").read_text(), (static / "app.js").read_text()]
    assert styles == [(static / "style.css").read_text()]
    assert headers["content-security-policy"] == (
        f"default-src 'none'; script-src {_sha(scripts[0])} {_sha(scripts[1])}; "
        f"style-src {_sha(styles[0])}; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    assert "unsafe" not in headers["content-security-policy"]
    assert not re.search(r"""(src|href)=["'](?!#|data:)""", page)  # nothing else to fetch
    # the metadata is data (a JSON block that no browser runs), spelled so that it cannot end it
    meta = re.search(r'<script type="application/json" id="meta">(.*?)</script>', page, re.S)
    assert meta is not None and "<" not in meta.group(1)
    assert orjson.loads(meta.group(1)) == ui.api("/api/meta")


def test_markup_in_the_store_path_cannot_end_the_metadata_block(tmp_path: Path) -> None:
    tricky = tmp_path / "</script><script>alert(1)<!--" / "store.db"
    shell = build_shell(page_meta(tricky))
    page = shell.body.decode()
    meta = re.search(r'<script type="application/json" id="meta">(.*?)</script>', page, re.S)
    assert meta is not None and orjson.loads(meta.group(1))["store"] == str(tricky)
    assert "<script>alert" not in page and page.count("<script") == 3


@pytest.mark.parametrize(
    ("headers", "status", "why"),
    [
        ({"Host": "evil.example:80"}, 403, b"Host not allowed\n"),
        ({"Origin": "http://evil.example"}, 403, b"Origin not allowed\n"),
        ({"Origin": "http://localhost:1"}, 403, b"Origin not allowed\n"),  # another local app
        ({"Sec-Fetch-Site": "cross-site"}, 403, b"cross-site requests are not allowed\n"),
        ({"Sec-Fetch-Site": "same-site"}, 403, b"cross-site requests are not allowed\n"),
    ],
)
def test_host_origin_and_other_sites_are_refused_even_with_the_token(
    ui: Ui, headers: dict[str, str], status: int, why: bytes
) -> None:
    answer = ui.get("/api/servers", {"Authorization": f"Bearer {ui.token}", **headers})
    assert (answer[0], answer[2]) == (status, why)


def test_same_origin_requests_pass_and_the_viewer_is_read_only(ui: Ui) -> None:
    auth = {"Authorization": f"Bearer {ui.token}"}
    origin = ui.base.rstrip("/")
    assert (
        ui.get("/api/servers", {**auth, "Origin": origin, "Sec-Fetch-Site": "same-origin"})[0]
        == 200
    )
    for method in ("POST", "DELETE", "PUT"):
        status, headers, body = ui.get("/api/servers", auth, method=method)
        assert (status, headers["allow"], body) == (405, "GET", b"the viewer is read-only\n")


def test_servers_sessions_and_records_from_real_proxy_sessions(ui: Ui) -> None:
    servers = {s["name"]: s for s in ui.api("/api/servers")["servers"]}
    assert set(servers) == {"demo-a", "demo-b"}
    a = servers["demo-a"]
    assert (a["sessions"], a["active"], a["calls"], a["errors"], a["findings"]) == (1, 0, 5, 1, 0)
    assert a["command"].endswith("-m helmet_otel.examples.demo_server")
    p95 = ui.api("/api/servers/p95")["p95_ms"]
    assert set(p95) == {"demo-a", "demo-b"} and all(v > 0 for v in p95.values())
    sessions = ui.api("/api/sessions")["sessions"]
    assert [s["server"] for s in sessions] == ["demo-b", "demo-a"]  # newest first
    assert [s["status"] for s in sessions] == ["ended", "ended"]
    calls = ui.api("/api/logs?server=demo-a&event=request&method=tools/call")["records"]
    assert [r["target"] for r in calls] == ["echo", "fail", "add", "echo"]  # newest first
    assert {r["session"] for r in calls} == {sessions[1]["id"]}
    found = ui.api("/api/logs?q=quokk")["records"]
    assert [(r["event"], r["service"]) for r in found] == [
        ("helmet.response", "demo-a"),
        ("helmet.request", "demo-a"),
    ]
    detail = ui.api(f"/api/record?id={found[1]['id']}")
    assert detail["pair"]["id"] == found[0]["id"]
    assert orjson.loads(detail["record"]["json"])["body"]["arguments"] == {"text": "hello quokka"}
    assert orjson.loads(detail["pair"]["json"])["body"]["content"][0]["text"] == "hello quokka"


def test_paging_walks_back_to_the_oldest_record_and_the_tail_goes_forward(ui: Ui) -> None:
    everything = ui.api("/api/logs?limit=1000")["records"]
    walked: list[int] = []
    before = ""
    while True:
        page = ui.api(f"/api/logs?limit=3{before}")
        walked += [r["id"] for r in page["records"]]
        if not page["more"]:
            break
        last = page["records"][-1]
        before = f"&before={last['ts']}:{last['id']}"
    assert walked == [r["id"] for r in everything] and len(walked) > 20
    oldest = min(walked)
    tail = ui.api(f"/api/tail?after={oldest}&limit=5&event=request")
    requests = sorted(
        r["id"] for r in everything if r["event"] == "helmet.request" and r["id"] > oldest
    )
    assert [r["id"] for r in tail["records"]] == sorted(requests, reverse=True)[:5]
    assert tail["gap"] is (len(requests) > 5) and tail["cursor"] == max(walked)


def test_markup_in_a_body_is_data(ui: Ui) -> None:
    status, headers, body = ui.get(
        f"/api/logs?q={quote('script document title')}", {"Authorization": f"Bearer {ui.token}"}
    )
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    records = orjson.loads(body)["records"]
    escaped = orjson.dumps(XSS).decode()[1:-1]  # the markup as the stored JSON body spells it
    assert [r["event"] for r in records] == ["helmet.response", "helmet.request"]
    assert all(escaped in r["preview"] for r in records), records
    detail = ui.api(f"/api/record?id={records[1]['id']}")
    assert orjson.loads(detail["record"]["json"])["body"]["arguments"]["text"] == XSS


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_the_export_is_what_helmet_otel_logs_writes(ui: Ui, filled_store: Path, fmt: str) -> None:
    sessions = ui.api("/api/sessions")["sessions"]
    sid = sessions[1]["id"][:10]
    status, headers, body = ui.get(
        f"/api/export?format={fmt}&session={sid}&event=request,response&q=echo",
        {"Authorization": f"Bearer {ui.token}"},
    )
    assert status == 200 and headers["content-disposition"].endswith(f'.{fmt}"')
    cli = subprocess.run(
        [sys.executable, "-m", "helmet_otel", "logs", "--store", str(filled_store), f"--session={sid}",
         "--event", "request,response", "--grep", "echo", "--format", fmt],
        capture_output=True, env=clean_env(), cwd=REPO_ROOT, timeout=30, check=True,
    )  # fmt: skip
    assert body == cli.stdout and len(body.splitlines()) >= 3


def test_bad_filters_are_400_with_the_reason(ui: Ui) -> None:
    for query, message in [
        ("event=nope", "event: unknown event 'nope'"),
        ("since=yesterday-ish", "since: invalid duration or timestamp: 'yesterday-ish'"),
        ("direction=up", "direction: expected client->server or server->client, got 'up'"),
        ("limit=0", "limit: expected 1 to 1000, got 0"),
        ("q=%21%21", "q: '!!' has no words to search for"),
    ]:
        status, _, body = ui.get(f"/api/logs?{query}", {"Authorization": f"Bearer {ui.token}"})
        assert status == 400 and orjson.loads(body)["error"].startswith(message), body


def test_no_token_only_on_loopback_and_then_no_token_is_needed(
    filled_store: Path, tmp_path: Path
) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "helmet_otel", "ui", "--no-token", "--listen", "0.0.0.0:0",
         "--store", str(filled_store)],
        capture_output=True, text=True, env=clean_env(), cwd=REPO_ROOT, timeout=30,
    )  # fmt: skip
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        2, "", "helmet-otel: error: --no-token needs a loopback --listen, not 0.0.0.0:0\n"
    )  # fmt: skip
    bad = subprocess.run(
        [sys.executable, "-m", "helmet_otel", "ui"], capture_output=True, text=True,
        env=clean_env({"HELMET_UI_LISTEN": "8765"}), cwd=REPO_ROOT, timeout=30,
    )  # fmt: skip
    assert (bad.returncode, bad.stderr) == (
        2, "helmet-otel: error: HELMET_UI_LISTEN: bad value '8765': expected HOST:PORT such as "
        "127.0.0.1:8765 or [::1]:0\n",
    )  # fmt: skip
    open_ui = start_ui(filled_store, "--no-token")
    try:
        assert open_ui.token == "" and open_ui.url == open_ui.base
        assert open_ui.get("/api/servers")[0] == 200
        assert open_ui.get("/api/servers", {"Host": "evil.example"})[0] == 403
    finally:
        open_ui.stop()
    missing = start_ui(tmp_path / "none.db")
    try:
        status, _, body = missing.get("/api/servers", {"Authorization": f"Bearer {missing.token}"})
        assert (status, orjson.loads(body)) == (
            503, {"error": f"no store at {tmp_path / 'none.db'} (no proxy has written to it yet)"}
        )  # fmt: skip
    finally:
        missing.stop()
