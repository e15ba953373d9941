"""What calls of one method and target share is worked out once per session (`CallKind`), and
again when the session's protocol version or session id changes: the recorder in this process,
fed the relay's frames, its records kept as the sinks would get them."""

from __future__ import annotations

import random

from helmet_otel import semconv as sc
from helmet_otel.store.records import Log, Span
from helmet_otel.telemetry import frames as fr
from helmet_otel.telemetry.operations import milliseconds
from helmet_otel.telemetry.recorder import Recorder
from tests.telemetry.in_process import TRACE
from tests.telemetry.in_process import recorder as _recorder


def _call(recorder: Recorder, request_id: int, ts: int) -> None:
    request = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo"}}' % (
        request_id
    )
    response = b'{"jsonrpc":"2.0","id":%d,"result":{"content":[]}}' % request_id
    span = 2 * request_id
    records = fr.whole(1, 0, 0, ts, request, span, span + 1)
    records += fr.whole(1, 1, 0, ts + 1000, response, 0, 0)
    for frame in fr.decode(records):
        recorder.handle(frame)


def test_a_change_of_protocol_version_or_session_id_reaches_the_next_calls() -> None:
    recorder, spans, logs = _recorder()
    recorder.handle(fr.Start(1, 1, "s1", "http", TRACE, 1, {}))
    _call(recorder, 1, 10_000)
    _call(recorder, 2, 20_000)
    recorder.handle(fr.Info(1, "legacy", "2025-06-18", None, None, "mcp-1"))
    _call(recorder, 3, 30_000)
    calls = [s for s in spans.items if isinstance(s, Span) and s.name == "tools/call echo"]
    assert [(s.attributes[sc.JSONRPC_REQUEST_ID], s.kind) for s in calls] == [
        ("1", 2), ("1", 1), ("2", 2), ("2", 1), ("3", 2), ("3", 1),
    ]  # fmt: skip
    seen = [
        (s.attributes.get(sc.MCP_PROTOCOL_VERSION), s.attributes.get(sc.MCP_SESSION_ID))
        for s in calls
    ]
    assert seen == [(None, None)] * 4 + [("2025-06-18", "mcp-1")] * 2
    # each call's spans have their own attributes: the shared template is never changed
    assert len({id(s.attributes) for s in calls}) == 6
    requests = [r for r in logs.items if isinstance(r, Log) and r.event == sc.EVENT_REQUEST]
    assert [r.attributes.get(sc.MCP_SESSION_ID) for r in requests] == [None, None, "mcp-1"]
    assert [r.span_id for r in requests] == [2, 4, 6]  # in their SERVER spans


def test_a_secret_shaped_session_id_is_scrubbed_in_every_record() -> None:
    """The protocol's session id is the server's choice: it goes through the scrubber too."""
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4"
    recorder, spans, logs = _recorder()
    recorder.handle(fr.Start(1, 1, "s1", "http", TRACE, 1, {}))
    recorder.handle(fr.Info(1, "legacy", "2025-06-18", None, None, f"id-{secret}"))
    _call(recorder, 1, 10_000)
    recorder.close(40_000, "done")
    seen = [s.attributes.get(sc.MCP_SESSION_ID) for s in spans.items if isinstance(s, Span)]
    seen += [r.attributes.get(sc.MCP_SESSION_ID) for r in logs.items if isinstance(r, Log)]
    ids = {value for value in seen if value is not None}
    assert ids and all(secret not in value for value in ids), ids
    assert all(value.startswith("id-") for value in ids), ids


def test_latency_milliseconds_are_what_round_gives() -> None:
    rng = random.Random(7)
    values = [*range(200_000), *(rng.randrange(10**13) for _ in range(200_000))]
    values += [rng.randrange(10**9) * 1000 + 500 for _ in range(1000)]  # ties
    assert [milliseconds(ns) for ns in values] == [round(ns / 1e9 * 1000, 3) for ns in values]
