"""The web viewer's test parts: a store filled by real proxy sessions, the `helmet-otel ui`
process, and raw HTTP requests to it."""

from __future__ import annotations

import http.client
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from tests.e2e.helpers import DEMO_SERVER, REPO_ROOT, RawProcess, clean_env, proxy_argv

XSS = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
INIT = {
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "ui-test", "version": "1"}},
}  # fmt: skip


def line(obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


def call(i: int, tool: str, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}  # fmt: skip


class ProxySession:
    """A real proxy (`helmet-otel --store PATH --name NAME <demo server>`) driven with raw
    JSON-RPC; each call waits for its answer."""

    def __init__(self, store: Path, name: str, *options: str) -> None:
        argv = proxy_argv(DEMO_SERVER, "--store", str(store), "--name", name, *options, store=True)
        self.proc = RawProcess(argv, env=clean_env())
        self.proc.write(line(INIT))
        self._wait(b'"id":0')
        self.proc.write(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    def _wait(self, marker: bytes) -> None:
        out = self.proc.stdout.wait(lambda data: marker in data, timeout=20)
        assert marker in out, f"no answer {marker!r}: {out[-500:]!r}"

    def call(self, i: int, tool: str, **arguments: Any) -> dict[str, Any]:
        """The call's answer."""
        self.proc.write(line(call(i, tool, **arguments)))
        self._wait(b'"id":%d' % i)
        answers = [orjson.loads(x) for x in self.proc.stdout.data().splitlines()]
        return next(a for a in answers if a.get("id") == i)

    def close(self) -> None:
        self.proc.close_stdin()
        assert self.proc.wait(timeout=30) == 0
        self.proc.__exit__(None, None, None)


def fill_store(store: Path) -> None:
    """Two finished sessions of two servers: tool calls (one failing) and a body with markup."""
    a = ProxySession(store, "demo-a")
    a.call(1, "echo", text="hello quokka")
    a.call(2, "add", a=2, b=3)
    a.call(3, "fail", message="it broke")
    a.call(4, "echo", text=XSS)
    a.close()
    b = ProxySession(store, "demo-b")
    b.call(1, "echo", text="from the second server")
    b.close()


@dataclass
class Ui:
    proc: RawProcess
    url: str  # as printed, with the token
    base: str  # http://host:port/
    token: str

    @property
    def port(self) -> int:
        return int(urlsplit(self.base).port or 0)

    def get(self, path: str, headers: Mapping[str, str] | None = None, *,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        try:
            sent = {"Host": parts.netloc, **(headers or {})}
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.endheaders()
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()

    def api(self, path: str) -> Any:
        status, _, body = self.get(path, {"Authorization": f"Bearer {self.token}"})
        assert status == 200, (path, status, body)
        return orjson.loads(body)

    def stop(self) -> None:
        self.proc.proc.send_signal(2)
        assert self.proc.wait(timeout=15) == 0
        self.proc.__exit__(None, None, None)


def start_ui(store: Path, *options: str) -> Ui:
    argv = [sys.executable, "-m", "helmet_otel", "ui", "--listen", "127.0.0.1:0",
            "--store", str(store), *options]  # fmt: skip
    proc = RawProcess(argv, env=clean_env(), cwd=REPO_ROOT)
    out = proc.stdout.wait(lambda data: b"\n" in data, timeout=20)
    assert b"\n" in out, proc.stderr.data()
    url = out.split(b"\n", 1)[0].decode()
    base, _, token = url.partition("?token=")
    return Ui(proc, url, base, token)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a real condition until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
