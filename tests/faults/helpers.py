"""Shared pieces of the fault tests: the proxy's telemetry worker, the store's rows."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import struct
import termios
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TypeVar

import psutil

from tests.e2e.helpers import MISBEHAVING, RawProcess, clean_env, proxy_argv

T = TypeVar("T")


def workers(proxy_pid: int) -> list[psutil.Process]:
    """The proxy's telemetry worker processes (a dead, unreaped one included)."""
    found: list[psutil.Process] = []
    for child in psutil.Process(proxy_pid).children():
        try:
            if "helmet_otel.telemetry.worker" in child.cmdline():
                found.append(child)
        except psutil.ZombieProcess:
            found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def unread_in_stdin(pid: int) -> int:
    """Bytes waiting in the pipe that is process `pid`'s stdin."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(fd)


def poll(probe: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str) -> T:
    """`probe()` until `ok` holds of its value; bounded (a real condition, re-checked)."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not ok(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.02)
        value = probe()
    return value


def rows(store: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """A query on the store (empty while the store does not exist yet)."""
    if not store.exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return list(conn.execute(sql, args))
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()


def count(store: Path, event: str) -> int:
    found = rows(store, "SELECT count(*) FROM logs WHERE event = ?", event)
    return int(found[0][0]) if found else 0  # pyright: ignore[reportArgumentType]


def proxy_close_dropped(store: Path) -> dict[str, int]:
    """``helmet.proxy_close``'s ``dropped`` counts (the one record of the proxy's end)."""
    bodies = rows(store, "SELECT body FROM logs WHERE event = 'helmet.proxy_close'")
    assert len(bodies) == 1, bodies
    return json.loads(str(bodies[0][0]))["dropped"]


def call_lines(first_id: int, n: int) -> bytes:
    return b"".join(
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"t"}}\n' % i
        for i in range(first_id, first_id + n)
    )


INITIALIZE = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
    b'"capabilities":{},"clientInfo":{"name":"fault-client","version":"1"}}}\n'
)


@contextlib.contextmanager
def recorded_proxy(
    store: Path, calls: int, env: dict[str, str] | None = None
) -> Generator[RawProcess]:
    """A proxy (with ``store``) in front of a plain server, after initialize and ``calls``
    calls whose answers came and which the worker has stored (it is idle then)."""
    argv = proxy_argv([*MISBEHAVING, "plain"], "--store", str(store), store=True)
    with RawProcess(argv, env=env or clean_env()) as proxy:
        proxy.write(INITIALIZE + call_lines(1, calls))
        proxy.stdout.wait(lambda b: b.count(b"\n") >= calls + 1, 20)
        poll(lambda: count(store, "helmet.response"), lambda n: n == calls + 1, 20, "stored")
        yield proxy
