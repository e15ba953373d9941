"""Where the store lives and how big and old it may grow (environment and defaults)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from helmet_otel.store.timefmt import parse_duration, parse_size

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_BYTES",
    "ENV_STORE",
    "ENV_STORE_MAX_AGE",
    "ENV_STORE_MAX_BYTES",
    "default_store_path",
    "retention_from_env",
]

ENV_STORE = "HELMET_STORE"
ENV_STORE_MAX_BYTES = "HELMET_STORE_MAX_BYTES"
ENV_STORE_MAX_AGE = "HELMET_STORE_MAX_AGE"

DEFAULT_MAX_BYTES = 500 * 1000 * 1000  # 500 MB: about 850,000 typical records
DEFAULT_MAX_AGE_S = 14 * 86400.0  # 14 days


def default_store_path() -> Path:
    """``$HELMET_STORE`` if set, else ``<user data dir>/helmet-otel/store.db``.

    On Linux the data dir is ``$XDG_DATA_HOME`` or ``~/.local/share``; on macOS
    ``~/Library/Application Support``; on Windows ``%LOCALAPPDATA%``.
    """
    env = os.environ.get(ENV_STORE, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("helmet-otel", appauthor=False)) / "store.db"


def retention_from_env(
    max_bytes: int | None = None, max_age_s: float | None = None
) -> tuple[int, float, list[str]]:
    """Resolve the caps: argument > environment > default. 0 disables a cap.

    Returns ``(max_bytes, max_age_s, problems)``; a malformed environment value falls back to
    the default and is described in ``problems`` (the caller reports it, we never raise).
    """
    problems: list[str] = []
    if max_bytes is None:
        raw = os.environ.get(ENV_STORE_MAX_BYTES, "").strip()
        max_bytes = DEFAULT_MAX_BYTES
        if raw:
            try:
                max_bytes = parse_size(raw)
            except ValueError as exc:
                problems.append(f"{ENV_STORE_MAX_BYTES}: {exc}; using {DEFAULT_MAX_BYTES} bytes")
    if max_age_s is None:
        raw = os.environ.get(ENV_STORE_MAX_AGE, "").strip()
        max_age_s = DEFAULT_MAX_AGE_S
        if raw:
            try:
                max_age_s = parse_duration(raw)
            except ValueError as exc:
                problems.append(f"{ENV_STORE_MAX_AGE}: {exc}; using 14d")
    return max(0, max_bytes), max(0.0, max_age_s), problems
