"""What every call of one kind shares leads its records' attributes (`AttributeHead`), and the
OTLP encoder writes a head once: the recorder's records, through every kind of call, begin with
their head exactly, and encode to the very bytes they encode to without it (and parse to what
the SDK's encoder makes of them)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from helmet_otel import semconv as sc
from helmet_otel.core.verdicts import Decision, Finding
from helmet_otel.store.records import AttributeHead, Log, Span
from helmet_otel.telemetry import frames as fr
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
from helmet_otel.telemetry.recorder import Recorder
from helmet_otel.telemetry.sdk_adapter import sdk_log, sdk_span
from tests.telemetry.in_process import TRACE, recorder
from tests.telemetry.records import log

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UPSTREAM: dict[str, object] = {sc.CLIENT_ADDRESS: "10.0.0.1", "client.port": 5555, sc.SERVER_ADDRESS: "up",
            "server.port": 80, "upstream.network.transport": "tcp"}  # fmt: skip


def _send(rec: Recorder, s2c: int, raw: bytes, span: int = 0, flags: int = 0, weight: int = 1,
          ts: int = 0) -> None:  # fmt: skip
    for frame in fr.decode(fr.whole(1, s2c, flags, ts or span * 1000, raw, span, span + 1,
                                    weight)):  # fmt: skip
        rec.handle(frame)


def _call(rec: Recorder, span: int, request: bytes, response: bytes, *, weight: int = 1,
          request_flags: int = 0, response_flags: int = 0, s2c: int = 0) -> None:  # fmt: skip
    _send(rec, s2c, request, span, request_flags, weight)
    _send(rec, 1 - s2c, response, 0, response_flags, ts=span * 1000 + 500)


def _records(*, gathered: bool = False) -> tuple[list[Log], list[Span]]:
    """Every kind of call; ``gathered``: the records kept until the end, as the worker keeps
    a read's worth (`Recorder.gather`)."""
    rec, spans, logs = recorder()
    if gathered:
        rec.gather()
    rec.handle(fr.Start(1, 1, "s1", "http", TRACE, 1, UPSTREAM))
    rec.handle(fr.Info(1, "legacy", "2025-06-18", {"name": "c", "version": "1"},
                       {"name": "s", "version": "2"}, "mcp-1"))  # fmt: skip
    ok = b'{"jsonrpc":"2.0","id":%s,"result":{"content":[]}}'
    call = b'{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"echo"}}'
    _call(rec, 10, b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}', ok % b"1")
    _call(rec, 20, call % b"2", b'{"jsonrpc":"2.0","id":2,"result":{"isError":true}}', weight=3)
    _call(
        rec,
        30,
        call % b"3",
        b'{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no such tool"}}',
    )
    rec.handle(
        fr.Security(
            1,
            40,
            40,
            Decision("r1", "log", False, "tools/call", "echo"),
            (Finding("sensitive_argument", "high", "d1", "echo", "seen"),),
            None,
        )
    )
    _call(
        rec,
        40,
        call % b'"s4"',
        b'{"jsonrpc":"2.0","id":"s4","error":{"code":-32000,"message":"upstream failed",'
        b'"data":{"http.response.status_code":502}}}',
        response_flags=fr.FLAG_PROXY,
    )
    _call(
        rec,
        50,
        b'{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"d://x"}}',
        ok % b"5",
    )
    _call(
        rec,
        60,
        b'{"jsonrpc":"2.0","id":6,"method":"prompts/get","params":{"name":"p",'
        b'"_meta":{"traceparent":"%s"}}}' % TP.encode(),
        ok % b"6",
    )
    _call(
        rec,
        70,
        call % b"7",
        b'{"jsonrpc":"2.0","id":7,"error":{"code":-32001,"message":"denied"}}',
        request_flags=fr.FLAG_REPLIED,
        response_flags=fr.FLAG_PROXY,
    )
    _send(rec, 0, call % b"8", 80)  # answered after the session's version and id changed
    rec.handle(fr.Info(1, "legacy", "2025-11-25", None, None, "mcp-2"))
    _send(rec, 1, ok % b"8", ts=80_500)
    _call(rec, 90, call % b"9.0", ok % b"9")  # 9 answers 9.0
    _call(
        rec,
        100,
        b'{"jsonrpc":"2.0","id":11,"method":"sampling/createMessage","params":{}}',
        ok % b"11",
        s2c=1,
    )
    _send(rec, 1, ok % b"99", ts=110_000)  # answers nothing open
    _send(rec, 0, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', ts=111_000)
    _send(rec, 0, b"not json", ts=112_000)
    _send(rec, 0, call % b"12", 120)
    _send(rec, 0, b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":'
              b'{"requestId":12,"reason":"user"}}', ts=121_000)  # fmt: skip
    _send(rec, 0, call % b"13", 130)  # never answered
    rec.close(140_000, "done")
    if gathered:  # only what is never shed went at once
        assert logs.items == logs.urgent and spans.items == spans.urgent
        assert len(logs.urgent) == 4 and len(spans.urgent) == 2  # a finding, a decided call
        rec.release()
    return ([r for r in logs.items if isinstance(r, Log)],
            [s for s in spans.items if isinstance(s, Span)])  # fmt: skip


def _begins_with(attributes: dict[str, object], head: AttributeHead) -> bool:
    return list(attributes.items())[: head.size] == list(head.attributes.items())


def test_records_begin_with_their_head_and_encode_as_without_it() -> None:
    logs, spans = _records()
    headed_logs = [r for r in logs if r.head is not None]
    headed_spans = [s for s in spans if s.head is not None]
    # every call's request, response and error records (ten calls answered, three of them
    # with an error, two not); every call's spans (one answered by the proxy has no CLIENT
    # span) but call 8's
    assert len(headed_logs) == 2 * 10 + 2 + 3
    assert len(headed_spans) == 2 * 12 - 1 - 2
    assert all(_begins_with(r.attributes, r.head) for r in headed_logs if r.head is not None)
    assert all(_begins_with(s.attributes, s.head) for s in headed_spans if s.head is not None)
    plain_logs = [r._replace(head=None) for r in logs]
    plain_spans = [dataclasses.replace(s, head=None) for s in spans]
    encoder = OtlpEncoder()
    assert encoder.logs(logs) == OtlpEncoder().logs(plain_logs) == encoder.logs(logs)
    assert encoder.spans(spans) == OtlpEncoder().spans(plain_spans) == encoder.spans(spans)
    assert ExportLogsServiceRequest.FromString(encoder.logs(logs)) == encode_logs(
        [sdk_log(r) for r in logs]
    )
    assert ExportTraceServiceRequest.FromString(encoder.spans(spans)) == encode_spans(
        [sdk_span(s) for s in spans]
    )


def test_a_call_answered_after_the_session_changed_says_what_the_session_says_now() -> None:
    logs, spans = _records()
    eight = [s for s in spans if s.attributes.get(sc.JSONRPC_REQUEST_ID) == "8"]
    assert [(s.kind, s.head) for s in eight] == [(2, None), (1, None)]  # the head no longer leads
    assert {s.attributes[sc.MCP_PROTOCOL_VERSION] for s in eight} == {"2025-11-25"}
    answer = next(r for r in logs if r.event == sc.EVENT_RESPONSE
                  and r.attributes[sc.JSONRPC_REQUEST_ID] == "8")  # fmt: skip
    assert answer.attributes[sc.MCP_SESSION_ID] == "mcp-2"
    assert answer.head is not None and answer.head.attributes[sc.MCP_SESSION_ID] == "mcp-2"
    nine = [r.attributes[sc.JSONRPC_REQUEST_ID] for r in logs
            if r.attributes.get(sc.JSONRPC_REQUEST_ID) in ("9", "9.0")]  # fmt: skip
    assert nine == ["9.0", "9"]  # each as its message wrote it


def test_records_of_any_length_encode_as_the_sdk_does() -> None:
    """A record is written in place after room for a two-byte length: shorter and longer
    ones are made to fit."""
    records = [log(None, attributes={}, event=None, severity_text=None),  # under 128 bytes
               log("x" * 20_000), log("y" * 200), log({"k": "z" * 3_000_000})]  # fmt: skip
    ours = ExportLogsServiceRequest.FromString(OtlpEncoder().logs(records))
    assert ours == encode_logs([sdk_log(r) for r in records])


def test_the_records_of_a_call_say_what_they_said_before_heads() -> None:
    """Heads change where the attributes come from, not what they are."""
    logs, spans = _records()
    two = [r.attributes for r in logs if r.attributes.get(sc.JSONRPC_REQUEST_ID) == "2"]
    session = {sc.HELMET_SESSION_ID: "s1", sc.MCP_SESSION_ID: "mcp-1"}
    named = {sc.MCP_METHOD_NAME: "tools/call", sc.GEN_AI_TOOL_NAME: "echo"}
    assert two == [
        {sc.HELMET_DIRECTION: sc.DIRECTION_C2S, sc.HELMET_MESSAGE_KIND: "request", **named,
         **session, sc.HELMET_MESSAGE_SIZE: 71, sc.JSONRPC_REQUEST_ID: "2",
         sc.HELMET_SAMPLE_WEIGHT: 3},
        {sc.HELMET_DIRECTION: sc.DIRECTION_S2C, sc.HELMET_MESSAGE_KIND: "response", **named,
         **session, sc.HELMET_MESSAGE_SIZE: 50, sc.JSONRPC_REQUEST_ID: "2",
         sc.HELMET_SAMPLE_WEIGHT: 3, sc.HELMET_LATENCY_MS: 0.001,
         sc.ERROR_TYPE: sc.ERROR_TYPE_TOOL_ERROR},
    ]  # fmt: skip
    server = next(s for s in spans if s.attributes.get(sc.JSONRPC_REQUEST_ID) == "s4"
                  and s.kind == 1)  # fmt: skip
    assert server.attributes == {
        **named, sc.GEN_AI_OPERATION_NAME: sc.OPERATION_EXECUTE_TOOL,
        sc.MCP_PROTOCOL_VERSION: "2025-06-18", sc.NETWORK_TRANSPORT: "tcp", **session,
        sc.JSONRPC_REQUEST_ID: "s4", sc.HELMET_POLICY_ID: "r1", sc.HELMET_POLICY_ACTION: "log",
        sc.HELMET_POLICY_MODE: "enforce", sc.CLIENT_ADDRESS: "10.0.0.1", "client.port": 5555,
        sc.RPC_RESPONSE_STATUS_CODE: "-32000", sc.ERROR_TYPE: "502",
    }  # fmt: skip
    methods = {r.attributes.get(sc.MCP_METHOD_NAME) for r in logs if r.head is not None}
    assert methods == {"initialize", "tools/call", "resources/read", "prompts/get",
                       "sampling/createMessage"}  # fmt: skip


def test_records_gathered_over_a_read_reach_the_queues_as_one_by_one() -> None:
    """The worker keeps the ordinary records and spans of one read of its pipe and hands them
    to each queue at once; the urgent ones go at once. Nothing else changes: the same records,
    in the same order within each lane."""

    def lanes(
        items: Sequence[Log | Span],
    ) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        ordinary: list[tuple[object, ...]] = []
        urgent: list[tuple[object, ...]] = []
        for item in items:
            if isinstance(item, Log):
                seen = (item.event, item.ts, item.span_id, item.attributes, item.body_json)
            else:
                seen = (item.name, item.span_id, item.kind, item.start, item.end,
                        item.attributes, item.status, item.events, item.links)  # fmt: skip
            decided = sc.HELMET_POLICY_ID in item.attributes
            finding = isinstance(item, Log) and item.event == sc.EVENT_SECURITY
            (urgent if decided or finding else ordinary).append(seen)
        return ordinary, urgent

    one_by_one, gathered = _records(), _records(gathered=True)
    for before, after in zip(one_by_one, gathered, strict=True):
        ordinary, urgent = lanes(before)
        assert len(ordinary) > 20 and urgent
        assert lanes(after) == (ordinary, urgent)


def test_the_records_of_one_read_share_its_observed_time() -> None:
    """Between `Recorder.gather` and `release` (one read of the worker's pipe) every record's
    observed time is the read's: one clock reading, taken at `gather`. Outside a read each
    record reads the clock itself."""
    rec, _spans, logs = recorder()
    rec.handle(fr.Start(1, 1, "s1", "stdio", TRACE, 1, {}))
    call = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo"}}'
    ok = b'{"jsonrpc":"2.0","id":%d,"result":{"content":[]}}'
    before = time.time_ns()
    rec.gather()
    after = time.time_ns()
    for n in (1, 2):
        _call(rec, n * 10, call % n, ok % n)
    rec.release()
    read = [r for r in logs.items if r.event in (sc.EVENT_REQUEST, sc.EVENT_RESPONSE)]
    assert len(read) == 4
    assert len({r.observed for r in read}) == 1
    assert before <= read[0].observed <= after
    _call(rec, 30, call % 3, ok % 3)  # (no read gathered: each record its own clock reading)
    alone = [r for r in logs.items if r.event in (sc.EVENT_REQUEST, sc.EVENT_RESPONSE)][4:]
    assert len(alone) == 2
    assert all(r.observed > after for r in alone)
