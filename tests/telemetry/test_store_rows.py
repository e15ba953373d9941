"""The store's rows of the worker's records are the rows of the same records as the SDK's types
(the store took the SDK's until the worker made its own): every field, odd values included."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping

from opentelemetry.trace import SpanKind

from helmet_otel.redaction import Redactor
from helmet_otel.store.batch import log_batch, log_batch_of_rows, span_batch, span_batch_of_rows
from helmet_otel.store.exporters import (
    log_row_from_record,
    log_row_from_sdk,
    span_row_from_record,
    span_row_from_sdk,
)
from helmet_otel.store.records import Span
from helmet_otel.telemetry.sdk_adapter import sdk_log, sdk_span
from tests.telemetry.records import HUGE_LOGS, HUGE_SPANS, LOGS, ODD_VALUES, SPANS, log, span

CLIENT = SpanKind.CLIENT.value


def test_span_rows_are_the_rows_of_the_sdk_spans() -> None:
    rows = [span_row_from_record(s) for s in [*SPANS, *HUGE_SPANS]]
    assert rows == [span_row_from_sdk(sdk_span(s)) for s in [*SPANS, *HUGE_SPANS]]
    assert [(r.kind, r.status, r.status_message) for r in rows[:5]] == [
        ("SERVER", "UNSET", None), ("CLIENT", "ERROR", "tool returned isError"),
        ("INTERNAL", "UNSET", None), ("SERVER", "UNSET", None), ("SERVER", "OK", None),
    ]  # fmt: skip
    assert rows[2].parent_span_id is None and len(rows[2].links) == 2
    assert rows[3].attrs["span.events"] == [{"name": "cancelled", "time_unix_nano": 5,
                                             "reason": "user"}]  # fmt: skip
    assert SPANS[3].attributes.get("span.events") is None  # the span itself is left alone


def test_log_rows_are_the_rows_of_the_sdk_log_records() -> None:
    rows = [log_row_from_record(r) for r in [*LOGS, *HUGE_LOGS]]
    assert rows == [log_row_from_sdk(sdk_log(r)) for r in [*LOGS, *HUGE_LOGS]]
    assert [(r.trace_id is None, r.severity_number, r.service) for r in rows[4:6]] == [
        (False, 9, "demo"), (True, None, "demo"),
    ]  # fmt: skip
    assert rows[4].ts == LOGS[4].observed  # no time of its own: when it was observed


def test_a_body_with_its_json_makes_the_same_row() -> None:
    """The store keeps the JSON text the recorder made (no second ``dumps``): the same text."""
    redactor = Redactor()
    for value in [{}, {"a": [1, 2.5, None, "é"], "api_key": "s3cr3t-value"}, "text", [1]]:
        body, text = redactor.body_and_json(value)
        record = log(body, body_json=text)
        assert text is not None
        assert log_row_from_record(record) == log_row_from_sdk(sdk_log(record))
        assert log_row_from_record(record) == log_row_from_record(log(body))


def test_the_batch_rows_are_the_rows_of_the_row_values() -> None:
    """The write boundary (``store.batch``: plain tuples the writer takes, made once per batch)
    gives every row exactly as ``LogRow``/``SpanRow`` do, with the same session updates."""
    records = [*LOGS, *HUGE_LOGS, log({"x": 1}, attributes={"helmet.session.id": "s", "n": 1})]
    batch = log_batch(records)
    rows = [log_row_from_record(r) for r in records]
    assert batch.rows == [r.values() for r in rows] and batch.failed == 0
    assert batch == log_batch_of_rows(rows)
    assert batch.sessions[0][:4] == ("s", 1_700_000_000_000_000_123, 1_700_000_000_000_000_123, 0)
    spans = span_batch([*SPANS, *HUGE_SPANS])
    assert spans.rows == [(*span_row_from_record(s).values(), None)
                          for s in [*SPANS, *HUGE_SPANS]]  # fmt: skip
    assert (spans.spans, spans.failed) == (8, 0)
    assert pickle.loads(pickle.dumps(batch)) == batch  # a store writer of its own can take it


def test_a_call_s_client_and_server_spans_are_one_row_when_they_agree() -> None:
    server = span(21, attributes={"mcp.method.name": "tools/call", "helmet.session.id": "s"})
    client = span(22, kind=CLIENT, parent=21, attributes=dict(server.attributes))
    other = span(23, kind=CLIENT, parent=21, attributes={**server.attributes, "x": 1})
    fresh = "".join(["tools/", "call"])  # equal, not the same object
    equal = span(24, kind=CLIENT, parent=21,
                 attributes={"mcp.method.name": fresh, "helmet.session.id": "s"})  # fmt: skip
    batch = span_batch([client, server, other, server, server, client, equal, server, SPANS[2]])
    server_row, client_row = span_row_from_record(server), span_row_from_record(client)
    assert batch.rows == [
        (*server_row.values(), client_row.span_id),  # the pair
        (*span_row_from_record(other).values(), None),  # an attribute more: its own row
        (*server_row.values(), None),
        (*server_row.values(), client_row.span_id),  # the SERVER first: a pair too
        # equal attributes, but not the recorder's copy of the same objects: not paired here
        (*span_row_from_record(equal).values(), None),
        (*server_row.values(), None),
        (*span_row_from_record(SPANS[2]).values(), None),
    ]
    assert (batch.spans, batch.failed) == (9, 0)
    assert span_batch_of_rows([client_row, server_row]).rows == batch.rows[:1]
    assert span_batch_of_rows([server_row, client_row]).rows == batch.rows[:1]
    # the rows' own check: equal JSON is enough (the values are text already)
    assert span_batch_of_rows([span_row_from_record(equal), server_row]).rows == [
        (*server_row.values(), f"{24:016x}")
    ]
    odd = span_row_from_record(span(25, kind=CLIENT, parent=21, attributes={
        "mcp.method.name": "tools/call", "helmet.session.id": "s", "n": True}))  # fmt: skip
    one = span_row_from_record(span(21, attributes={
        "mcp.method.name": "tools/call", "helmet.session.id": "s", "n": 1}))  # fmt: skip
    assert [r[-1] for r in span_batch_of_rows([odd, one]).rows] == [None, None]  # true is not 1


def test_a_headed_pair_is_compared_after_its_head() -> None:
    """Spans that name the same head begin with its items (`AttributeHead`): what follows is
    compared as the whole map is otherwise (the same objects, in the same order)."""
    from helmet_otel.store.records import AttributeHead

    head = AttributeHead({"mcp.method.name": "tools/call", "helmet.session.id": "s"})
    rid, other_rid = "7", "".join(["", "7"])  # equal, not the same object
    assert rid is not other_rid

    def pair(server_own: Mapping[str, object], client_own: Mapping[str, object]) -> list[object]:
        server = span(31, attributes={**head.attributes, **server_own}, head=head)
        client = span(32, kind=CLIENT, parent=31, attributes={**head.attributes, **client_own},
                      head=head)  # fmt: skip
        rows = span_batch([client, server]).rows
        # with no head: the same answer from the whole maps
        plain = span_batch([_headless(client), _headless(server)])
        assert [r[-1] for r in plain.rows] == [r[-1] for r in rows]
        return [r[-1] for r in rows]

    paired: list[object] = [f"{32:016x}"]
    assert pair({}, {}) == paired  # nothing after the head
    assert pair({"jsonrpc.request.id": rid}, {"jsonrpc.request.id": rid}) == paired
    assert pair({"jsonrpc.request.id": rid}, {"jsonrpc.request.id": other_rid}) == [None, None]
    assert pair({"n": 1}, {"n": True}) == [None, None]  # equal, another type
    assert pair({"a": rid}, {"b": rid}) == [None, None]  # another key
    assert pair({"a": rid}, {}) == [None, None]  # one more
    two = {"jsonrpc.request.id": rid, "helmet.message.size": 85}
    assert pair(two, dict(two)) == paired  # more than one: the whole maps compared
    assert pair(two, dict(reversed(two.items()))) == [None, None]  # another order


def _headless(s: Span) -> Span:
    return dataclasses.replace(s, head=None)


def test_a_record_that_cannot_be_converted_is_counted_not_fatal() -> None:
    broken = log("x")._replace(attributes=None)  # pyright: ignore[reportArgumentType]
    batch = log_batch([LOGS[0], broken, LOGS[1]])
    assert (len(batch.rows), batch.failed) == (2, 1)
    spans = span_batch([SPANS[0], span(30, kind=99), SPANS[4]])
    assert (len(spans.rows), spans.spans, spans.failed) == (2, 2, 1)


def test_ids_of_zero_are_written_as_before() -> None:
    """A span's trace id 0 is 32 zeros, a log record's is no trace (NULL), in any order."""
    records = [log("a", trace_id=0, span_id=0), LOGS[0], log("b", trace_id=0, span_id=0)]
    assert log_batch(records).rows == [log_row_from_record(r).values() for r in records]
    spans = [span(41, trace_id=0, parent=0), SPANS[0], span(42, trace_id=0, parent=0)]
    assert span_batch(spans).rows == [(*span_row_from_record(s).values(), None) for s in spans]


def test_records_with_a_head_make_the_rows_they_make_without_one() -> None:
    """``log_batch`` works out what a head's attributes give once per batch and looks only at
    each record's own attributes after it: the rows and session updates are those of the same
    records read attribute by attribute (odd values, a target or an error code of a record's
    own, a head with nothing left unpromoted)."""
    from helmet_otel.store.records import AttributeHead

    call = AttributeHead({"helmet.direction": "client->server", "helmet.message.kind": "request",
                          "mcp.method.name": "tools/call", "gen_ai.tool.name": "echo",
                          "helmet.session.id": "s"})  # fmt: skip
    bare = AttributeHead({"helmet.session.id": "s", "mcp.method.name": 5})  # coerced
    owns: list[dict[str, object]] = [
        {"helmet.message.size": 107, "jsonrpc.request.id": "1"},  # all promoted
        {"helmet.message.size": 85, "jsonrpc.request.id": "1", "helmet.latency_ms": 2.5},
        {"jsonrpc.request.id": 7, "error.type": "-32602", "rpc.response.status_code": "-32602"},
        {"gen_ai.prompt.name": "p", **ODD_VALUES},
        {},
        # the usual ones first, then one that is not as it usually comes (an int latency)
        {"helmet.message.size": 9, "jsonrpc.request.id": "2", "helmet.latency_ms": 3, "x": "y"},
    ]
    records = [
        log(f"b{i}", attributes={**head.attributes, **own}, head=head)
        for i, (head, own) in enumerate((h, o) for o in owns for h in (call, bare))
    ]
    batch = log_batch(records)
    plain = log_batch([r._replace(head=None) for r in records])
    assert batch == plain
    assert [row[8] for row in batch.rows[:4]] == ["echo", None, "echo", None]  # target
    assert [row[18] for row in batch.rows[:2]] == ['{"gen_ai.tool.name":"echo"}',
                                                  '{"mcp.method.name":5}']  # fmt: skip
    assert batch.rows[1][7] == "5" and batch.rows[5][12] == 1  # a coerced method; an error
    # the usual attributes, then an int latency: kept in attrs, its column a float
    assert batch.rows[-2][9:12] == ("2", 3.0, 9)
    assert batch.rows[-2][18] == '{"gen_ai.tool.name":"echo","helmet.latency_ms":3,"x":"y"}'
