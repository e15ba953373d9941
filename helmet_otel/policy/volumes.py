"""`data_volume`: a tool's response far larger than the tool's usual size.

`VolumeBaselines` (one per server, process-wide) keeps, per tool, an exponentially weighted
average of its response sizes and how many it has seen. A response is a finding when the tool
has at least ``min_samples`` sizes behind it and the response is at least ``min_bytes`` and
``factor`` times the average. Every response then joins the average, so a tool whose answers
really grew stops being flagged after a while.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ALPHA: Final = 0.1  # weight of the newest response in the average


@dataclass(frozen=True, slots=True)
class VolumeSettings:
    factor: float = 10.0  # times the tool's usual response size
    min_bytes: int = 65536  # responses smaller than this never fire
    min_samples: int = 5  # responses of the tool seen before its size is "usual"


class VolumeBaselines:
    def __init__(self) -> None:
        # tool -> [average size, responses] (a list changed in place: one per tool, however
        # many responses)
        self._sizes: dict[str, list[float]] = {}

    def response(self, tool: str, size: int, settings: VolumeSettings) -> str | None:
        """Count a response of ``size`` bytes; the finding's message when it is unusual."""
        known = self._sizes.get(tool)
        if known is None:
            known = self._sizes[tool] = [0.0, 0]
        usual, seen = known
        found = None
        if (
            seen >= settings.min_samples
            and size >= settings.min_bytes
            and (size >= settings.factor * usual)
        ):
            found = (
                f"response of {tool!r} is {size} bytes, {size / max(usual, 1.0):.0f} times its "
                f"usual {usual:.0f}"
            )
        known[0] = size if not seen else usual + ALPHA * (size - usual)
        known[1] = seen + 1
        return found
