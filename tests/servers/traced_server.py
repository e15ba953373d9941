"""An MCP Python SDK 2.x server that traces itself and exports its spans over OTLP.

The SDK's own OpenTelemetry middleware makes a SERVER span per request whose parent is the
context in ``params._meta.traceparent``; with helmet-otel in front, that is our CLIENT span.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "traced-server"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)

server = MCPServer("traced-server")


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    with trace.get_tracer("traced-server").start_as_current_span("shout.work"):
        return text.upper()


if __name__ == "__main__":
    try:
        server.run("stdio")
    finally:
        provider.shutdown()
