"""The page, as one response: ``static/index.html`` with ``style.css`` and ``app.js`` put inline
and the viewer's metadata in a JSON data block, built once when the viewer starts.

One response is what makes the first paint fast in a fresh browser: no request for a stylesheet
or a script, no ``/api/meta`` round trip, and the page's first API call starts as soon as the
script runs. The files stay plain files in the wheel (no build step); the Content-Security-Policy
of the page allows exactly these inline blocks by their SHA-256 hashes, nothing else inline.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

import orjson

__all__ = ["STATIC_FILES", "Shell", "build_shell", "page_csp"]

STATIC_FILES: Final = ("index.html", "style.css", "boot.js", "app.js")
_STYLE: Final = '<link rel="stylesheet" href="style.css">'
_BOOT: Final = '<script src="boot.js"></script>'
_APP: Final = '<script src="app.js"></script>'
_META: Final = '<script type="application/json" id="meta"></script>'


@dataclass(frozen=True, slots=True)
class Shell:
    body: bytes  # the page, UTF-8
    csp: bytes  # its Content-Security-Policy


def _read(name: str) -> str:
    return (resources.files("helmet_otel.ui") / "static" / name).read_text("utf-8")


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def page_csp(scripts: tuple[str, ...], style: str) -> str:
    """The page's policy: its own inline scripts and style (by hash), requests to itself only."""
    allowed = " ".join(_hash(s) for s in scripts)
    return (
        f"default-src 'none'; script-src {allowed}; style-src {_hash(style)}; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def _data_block(meta: object) -> str:
    """JSON that cannot end its <script> element or open a comment: ``<``, ``>`` and ``&`` as
    JSON escapes."""
    text = orjson.dumps(meta).decode("utf-8")
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_shell(meta: object) -> Shell:
    html, style, boot, app = (_read(name) for name in STATIC_FILES)
    for part, closing in ((style, "</style"), (boot, "</script"), (app, "</script")):
        if closing in part.lower():
            raise ValueError(f"an inline block may not contain {closing}")
    blocks = {
        _BOOT: f"<script>{boot}</script>",
        _STYLE: f"<style>{style}</style>",
        _META: f'<script type="application/json" id="meta">{_data_block(meta)}</script>',
        _APP: f"<script>{app}</script>",
    }
    pieces = [html]
    for tag, block in blocks.items():  # each tag once, and never looked for inside a block
        before, found, after = pieces.pop().partition(tag)
        if not found or tag in after:
            raise ValueError(f"index.html must hold {tag} once")
        pieces += [before, block, after]
    return Shell("".join(pieces).encode("utf-8"), page_csp((boot, app), style).encode())
