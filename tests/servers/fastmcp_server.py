"""A FastMCP server run over stdio, used by the SDK parity tests.

Tools: `add`, `echo`, `progress` (reports progress through ctx.report_progress), `boom` (raises,
so the client gets `isError: true`), `slow` (sleeps until cancelled or done),
`confirm` (elicitation). Prompt: `review`.
Resources: `fast://greeting` and the template `fast://items/{item_id}`.
"""

from __future__ import annotations

import anyio
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError

mcp = FastMCP("helmet-fastmcp-test", instructions="Test server for helmet-otel's parity tests.")


@mcp.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool
async def progress(steps: int, ctx: Context) -> str:
    """Report `steps` progress notifications, then return."""
    for step in range(1, steps + 1):
        await ctx.report_progress(progress=step, total=steps, message=f"step {step}")
    return f"done after {steps} steps"


@mcp.tool
def boom(reason: str) -> str:
    """Always fails."""
    raise ToolError(f"boom: {reason}")


@mcp.tool
async def slow(seconds: float, ctx: Context) -> str:
    """Report progress once, then sleep for `seconds`."""
    await ctx.report_progress(progress=0, total=1, message="started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        # Make the cancellation visible to the client (a log message, shielded from the cancel).
        with anyio.CancelScope(shield=True):
            await ctx.info("slow was cancelled")
        raise
    return f"slept {seconds}"


@mcp.tool
async def confirm(question: str, ctx: Context) -> str:
    """Ask the user a yes/no question through elicitation (handshake era only)."""
    answer = await ctx.elicit(question, response_type=bool)
    if answer.action == "accept":
        return f"answer: {answer.data}"
    return answer.action


@mcp.prompt
def review(code: str, language: str = "python") -> str:
    """Ask for a code review."""
    return f"Please review this {language} code:\n\n{code}"


@mcp.resource("fast://greeting", mime_type="text/plain")
def greeting() -> str:
    """A static greeting."""
    return "hello from fastmcp"


@mcp.resource("fast://items/{item_id}", mime_type="application/json")
def item(item_id: str) -> dict[str, str]:
    """One item by id."""
    return {"id": item_id, "name": f"item {item_id}"}


if __name__ == "__main__":
    mcp.run(transport="stdio", show_banner=False)
