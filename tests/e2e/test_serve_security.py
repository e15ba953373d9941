"""`serve`'s safe defaults: Host/Origin (DNS rebinding), bearer tokens, 429, 413, and a
non-loopback address that refuses to start without a token file. A presented token is never
recorded: neither stderr nor the local store holds it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from helmet_otel import semconv as sc
from tests.e2e.helpers import clean_env
from tests.e2e.serve_helpers import PROBE, ServeProcess
from tests.otlp_receiver import OTLPReceiver
from tests.policy.helpers import security_records

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

WAIT = 10.0
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}}  # fmt: skip
WRONG_TOKEN = "wrong-token-Zq8xK2"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_foreign_host_and_origin_are_refused(tmp_path: Path) -> None:
    with ServeProcess((*PROBE, str(tmp_path / "r.jsonl"))) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            # DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1
            response = await client.post(
                serve.url, json=INIT, headers={**ACCEPT, "host": f"evil.example:{serve.port}"}
            )
            assert response.status_code == 403
            response = await client.post(
                serve.url, json=INIT, headers={**ACCEPT, "origin": "http://evil.example"}
            )
            assert response.status_code == 403
            assert not serve.children()  # nothing was started for them
            for host in (f"localhost:{serve.port}", f"127.0.0.1:{serve.port}"):
                response = await client.post(
                    serve.url, json=INIT,
                    headers={**ACCEPT, "host": host, "origin": f"http://{host}"},
                )  # fmt: skip
                assert response.status_code == 200, host


async def test_bearer_tokens_401_then_429_and_no_token_in_any_sink(tmp_path: Path) -> None:
    """Each refused authentication (401, and each 429 of the block it earns) is an
    ``auth_failure`` record of the process, in the store and at an OTLP collector, and counted
    in helmet.security.events; no sink ever holds a presented token."""
    tokens = tmp_path / "tokens"
    hashed = hashlib.sha256(b"hashed-token").hexdigest()
    tokens.write_text(f"# accepted tokens\nplain-token\nsha256:{hashed}\n")
    store = tmp_path / "store.db"
    options = ("--auth-token-file", str(tokens), "--auth-failure-limit", "4")
    with OTLPReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint}
        with ServeProcess(
            (*PROBE, str(tmp_path / "r.jsonl")), *options, store=store, env=env
        ) as serve:
            async with httpx2.AsyncClient(timeout=WAIT) as client:
                for token in ("plain-token", "hashed-token"):
                    response = await client.post(
                        serve.url, json=INIT,
                        headers={**ACCEPT, "authorization": f"Bearer {token}"},
                    )  # fmt: skip
                    assert response.status_code == 200, token
                response = await client.post(serve.url, json=INIT, headers=ACCEPT)
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith("Bearer")
                statuses = []
                for _ in range(4):
                    response = await client.post(
                        serve.url,
                        json=INIT,
                        headers={**ACCEPT, "authorization": f"Bearer {WRONG_TOKEN}"},
                    )
                    statuses.append(response.status_code)
                assert statuses == [401, 401, 401, 429]  # the 4th failure in a minute: blocked
                response = await client.post(
                    serve.url, json=INIT, headers={**ACCEPT, "authorization": "Bearer plain-token"}
                )
                assert response.status_code == 429  # blocked for a while, whatever it sends
            rx.wait_for(lambda r: len(_auth_failures(r.logs())) == 6)
            stored = _poll(lambda: [r for r in security_records(store)
                                    if r["attributes"][sc.HELMET_SECURITY_TYPE] == "auth_failure"],
                           6)  # fmt: skip
            running_files = [p.read_bytes() for p in tmp_path.glob("store.db*")]  # -wal too
            assert serve.stop() == 0
            stderr = serve.stderr()
        rx.wait_for(lambda r: _security_events(r.metrics()) is not None)
        exported = _auth_failures(rx.logs())
        metrics = _security_events(rx.metrics())
        bodies = list(rx.raw_bodies)
    expected = [
        ("medium", "missing bearer token", 401),
        ("medium", "invalid bearer token", 401),
        ("medium", "invalid bearer token", 401),
        ("high", "invalid bearer token", 401),  # the failure that earns the block
        ("low", "too many failed authentications", 429),
        ("low", "too many failed authentications", 429),
    ]
    for records in (exported, stored):
        seen = [(a[sc.HELMET_SECURITY_SEVERITY], a[sc.HELMET_SECURITY_REASON],
                 a[sc.HTTP_RESPONSE_STATUS_CODE]) for a in (r["attributes"] for r in records)]  # fmt: skip
        assert seen == expected
        for record in records:
            attributes = record["attributes"]
            assert attributes[sc.CLIENT_ADDRESS] == "127.0.0.1"
            assert isinstance(attributes[sc.CLIENT_PORT], int)
            assert attributes[sc.HELMET_SECURITY_RULE] == "auth_failure"
            assert attributes[sc.HELMET_PROXY_PID] == serve.pid
            assert sc.HELMET_SESSION_ID not in attributes  # before any session: the process's
    assert stored[3]["body"] == (
        "authentication failed from 127.0.0.1: invalid bearer token; the address gets 429 for 60 s"
    )
    assert exported[0]["severity_text"] == "WARN" and exported[0]["trace_id"] in ("", None)
    # (exported as 0 from the start, so an alert sees the first one as an increase)
    assert metrics == {("auth_failure", "medium"): 3, ("auth_failure", "high"): 1,
                       ("auth_failure", "low"): 2, ("tool_drift", "high"): 0}  # fmt: skip
    # with telemetry on, stderr says only what earned the block
    assert stderr.count(b"helmet-otel: security:") == 1
    assert b"security: authentication failed from 127.0.0.1: invalid bearer token; the " in stderr
    final_files = [p.read_bytes() for p in tmp_path.glob("store.db*")]
    for sink in [stderr, *running_files, *final_files, *bodies]:
        assert WRONG_TOKEN.encode() not in sink
        assert b"plain-token" not in sink and b"hashed-token" not in sink
    assert len(bodies) >= 2 and len(running_files) >= 2


def test_without_telemetry_each_auth_failure_is_a_stderr_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("plain-token\n")
    with ServeProcess((*PROBE, str(tmp_path / "r.jsonl")), "--auth-token-file",
                      str(tokens)) as serve:  # fmt: skip
        for authorization in (None, f"Bearer {WRONG_TOKEN}"):
            headers = {**ACCEPT, **({"authorization": authorization} if authorization else {})}
            response = httpx2.post(serve.url, json=INIT, headers=headers, timeout=WAIT)
            assert response.status_code == 401
        assert serve.stop() == 0
        stderr = serve.stderr()
    assert stderr.count(b"helmet-otel: security: ") == 2
    assert b"security: authentication failed from 127.0.0.1: missing bearer token\n" in stderr
    assert b"security: authentication failed from 127.0.0.1: invalid bearer token\n" in stderr
    assert WRONG_TOKEN.encode() not in stderr


def _auth_failures(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in logs if r["event_name"] == sc.EVENT_SECURITY
            and r["attributes"].get(sc.HELMET_SECURITY_TYPE) == "auth_failure"]  # fmt: skip


def _security_events(metrics: list[dict[str, Any]]) -> dict[tuple[str, str], int] | None:
    """The last export of helmet.security.events by (type, severity), or None before it."""
    found = [m for m in metrics if m["name"] == sc.METRIC_SECURITY_EVENTS]
    if not found:
        return None
    return {
        (p["attributes"][sc.HELMET_SECURITY_TYPE], p["attributes"][sc.HELMET_SECURITY_SEVERITY]):
        int(p["value"]) for p in found[-1]["data_points"]
    }  # fmt: skip


def _poll(read: Callable[[], list[dict[str, Any]]], count: int) -> list[dict[str, Any]]:
    """``read()`` once it returns ``count`` items (the store is written a moment later)."""
    deadline = time.monotonic() + WAIT
    while True:
        found = read()
        if len(found) >= count or time.monotonic() > deadline:
            return found


async def test_a_body_over_the_limit_gets_413_naming_it(tmp_path: Path) -> None:
    with ServeProcess((*PROBE, str(tmp_path / "r.jsonl")), "--max-message-size", "1KiB") as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            big = {**INIT, "params": {**INIT["params"], "padding": "x" * 2000}}
            response = await client.post(serve.url, json=big, headers=ACCEPT)
            assert response.status_code == 413
            error = response.json()["error"]
            assert "1024 bytes" in error["message"] and error["data"] == {"limit": 1024}

            async def chunks():  # no Content-Length: the limit holds while reading
                for _ in range(3):
                    yield b"x" * 600

            response = await client.post(serve.url, content=chunks(), headers=ACCEPT)
            assert response.status_code == 413
            response = await client.post(serve.url, json=INIT, headers=ACCEPT)
            assert response.status_code == 200


def test_a_non_loopback_address_needs_a_token_file(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "helmet_otel", "serve", "--no-store", "--listen", "0.0.0.0:0",
            "--", *PROBE, str(tmp_path / "r.jsonl")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, env=clean_env(), timeout=30)
    assert done.returncode == 2
    assert b"--auth-token-file" in done.stderr and len(done.stderr.splitlines()) == 1
    with ServeProcess((*PROBE, str(tmp_path / "r.jsonl")), "--insecure-no-auth") as serve:
        assert serve.url.startswith("http://127.0.0.1:")


def test_a_bad_option_is_one_line_and_status_2() -> None:
    argv = [sys.executable, "-m", "helmet_otel", "serve", "--listen", "localhost", "--", "true"]
    done = subprocess.run(argv, capture_output=True, env=clean_env(), timeout=30)
    assert done.returncode == 2
    assert done.stderr == (
        b"helmet-otel: error: --listen: bad value 'localhost': expected HOST:PORT such as "
        b"127.0.0.1:8080 or [::1]:0\n"
    )
    assert anyio  # (the module's other tests are async)
