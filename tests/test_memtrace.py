"""The HELMET_DEBUG_TRACEMALLOC diagnostic: off unless set; when set, the process writes its
tracemalloc growth since a baseline to PREFIX.ROLE.PID.txt (in a subprocess: tracing would slow
every later test of this one)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from helmet_otel import memtrace

SCRIPT = """
import os, sys, time
from helmet_otel import memtrace
assert memtrace.start_from_env("probe", {memtrace.ENV: sys.argv[1] + ",0.05"})
print(os.getpid(), flush=True)
kept = []
deadline = time.monotonic() + 20
while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    kept.append(bytearray(4096))  # grows after the baseline
    time.sleep(0.001)
"""


def test_off_unless_set() -> None:
    assert memtrace.start_from_env("proxy", {}) is False
    assert memtrace.start_from_env("proxy", {memtrace.ENV: ""}) is False


def test_writes_the_growth_since_its_baseline(tmp_path: Path) -> None:
    prefix, stop = tmp_path / "tm", tmp_path / "stop"
    with subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(prefix), str(stop)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        report = tmp_path / f"tm.probe.{proc.stdout.readline().strip()}.txt"
        deadline = time.monotonic() + 20
        text = ""
        while "top growth by traceback:" not in text and time.monotonic() < deadline:
            text = report.read_text() if report.exists() else ""
        stop.touch()
        assert proc.wait(20) == 0
    lines = text.splitlines()
    assert lines[0].startswith("since baseline: ") and lines[1].startswith("traced: ")
    assert lines[2].startswith("rss:    ") and "top growth by line:" in lines
    # the allocation that grew is named, at the script's line
    assert any(line.startswith("<string>:9: size=") for line in lines), text
