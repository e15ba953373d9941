"""Long tables through a pager on a terminal, as git does.

Used only when stdout is a terminal, the output is a table and ``--no-pager`` is not given.
The pager is ``$PAGER`` (run by the shell, like git), else ``less``; ``LESS`` defaults to
``FRX`` (quit if one screen, keep colours, do not clear the screen). ``PAGER=`` or
``PAGER=cat`` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Generator
from typing import IO

__all__ = ["paged", "pager_command"]


def pager_command() -> str | None:
    command = os.environ.get("PAGER")
    if command is None:
        return "less" if shutil.which("less") else None
    command = command.strip()
    return None if command in ("", "cat") else command


@contextlib.contextmanager
def paged(enabled: bool) -> Generator[IO[str], None, None]:
    """stdout, or the stdin of a pager when ``enabled`` and one is configured."""
    command = pager_command() if enabled else None
    if command is None:
        yield sys.stdout
        return
    env = dict(os.environ)
    env.setdefault("LESS", "FRX")
    env.setdefault("LV", "-c")
    try:
        proc = subprocess.Popen(
            command, shell=True, stdin=subprocess.PIPE, text=True, encoding="utf-8", env=env
        )
    except OSError:
        yield sys.stdout
        return
    assert proc.stdin is not None
    try:
        yield proc.stdin
    except BrokenPipeError:
        pass  # the reader quit the pager early
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        while True:
            try:
                proc.wait()
                break
            except KeyboardInterrupt:
                continue  # Ctrl-C belongs to the pager, as in git
