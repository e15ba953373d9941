"""The project's one percentile definition: nearest rank.

``percentile(sorted_values, q)`` is the value at rank ``ceil(q * n)`` (1-based) of an ascending
sequence of ``n`` values, for ``q`` in ``[0, 1]``; the rank is held to ``1..n``, so ``q = 0`` is
the minimum and ``q = 1`` the maximum. The result is always one of the values, never an
interpolation between two. For ``n = 10``: p50 is the 5th value, p95 and p99 the 10th. An empty
sequence gives ``0.0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..1) of the ascending ``sorted_values``; 0.0 if empty."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = min(n, max(1, math.ceil(q * n)))
    return sorted_values[rank - 1]
