"""The page's static files (``static/``, shipped in the wheel), read once into memory."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Final

__all__ = ["Asset", "load_assets"]

_TYPES: Final = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    content_type: bytes
    body: bytes


def load_assets() -> dict[str, Asset]:
    """``/static/<name>`` -> the file; ``/`` -> ``index.html``."""
    folder = resources.files("helmet_otel.ui") / "static"
    found: dict[str, Asset] = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in _TYPES:
            found[f"/static/{item.name}"] = Asset(_TYPES[suffix], item.read_bytes())
    found["/"] = found["/static/index.html"]
    return found
