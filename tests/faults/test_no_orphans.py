"""A server that ignores stdin close and SIGTERM does not outlive a proxy killed with
SIGKILL: the parent-death signal takes it down with the proxy."""

from __future__ import annotations

import signal

import psutil

from tests.e2e.helpers import MISBEHAVING, RawProcess, clean_env, proxy_argv
from tests.faults.helpers import poll


def test_a_stubborn_server_dies_with_a_killed_proxy() -> None:
    with RawProcess(proxy_argv([*MISBEHAVING, "stubborn"]), env=clean_env()) as proxy:
        proxy.stderr.wait(lambda b: b.startswith(b"pid "), 10)
        server = psutil.Process(int(proxy.stderr.data().split()[1]))
        assert server.ppid() == proxy.proc.pid
        proxy.proc.send_signal(signal.SIGKILL)
        assert proxy.proc.wait(10) == -signal.SIGKILL
        # gone, not re-parented to PID 1 (a zombie until its new parent reaps it is gone too)
        poll(lambda: _alive(server), lambda alive: not alive, 5, "the server dies with it")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
