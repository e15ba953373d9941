"""server-everything's own HTTP transports (``streamableHttp``, ``sse``) as real upstreams on a
free loopback port, for the `connect` and `serve --upstream` tests."""

from __future__ import annotations

import socket
from types import TracebackType

from tests.e2e.helpers import EVERYTHING_JS, RawProcess, clean_env, node

START_TIMEOUT = 20.0
_READY = {"streamableHttp": b"listening on port", "sse": b"Server is running on port"}
_PATHS = {"streamableHttp": "/mcp", "sse": "/sse"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EverythingHttp:
    """``node server-everything MODE`` listening on ``port`` (a free one unless given)."""

    def __init__(self, mode: str = "streamableHttp", port: int | None = None) -> None:
        self.mode = mode
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}{_PATHS[mode]}"
        assert EVERYTHING_JS.is_file(), f"{EVERYTHING_JS} is missing: run `npm ci`"
        self.raw = RawProcess(
            [node(), str(EVERYTHING_JS), mode], env=clean_env({"PORT": str(self.port)})
        )
        ready = _READY[mode]
        found = self.raw.stderr.wait(lambda data: ready in data, START_TIMEOUT)
        if ready not in found:
            self.raw.kill()
            raise AssertionError(f"server-everything {mode} did not start: {found!r}")

    def output(self) -> bytes:
        """What it logged (server-everything logs requests on stdout and stderr)."""
        return self.raw.stdout.data() + self.raw.stderr.data()

    def stop(self) -> None:
        self.raw.kill()

    def __enter__(self) -> EverythingHttp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.raw.__exit__(exc_type, exc, tb)
