"""`serve`'s safe defaults: Host/Origin (DNS rebinding), bearer tokens, 429, 413, and a
non-loopback address that refuses to start without a token file. A presented token is never
recorded: neither stderr nor the local store holds it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.e2e.helpers import clean_env
from tests.e2e.serve_helpers import PROBE, ServeProcess

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
    tokens = tmp_path / "tokens"
    hashed = hashlib.sha256(b"hashed-token").hexdigest()
    tokens.write_text(f"# accepted tokens\nplain-token\nsha256:{hashed}\n")
    store = tmp_path / "store.db"
    options = ("--auth-token-file", str(tokens), "--auth-failure-limit", "4")
    with ServeProcess((*PROBE, str(tmp_path / "r.jsonl")), *options, store=store) as serve:
        async with httpx2.AsyncClient(timeout=WAIT) as client:
            for token in ("plain-token", "hashed-token"):
                response = await client.post(
                    serve.url, json=INIT, headers={**ACCEPT, "authorization": f"Bearer {token}"}
                )
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
        assert serve.stop() == 0
        stderr = serve.stderr()
    assert b"auth_failure from 127.0.0.1: invalid bearer token" in stderr
    assert b"auth_failure from 127.0.0.1: missing bearer token" in stderr
    for sink in [stderr, *(p.read_bytes() for p in tmp_path.glob("store.db*"))]:
        assert WRONG_TOKEN.encode() not in sink
        assert b"plain-token" not in sink and b"hashed-token" not in sink


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
