"""Reading what the detectors found, as a user would: `helmet-otel logs --security`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.helpers import RawProcess, clean_env


def security_records(store: Path) -> list[dict[str, Any]]:
    """Every ``helmet.security`` record in ``store``, oldest first."""
    argv = [sys.executable, "-m", "helmet_otel", "logs", "--security", "--store", str(store),
            "--format", "ndjson"]  # fmt: skip
    with RawProcess(argv, env=clean_env()) as viewer:
        assert viewer.wait(timeout=30) == 0
        viewer.stdout.join(5)
        return [orjson.loads(x) for x in viewer.stdout.data().splitlines()]
