"""Example MCP servers that ship with helmet-otel (for demos, docs and tests).

`python -m helmet_otel.examples.demo_server` runs a small dual-era stdio MCP server with
no dependencies beyond the standard library and orjson.
"""
