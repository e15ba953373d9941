"""Server stderr: lines that belong together (a traceback, an indented block, a banner written
in one burst) become one ``helmet.server_stderr`` record; log lines stay their own."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest
from opentelemetry._logs import SeverityNumber

from helmet_otel import semconv as sc
from helmet_otel.store.query import LogFilter, Reader
from helmet_otel.telemetry.stderr_groups import GAP_NS, StderrGroup
from tests.e2e.helpers import RawProcess, clean_env
from tests.store.conftest import run_cli
from tests.telemetry.helpers import INIT, line

MS = 1_000_000


def _feed(lines: list[tuple[int, str]]) -> list[tuple[int, str, SeverityNumber]]:
    group = StderrGroup()
    records = [r for ts, text in lines if (r := group.add(ts, text)) is not None]
    last = group.take()
    return records + ([last] if last is not None else [])


def test_lines_that_belong_together_are_one_record() -> None:
    traceback = [
        "Traceback (most recent call last):",
        '  File "server.py", line 3, in <module>',
        "    main()",
        "ValueError: bad input",
    ]
    chained = [
        "Traceback (most recent call last):",
        '  File "a.py", line 1, in f',
        "KeyError: 'x'",
        "During handling of the above exception, another exception occurred:",
        "Traceback (most recent call last):",
        '  File "a.py", line 2, in g',
        "RuntimeError: wrapped",
    ]
    node = ["Error: ENOENT", "    at open (fs.js:1:1)", "    at main (index.js:9:3)"]
    records = _feed(
        [(1000 * MS + i * MS, text) for i, text in enumerate(traceback)]  # line by line
        + [(1010 * MS, "after the traceback")]
        + [(2000 * MS + i * MS, text) for i, text in enumerate(chained)]
        + [(3000 * MS, "=== weather server ==="), (3000 * MS, "version 1.2")]
        + [(4000 * MS, "INFO: listening"), (4000 * MS, "WARNING: slow disk")]  # one burst
        + [(5000 * MS, text) for text in node]
        + [(6000 * MS, "one"), (6000 * MS + GAP_NS + 1, "   two")]  # too far apart
    )
    assert [(ts // MS, body, sev.name) for ts, body, sev in records] == [
        (1000, "\n".join(traceback), "ERROR"),
        (1010, "after the traceback", "WARN"),
        (2000, "\n".join(chained), "ERROR"),
        (3000, "=== weather server ===\nversion 1.2", "WARN"),
        (4000, "INFO: listening", "INFO"),
        (4000, "WARNING: slow disk", "WARN"),
        (5000, "\n".join(node), "ERROR"),
        (6000, "one", "WARN"),
        (6000 + GAP_NS // MS, "   two", "WARN"),
    ]


def test_a_record_is_due_after_the_gap_and_bounded() -> None:
    group = StderrGroup()
    assert group.add(0, "first") is None
    assert not group.due(GAP_NS) and group.due(GAP_NS + 1)
    for i in range(600):
        done = group.add(1, f"  line {i}")
        if done is not None:
            assert done[1].count("\n") == 499  # at most 500 lines in one record
            break
    else:
        pytest.fail("a record grew without bound")


# A server that writes a banner in one write, two log lines in one write, a traceback line by
# line, then (later) an indented line on its own, then serves like the demo server.
_SERVER = r"""
import os, runpy, sys, time, traceback
os.write(2, b"=== holder ===\n  version 1\n  ready soon\n")
time.sleep(0.2)
os.write(2, b"INFO: started\nERROR: disk full\n")
time.sleep(0.2)
try:
    raise ValueError("bad input")
except ValueError:
    for part in traceback.format_exc().splitlines(True):
        os.write(2, part.encode())
time.sleep(0.2)
os.write(2, b"    padded line\n")
time.sleep(0.2)
runpy.run_module("helmet_otel.examples.demo_server", run_name="__main__")
"""


@pytest.mark.e2e
def test_server_stderr_records_end_to_end(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    argv = [
        sys.executable,
        "-m",
        "helmet_otel",
        "--store",
        str(store),
        sys.executable,
        "-c",
        _SERVER,
    ]
    with RawProcess(argv, env=clean_env()) as proxy:
        proxy.write(line(INIT))
        proxy.stdout.wait(lambda data: b'"id":1' in data, timeout=30)
        proxy.close_stdin()
        assert proxy.wait(timeout=30) == 0
    with Reader.open(store) as reader:
        records = reader.logs(LogFilter(events=(sc.EVENT_SERVER_STDERR,)))
    bodies = [(r.body, r.severity_text) for r in records]
    assert bodies[:4] == [
        ("=== holder ===\n  version 1\n  ready soon", "WARN"),
        ("INFO: started", "INFO"),
        ("ERROR: disk full", "ERROR"),
        (
            'Traceback (most recent call last):\n  File "<string>", line 8, in <module>\n'
            "ValueError: bad input",
            "ERROR",
        ),
    ]
    assert bodies[4:] == [("    padded line", "WARN"), ("demo server ready", "WARN")]
    # the table and csv show a body without its leading whitespace, on one line
    out = run_cli("logs", "--store", str(store), "-e", "server_stderr", "--format", "csv").out
    previews = [row["body"] for row in csv.DictReader(io.StringIO(out))]
    assert previews[0] == "=== holder === version 1 ready soon"
    assert previews[-2:] == ["padded line", "demo server ready"]
