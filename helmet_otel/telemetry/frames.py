"""Frames between the relay and the telemetry worker.

The relay appends plain tuples to a batch; a batch travels as one length-prefixed pickle on the
worker's stdin. Pickle is safe here: both ends are this package, parent and child process.

Tuples (first item is the tag):
  ("config", dict)                      once, first
  ("start", ts, dict)                   the session started (ids, command, pid, ...)
  ("msg", ts, direction, size, body, summary, trace_id, server_span_id, client_span_id)
  ("info", dict)                        era, protocol version, client/server info changed
  ("segment", ts, trace_id, root_span_id)      a long session rolls over into a new trace
  ("stderr", ts, line)
  ("failed", ts, reason)                the server could not be started
  ("end", ts, dict)                     the session ended (exit status, reason, counts)
  ("dropped", n)                        records the relay could not hand over
  ("close", ts, dict)                   the proxy is shutting down
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import IO, Any

HEADER = struct.Struct("!I")

Frame = tuple[Any, ...]

# ("msg", ...) summary tuple fields, in order:
# kind, id, method, target name, resource uri, error code, error message, is tool error,
# client traceparent (before we replaced it), answered by the proxy itself


def encode(batch: list[Frame]) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    # No memo: half the relay's pickling time. Frames are trees of plain values (never cyclic),
    # and any unpickler reads the result; shared objects merely arrive as equal copies.
    pickler.fast = True
    pickler.dump(batch)
    data = buffer.getvalue()
    return HEADER.pack(len(data)) + data


def read_batch(stream: IO[bytes]) -> list[Frame] | None:
    """The next batch, or None at end of stream (a torn last batch counts as the end)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    batch: list[Frame] = pickle.loads(data)
    return batch
