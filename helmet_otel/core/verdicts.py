"""What a policy or a security detector concluded about a message, as plain data.

The policy interceptor puts these on the message's envelope (``Envelope.annotations``, under
the keys below); the telemetry feed hands them to the worker in a frame of their own that is
never shed, ahead of the message's record. Core defines them so that neither side imports
the other.
"""

from __future__ import annotations

from typing import Final, NamedTuple

DECISION: Final = "policy"  # annotation key: a `Decision`
FINDINGS: Final = "findings"  # annotation key: a list of `Finding`
POLICY_LOADED: Final = "policy_loaded"  # annotation key: the loaded policy's summary (a dict)

ALLOW: Final = "allow"
DENY: Final = "deny"
LOG: Final = "log"


class Decision(NamedTuple):
    """A rule (or a detector acting as one) decided on a request."""

    rule_id: str
    action: str  # allow | deny | log
    shadow: bool  # decided in shadow mode: recorded, never enforced
    method: str
    tool: str | None

    @property
    def blocks(self) -> bool:
        """The request is answered by the proxy and never reaches the server."""
        return self.action == DENY and not self.shadow


class Finding(NamedTuple):
    """A security finding (a ``helmet.security`` record)."""

    type: str  # policy_block | tool_drift | new_tool | sensitive_argument | ...
    severity: str  # low | medium | high
    rule_id: str  # the rule or detector that found it
    tool: str | None
    message: str  # short, human-readable; never carries argument values
    # more attributes of the record (an auth failure: client.address, client.port, the reason)
    attributes: dict[str, str | int] | None = None
