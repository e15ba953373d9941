"""The Streamable HTTP headers an MCP message implies (2026-07-28: ``Mcp-Method``, ``Mcp-Name``,
``MCP-Protocol-Version``), for the side that checks them and the side that writes them."""

from __future__ import annotations

import base64

from helmet_otel.protocol.message import META_PROTOCOL_VERSION, REQUEST, Message

# methods whose Mcp-Name header names a field of params
NAME_HEADER_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def meta_of(msg: Message) -> dict[str, object] | None:
    params = msg.params
    meta = params.get("_meta") if params is not None else None
    return meta if isinstance(meta, dict) else None  # pyright: ignore[reportUnknownVariableType]


def is_modern(msg: Message) -> bool:
    """A 2026-07-28 request: its ``_meta`` carries the protocol version, or server/discover."""
    if msg.kind is not REQUEST:
        return False
    meta = meta_of(msg)
    return msg.method == "server/discover" or (meta is not None and META_PROTOCOL_VERSION in meta)


def decode_header(value: str) -> str:
    """A 2026-07-28 ``Mcp-*`` header value (``=?base64?...?=`` for non-ASCII and edges)."""
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except ValueError:
            return value
    return value


def encode_header(value: str) -> bytes:
    """A header value as 2026-07-28 writes it: plain when it is printable ASCII without
    leading or trailing space, else ``=?base64?...?=``."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value.encode()
    return b"=?base64?" + base64.b64encode(value.encode()) + b"?="


def modern_headers(msg: Message) -> list[tuple[bytes, bytes]]:
    """``Mcp-Method``, ``Mcp-Name`` and ``MCP-Protocol-Version`` for a 2026-07-28 request."""
    method = msg.method or ""
    headers = [(b"mcp-method", encode_header(method))]
    field_name = NAME_HEADER_METHODS.get(method)
    params = msg.params or {}
    if field_name is not None:
        name = params.get(field_name)
        if isinstance(name, str):
            headers.append((b"mcp-name", encode_header(name)))
    version = (meta_of(msg) or {}).get(META_PROTOCOL_VERSION)
    if isinstance(version, str):
        headers.append((b"mcp-protocol-version", encode_header(version)))
    return headers
