"""The import graph follows the layering in docs/design.md: nothing imports upwards.

Every import in the package counts, lazy ones inside functions included (they still tie the
modules together). A new top-level module or package must be placed here on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "helmet_otel"

# what each part of the package may import from the package (besides itself)
LEAVES = {"semconv", "percentile", "redaction", "config", "memtrace", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "semconv": set(),
    "percentile": set(),
    "redaction": set(),
    "memtrace": set(),
    "config": {"redaction"},
    "__init__": set(),
    "core": {"protocol"},
    "transports": {"core", "protocol"},
    "policy": {"core", "protocol", "redaction"},
    "store": {"semconv", "percentile", "redaction", "__init__"},
    "telemetry": {"core", "protocol", "store"} | LEAVES,
    "examples": set(),
    # the web viewer: the store's query layer over the HTTP server `serve` uses
    "ui": {"store", "semconv", "transports", "percentile", "config"},
    "cli": {"core", "protocol", "transports", "telemetry", "store", "ui", "policy"} | LEAVES,
    "__main__": {"cli"},
}
# modules of a part that another part may import when not all of it is allowed: the viewer
# takes only the HTTP server and its Host/Origin guard, which know nothing of MCP
ONLY: dict[tuple[str, str], set[str]] = {
    ("ui", "transports"): {
        "helmet_otel.transports.http_server",
        "helmet_otel.transports.http_guard",
    },
}


def part_of(module: str) -> str:
    """``helmet_otel.core.relay`` -> ``core``; ``helmet_otel`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> set[str]:
    module = "helmet_otel." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            # `from helmet_otel import semconv` imports the module semconv
            if name == "helmet_otel":
                found |= {
                    f"helmet_otel.{alias.name}"
                    for alias in node.names
                    if (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file()
                }
    return {name for name in found if name.startswith("helmet_otel")}


def test_no_module_imports_upwards() -> None:
    wrong: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = part_of("helmet_otel." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        assert here in ALLOWED, f"{path}: place the new part {here!r} in ALLOWED"
        for name in imports(path):
            there = part_of(name)
            outside = there != here and there not in ALLOWED[here] and name != "helmet_otel"
            if outside or name not in ONLY.get((here, there), {name}):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert wrong == []


def test_the_check_can_fail() -> None:
    assert "core" not in ALLOWED["protocol"] and "telemetry" not in ALLOWED["store"]
    assert part_of("helmet_otel.telemetry.feed") == "telemetry"
    assert imports(PACKAGE / "telemetry" / "session_feed.py") >= {"helmet_otel.core.envelope"}
    assert "helmet_otel.transports.http_front" not in ONLY[("ui", "transports")]
