"""A default service name that identifies the wrapped server."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

_LAUNCHERS = {
    "python", "python3", "py", "pypy", "pypy3", "node", "nodejs", "npx", "npm", "pnpm", "pnpx",
    "yarn", "bun", "bunx", "deno", "uv", "uvx", "pipx", "poetry", "env", "sh", "bash", "exec",
    "run", "tsx", "ts-node", "java", "ruby", "php", "go", "dotnet", "docker", "podman",
}  # fmt: skip
_GENERIC = {"index", "main", "server", "__main__", "cli", "app", "run", "start", "dist", "build",
            "src", "lib", "bin", "out"}  # fmt: skip
_VERSIONED = re.compile(r"^(?:python|node|pypy)\d[\d.]*$")


def _is_launcher(token: str) -> bool:
    base = os.path.basename(token)
    return base in _LAUNCHERS or bool(_VERSIONED.match(base))


def _package(token: str) -> str | None:
    """The package name of an npm/PyPI spec (``@scope/name@1.2``, ``name@1.2``), else None."""
    if token.startswith("@") and token.count("/") == 1:
        return token.split("/", 1)[1].split("@", 1)[0]
    if "/" not in token and os.sep not in token and "@" in token:
        return token.split("@", 1)[0]
    return None


def _clean(token: str) -> str:
    package = _package(token)
    if package is not None:
        return package
    if "/" in token or os.sep in token:
        parts = [p for p in re.split(r"[/\\]", token) if p]
        stem = os.path.splitext(parts[-1])[0] if parts else token
        if stem in _GENERIC:
            for part in reversed(parts[:-1]):  # .../node_modules/@scope/name/dist/index.js
                if part not in _GENERIC and part != "node_modules" and not part.startswith("@"):
                    return part
        return stem
    if "." in token and not token.endswith((".py", ".js", ".ts", ".mjs", ".cjs")):
        parts = [p for p in token.split(".") if p and p not in _GENERIC]  # a module path
        return parts[-1] if parts else token
    return os.path.splitext(token)[0]


def default_service_name(argv: Sequence[str]) -> str:
    """``python server.py`` -> ``server``; ``npx -y @modelcontextprotocol/server-everything``
    -> ``server-everything``; ``python -m pkg.mcp_server`` -> ``mcp_server``."""
    tokens = list(argv)
    skip_value = False
    for token in tokens:
        if skip_value:
            skip_value = False
            continue
        if token in ("-m", "--from", "--with", "-p", "--package"):
            skip_value = token != "-m"
            continue
        if token.startswith("-") or _is_launcher(token):
            continue
        name = _clean(token)
        if name:
            return name
    return os.path.basename(tokens[0]) if tokens else "mcp-server"
