"""Our OTLP encoder against the SDK's: the same records (ours, and made the SDK's by
`sdk_adapter`) must parse to the same messages."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from helmet_otel.redaction import Redactor
from helmet_otel.store.records import AttributeHead, Event, Log, Origin, Span
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
from helmet_otel.telemetry.sdk_adapter import plain_log, plain_span, sdk_log, sdk_span
from tests.telemetry.records import (
    HUGE_AS_SENT,
    HUGE_LOGS,
    HUGE_SPANS,
    LOGS,
    ODD_VALUES,
    OK,
    SPANS,
    TRACE,
    log,
    span,
)


def test_spans_parse_to_the_sdk_encoders_messages() -> None:
    ours = ExportTraceServiceRequest.FromString(OtlpEncoder().spans(SPANS))
    assert ours == encode_spans([sdk_span(s) for s in SPANS])


def test_log_records_parse_to_the_sdk_encoders_messages() -> None:
    ours = ExportLogsServiceRequest.FromString(OtlpEncoder().logs(LOGS))
    assert ours == encode_logs([sdk_log(r) for r in LOGS])


def test_the_attribute_cache_never_changes_the_output() -> None:
    encoder = OtlpEncoder()
    first = encoder.spans(SPANS)
    assert encoder.spans(SPANS) == first  # served from the cache the second time
    assert encoder.logs(LOGS) == OtlpEncoder().logs(LOGS)


def test_attributes_whose_values_keep_changing_encode_as_the_sdk_does() -> None:
    """Past 64 distinct values a key is no longer cached: its scalars are written inline."""
    records = [log(None, attributes={"n": i - 50, "id": f"req-{i}-é", "ms": i / 3, "t": i % 2 == 0,
                                     "big": 2**62 + i, "l": [i]}) for i in range(100)]  # fmt: skip
    encoder = OtlpEncoder()
    expected = encode_logs([sdk_log(r) for r in records])
    assert ExportLogsServiceRequest.FromString(encoder.logs(records)) == expected
    assert {"n", "id", "big"} <= encoder._uncached  # pyright: ignore[reportPrivateUsage]
    assert ExportLogsServiceRequest.FromString(encoder.logs(records)) == expected


def test_bodies_with_their_json_encode_as_the_sdk_does_cached_or_not() -> None:
    """A record the recorder made carries its body's JSON: a small one is encoded once."""
    redactor = Redactor()
    bodies = [{}, {"name": "echo", "arguments": {"text": "hi", "n": [1, 2.5, None]}},
              "a line", {"content": [{"type": "text", "text": "x" * 300}]}, [True, False]]  # fmt: skip
    records = [log(*redactor.body_and_json(b)[:1], body_json=redactor.body_and_json(b)[1])
               for b in bodies * 2]  # fmt: skip
    assert all(r.body_json is not None for r in records)
    encoder = OtlpEncoder()
    expected = encode_logs([sdk_log(r) for r in records])
    assert ExportLogsServiceRequest.FromString(encoder.logs(records)) == expected
    assert ExportLogsServiceRequest.FromString(encoder.logs(records)) == expected


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_beyond_int64_become_strings_instead_of_failing_the_batch(value: int) -> None:
    decoded = ExportLogsServiceRequest.FromString(OtlpEncoder().logs([log({"n": value})]))
    body = decoded.resource_logs[0].scope_logs[0].log_records[0].body
    assert body.kvlist_value.values[0].value.string_value == str(value)


def test_the_sdk_encoder_drops_or_fails_on_integers_beyond_int64() -> None:
    """Why the exporters' fallback makes records plain before the SDK encodes them."""
    span = encode_spans([sdk_span(HUGE_SPANS[0])]).resource_spans[0].scope_spans[0].spans[0]
    assert [kv.key for kv in span.attributes] == ["mcp.method.name", "fits"]
    with pytest.raises(ValueError, match="Value out of range"):
        encode_logs([sdk_log(r) for r in HUGE_LOGS])


def test_plain_records_encode_with_the_sdk_as_ours_do() -> None:
    """The fallback (the SDK's encoder on plain records) sends what the fast path sends."""
    plain_spans = [plain_span(s) for s in HUGE_SPANS]
    plain_logs = [plain_log(r) for r in HUGE_LOGS]
    assert encode_spans(plain_spans) == ExportTraceServiceRequest.FromString(
        OtlpEncoder().spans(HUGE_SPANS)
    )
    assert encode_logs(plain_logs) == ExportLogsServiceRequest.FromString(
        OtlpEncoder().logs(HUGE_LOGS)
    )
    assert dict(plain_spans[0].attributes or {}) == {
        "mcp.method.name": "tools/call",
        **HUGE_AS_SENT,
    }
    assert plain_logs[0].log_record.body == {"name": "echo", "arguments": HUGE_AS_SENT}
    # records with nothing to change keep their values as they are
    assert dict(plain_spans[2].attributes or {}) == HUGE_SPANS[2].attributes
    assert plain_logs[2].log_record.attributes is HUGE_LOGS[2].attributes


# a record's own attributes after its head: every kind of value, short and long keys and texts
TAIL: dict[str, Any] = {
    **ODD_VALUES, "jsonrpc.request.id": "7", "helmet.latency_ms": 0.25, "size": 300,
    "u64": 2**64 - 1, "below": -(2**63) - 1, "a%key": "%s %c", "k" * 40: "long key", "x" * 94: 1,
    "y" * 95: "ü" * 40,
}  # fmt: skip


def test_records_with_heads_encode_as_the_sdk_does_cached_or_not() -> None:
    """The pieces a head's records share (`_log_shared`, `_span_shared`) and the templates of
    their own attributes (`_inline`) write what the SDK's encoder writes (integers beyond int64
    as strings: `plain_log`), and the same bytes as the same records without heads."""
    head = AttributeHead({"helmet.direction": "client_to_server", "mcp.method.name": "tools/call"})
    span_head = AttributeHead({"mcp.method.name": "tools/call", "gen_ai.tool.name": "echo"})
    logs = [
        log(body, attributes={**head.attributes, **dict(list(TAIL.items())[i:])}, head=head,
            body_json=text, **fields)
        for i, (body, text, fields) in enumerate([
            ({"n": 1}, '{"n":1}', {}), ({"n": 1}, '{"n":1}', {"severity": 17}),
            ({"n": 1}, '{"n":1}', {"event": "helmet.response"}), ("x" * 300, "x" * 302, {}),
            ({"n": 1}, '{"n":1}', {"flags": 0}), ({"n": 1}, '{"n":1}', {"ts": 0}),
            ({"n": 2}, '{"n":2}', {"trace_id": 0, "span_id": 0, "flags": 0}), ({"n": 1}, '{"n":1}', {}),
        ])
    ]  # fmt: skip
    spans = [
        span(i + 1, attributes={**span_head.attributes, **dict(list(TAIL.items())[i:])},
             head=span_head, **fields)
        for i, fields in enumerate([
            {}, {"kind": 3}, {"status": 1}, {"parent_remote": True},
            {"status": 2, "description": "failed"}, {"parent": 0}, {"trace_state": "k=v"},
            {"events": [Event("cancelled", 5, {"reason": "user"})]}, {},
        ])
    ]  # fmt: skip
    encoder = OtlpEncoder()
    for _ in range(2):  # (the second time from the caches)
        assert ExportLogsServiceRequest.FromString(encoder.logs(logs)) == encode_logs(
            [plain_log(r) for r in logs]
        )
        assert ExportTraceServiceRequest.FromString(encoder.spans(spans)) == encode_spans(
            [plain_span(s) for s in spans]
        )
    plain_logs = [r._replace(head=None) for r in logs]
    plain_spans = [dataclasses.replace(s, head=None) for s in spans]
    assert encoder.logs(logs) == OtlpEncoder().logs(plain_logs)
    assert encoder.spans(spans) == OtlpEncoder().spans(plain_spans)


def test_a_calls_span_pair_shares_its_encoding_only_where_it_is_written_the_same() -> None:
    """A CLIENT span and the SERVER span after it with equal times, outcome and attributes
    share what follows their ids and kind (`OtlpEncoder._span`); pairs that differ, or whose
    equal attributes are written differently (1, 1.0 and True are equal; equal maps may order
    two own attributes differently), are written apart. All parse to the SDK's messages."""
    head = AttributeHead({"mcp.method.name": "tools/call", "gen_ai.tool.name": "echo"})
    client, server = SpanKind.CLIENT.value, SpanKind.SERVER.value

    def pair(first: dict[str, Any], second: dict[str, Any], **fields: Any) -> list[Span]:
        return [
            span(len(first) * 10 + 1, kind=client, head=head,
                 attributes={**head.attributes, **first}),
            span(len(first) * 10 + 2, kind=server,
                 attributes={**head.attributes, **second}, **{"head": head, **fields}),
        ]  # fmt: skip

    spans = [
        *pair({"jsonrpc.request.id": "7"}, {"jsonrpc.request.id": "7"}),  # shared
        *pair({}, {}),  # shared
        *pair({"jsonrpc.request.id": "7"}, {"jsonrpc.request.id": "8"}),
        *pair({"n": 1}, {"n": True}),
        *pair({"n": 1.0}, {"n": 1}),
        *pair({"a": "x", "b": "y"}, {"b": "y", "a": "x"}),
        *pair({"jsonrpc.request.id": "7"}, {"jsonrpc.request.id": "7"}, end=5),
        *pair({"jsonrpc.request.id": "7"}, {"jsonrpc.request.id": "7"}, status=OK),
        *pair({"jsonrpc.request.id": "7"}, {"jsonrpc.request.id": "7"}, name="other"),
        *pair({"jsonrpc.request.id": "7"}, {"jsonrpc.request.id": "7"}, parent_remote=True),
        *pair({"jsonrpc.request.id": "7"}, {"jsonrpc.request.id": "7"}, head=None),
    ]
    spans.append(span(3, head=head, attributes={**head.attributes, "jsonrpc.request.id": "7"}))
    encoder = OtlpEncoder()
    for _ in range(2):
        assert ExportTraceServiceRequest.FromString(encoder.spans(spans)) == encode_spans(
            [plain_span(s) for s in spans]
        )
    assert encoder.spans(spans) == OtlpEncoder().spans(
        [dataclasses.replace(s, head=None) for s in spans]
    )
    # a span whose attributes are not read item by item shared what its pair wrote
    for first, second, shares in ((2 * i, 2 * i + 1, i < 2) for i in range(11)):
        alone = [spans[first], _unread(spans[second])]
        if shares:
            assert encoder.spans(alone) == encoder.spans(spans[first : second + 1])
        else:
            with pytest.raises(AssertionError, match="written"):
                encoder.spans(alone)
    with pytest.raises(AssertionError, match="written"):  # (a pair is two: a third is written)
        encoder.spans([*spans[:2], _unread(spans[1])])


class _Unread(dict[str, Any]):
    """Attributes that may be compared but not written (their items are not read)."""

    def items(self) -> Any:
        raise AssertionError("written")


def _unread(span: Span) -> Span:
    return dataclasses.replace(span, attributes=_Unread(span.attributes))


def test_schema_urls_and_origins_frame_the_records_as_the_sdk_does() -> None:
    """What precedes and follows an origin's records (resource, scope, their schema URLs and
    lengths) is written into the room left before them or after them: one origin, a large
    batch (three-byte lengths), and two origins (grouped) parse to the SDK's messages."""
    urls = Origin(
        Resource({"service.name": "demo"}, "https://opentelemetry.io/schemas/1.0.0"),
        InstrumentationScope("helmet-otel", "1.2.3", "https://example.com/scope"),
        "demo",
    )
    records = [log({"n": i}, origin=urls) for i in range(3)]
    batches = [records, records * 40, [*records, log({"n": 9}), *records]]
    spans = [span(1, origin=urls), span(2, origin=urls), span(3)]
    encoder = OtlpEncoder()
    for batch in batches:
        encoded = encoder.logs(batch)
        assert ExportLogsServiceRequest.FromString(encoded) == encode_logs(
            [sdk_log(r) for r in batch]
        )
    assert ExportTraceServiceRequest.FromString(encoder.spans(spans)) == encode_spans(
        [sdk_span(s) for s in spans]
    )
    assert ExportTraceServiceRequest.FromString(encoder.spans(SPANS)) == encode_spans(
        [sdk_span(s) for s in SPANS]
    )


def _random_value(rng: random.Random) -> Any:
    """Values at the edges of the encoder's shortcuts: varint lengths, short and long texts
    (one-, two- and three-byte characters), doubles, booleans, a list."""
    pick = rng.random()
    if pick < 0.3:
        edges = [0, 1, -1, 63, 64, 127, 128, 255, 256, 16383, 16384, 2**31, -(2**31), 2**63 - 1]
        beyond = [2**63, 2**64 + 5, -(2**63) - 1]  # (written as strings)
        return rng.choice([*edges, *beyond, -(2**63), rng.randrange(-(10**6), 10**6)])
    if pick < 0.6:
        return rng.choice(["", "a", "é", "✓"]) * rng.randrange(150)
    if pick < 0.75:
        return rng.choice([0.0, 1.5, -2.25, 1e300, rng.random()])
    if pick < 0.85:
        return rng.random() < 0.5
    return [rng.randrange(5), "x"]


def test_random_records_with_and_without_heads_encode_as_the_sdk_does() -> None:
    """Many random batches (seeded): records with and without attribute heads, own attributes
    of every kind and size, and CLIENT/SERVER pairs that are written the same or differ in one
    own attribute; log records with and without times, flags and ids, and records of a few
    traces in one batch; each batch twice (the second time from the caches)."""
    rng = random.Random(15)
    traces = [TRACE, TRACE ^ 1, 1, 2**128 - 1]
    keys = ["jsonrpc.request.id", "helmet.latency_ms", "size", "helmet.sample.weight", "k",
            "a" * 40, "b" * 100, "error.type"]  # fmt: skip
    heads = [
        AttributeHead({"helmet.direction": "client_to_server", "mcp.method.name": "tools/call"}),
        AttributeHead({"mcp.method.name": "tools/call", "gen_ai.tool.name": "echo"}),
        None,
    ]
    encoder = OtlpEncoder()
    for _ in range(200):
        logs: list[Log] = []
        spans: list[Span] = []
        for n in range(rng.randrange(1, 30)):
            head = rng.choice(heads)
            shared = head.attributes if head else {}
            own = {k: _random_value(rng) for k in rng.sample(keys, rng.randrange(5))}
            attributes = {**shared, **{k: v for k, v in own.items() if k not in shared}}
            trace_id = rng.choice(traces)
            ids = rng.choice([(trace_id, rng.randrange(1, 2**64)), (trace_id, 0), (0, 0)])
            flags = rng.choice([0, 1, 255]) if ids[0] else 0  # (trace flags come with a trace)
            logs.append(log({"n": n}, attributes=attributes, head=head, trace_id=ids[0],
                            span_id=ids[1], ts=rng.choice([0, 1, 2**64 - 1]),
                            observed=rng.choice([0, 7]), flags=flags))  # fmt: skip
            span_id = rng.randrange(1, 2**64)
            spans.append(span(span_id, kind=SpanKind.CLIENT.value, attributes=attributes,
                              head=head, trace_id=trace_id))  # fmt: skip
            if rng.random() < 0.7:
                second = dict(attributes)
                free = [k for k in second if k not in shared]
                if free and rng.random() < 0.3:
                    second[rng.choice(free)] = _random_value(rng)
                kind = rng.choice([SpanKind.SERVER.value, SpanKind.CLIENT.value])
                spans.append(span(span_id ^ 1 or 5, kind=kind, parent=span_id,
                                  attributes=second, head=head, trace_id=trace_id))  # fmt: skip
        for _ in range(2):
            assert ExportLogsServiceRequest.FromString(encoder.logs(logs)) == encode_logs(
                [plain_log(r) for r in logs]
            )
            assert ExportTraceServiceRequest.FromString(encoder.spans(spans)) == encode_spans(
                [plain_span(s) for s in spans]
            )


def test_an_own_attribute_that_utf8_cannot_hold_is_written_with_replacements() -> None:
    """(The worker never records one: a lone surrogate becomes U+FFFD when it is read.) The
    encoder does not fail on it: the character is written as ``?``, as before the shortcut
    that encodes own attributes at once."""
    head = AttributeHead({"mcp.method.name": "tools/call"})

    def encoded(value: str) -> bytes:
        record = log(None, attributes={**head.attributes, "k": value}, head=head)
        return bytes(OtlpEncoder().logs([record, record]))

    assert encoded("a\ud800b") == encoded("a?b")


def test_a_log_record_without_a_trace_id_carries_no_trace_flags_or_span_id() -> None:
    """A record in no trace is written as the SDK writes it (no flags, no span id), whatever
    its other ids say; one with a trace id and no span id keeps its flags."""
    records = [
        log("a", trace_id=0, span_id=5, flags=1),
        log("b", trace_id=0, span_id=0, flags=1),
        log("c", span_id=0, flags=1),
        log("d", trace_id=0, span_id=5, flags=1, head=None, severity=0),
    ]
    ours = ExportLogsServiceRequest.FromString(OtlpEncoder().logs(records))
    assert ours == encode_logs([sdk_log(r) for r in records])
    written = [r for r in ours.resource_logs[0].scope_logs[0].log_records]
    assert [(r.flags, r.span_id, len(r.trace_id)) for r in written] == [
        (0, b"", 0), (0, b"", 0), (1, b"", 16), (0, b"", 0),
    ]  # fmt: skip
