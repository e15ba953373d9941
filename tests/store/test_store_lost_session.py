"""A proxy killed with SIGKILL: its telemetry worker still writes ``helmet.session_end`` (reason
"proxy terminated without closing"). The session row must not lose what it had learned, and
``sessions`` shows it as ``lost``."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from helmet_otel import semconv as sc
from helmet_otel.store import Store
from helmet_otel.store.model import LogRow, log_row
from helmet_otel.store.query import Reader
from tests.store.conftest import run_cli
from tests.store.scenario import BASE_NS, MS, Rec, Session, write_store

SID = "s-killed-0001"
LOST_EXIT_REASON = "proxy terminated without closing"  # what the telemetry worker writes
DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a running process


def _live_records(*, era: str | None) -> list[Rec]:
    """Start, two requests (one failing), as a proxy writes them before it is killed."""
    sid = {sc.HELMET_SESSION_ID: SID}
    recs = [
        Rec(
            BASE_NS,
            sc.EVENT_SESSION_START,
            {
                **sid,
                sc.HELMET_SERVER_NAME: "svc",
                sc.HELMET_PROXY_PID: DEAD_PID,
                sc.HELMET_PROXY_HOST: socket.gethostname(),
            },
        )
    ]
    for n, failing in ((1, False), (2, True)):
        at = BASE_NS + n * 100 * MS
        common: dict[str, object] = {
            **sid,
            sc.MCP_METHOD_NAME: "tools/call",
            sc.JSONRPC_REQUEST_ID: str(n),
            sc.GEN_AI_TOOL_NAME: "t",
        }
        if era is not None:
            common[sc.HELMET_ERA] = era
        recs.append(
            Rec(
                at,
                sc.EVENT_REQUEST,
                {
                    **common,
                    sc.HELMET_DIRECTION: sc.DIRECTION_C2S,
                    sc.HELMET_MESSAGE_KIND: "request",
                },
            )
        )
        recs.append(
            Rec(
                at + MS,
                sc.EVENT_RESPONSE,
                {
                    **common,
                    sc.HELMET_DIRECTION: sc.DIRECTION_S2C,
                    sc.HELMET_MESSAGE_KIND: "response",
                    sc.HELMET_LATENCY_MS: 1.0,
                    **({sc.ERROR_TYPE: sc.ERROR_TYPE_TOOL_ERROR} if failing else {}),
                },
            )
        )
    return recs


def _end(*, requests: int, errors: int, era: str, reason: str = LOST_EXIT_REASON) -> Rec:
    """The session_end the worker writes for a proxy that went away (no exit status)."""
    return Rec(
        BASE_NS + 2000 * MS,
        sc.EVENT_SESSION_END,
        {
            sc.HELMET_SESSION_ID: SID,
            sc.HELMET_SESSION_DURATION_MS: 2000.0,
            sc.HELMET_SESSION_REQUESTS: requests,
            sc.HELMET_SESSION_ERRORS: errors,
            sc.HELMET_EXIT_REASON: reason,
            sc.HELMET_ERA: era,
            sc.HELMET_SERVER_NAME: "svc",
        },
    )


def _sessions_json(store_path: Path) -> list[dict[str, object]]:
    r = run_cli("sessions", "--format", "json", "--store", str(store_path))
    assert (r.code, r.err) == (0, "")
    return json.loads(r.out)


def _summary(session: dict[str, object]) -> tuple[object, ...]:
    return (
        session["status"],
        session["requests"],
        session["errors"],
        session["era"],
        session["exit_status"],
        session["exit_reason"],
    )


@pytest.mark.parametrize(
    ("end", "era_seen"),
    [
        # today's worker: it does not know the counts or the era of a killed proxy
        (_end(requests=0, errors=0, era="unknown"), "legacy"),
        # the worker once it carries what it knows: same answer
        (_end(requests=2, errors=1, era="legacy"), "legacy"),
        # no record carried the era: the end's "unknown" is all there is
        (_end(requests=0, errors=0, era="unknown"), None),
    ],
    ids=["end-knows-nothing", "end-knows-counts", "era-never-learned"],
)
def test_killed_proxy_session_is_lost_and_keeps_its_counts_and_era(
    store_path: Path, end: Rec, era_seen: str | None
) -> None:
    # one record per transaction (simple processors): the merge happens in the upsert
    session = Session(SID, "svc", 0xAB, [*_live_records(era=era_seen), end], [])
    write_store(store_path, [session], max_bytes=0, max_age_s=0).close()
    [row] = _sessions_json(store_path)
    assert _summary(row) == ("lost", 2, 1, era_seen or "unknown", None, LOST_EXIT_REASON)
    table = run_cli("sessions", "--store", str(store_path)).out.splitlines()
    assert table[1].split()[-5:] == ["2", "1", "lost", "proxy", "killed"]


def _rows(recs: Sequence[Rec]) -> list[LogRow]:
    return [
        log_row(
            ts=r.ts,
            event=r.event,
            severity_number=9,
            severity_text="INFO",
            service="svc",
            trace_id=None,
            span_id=None,
            body=None,
            has_body=False,
            attributes=r.attrs,
        )
        for r in recs
    ]


def test_counts_and_era_survive_an_end_in_the_same_batch(store_path: Path) -> None:
    store = Store.open(store_path, max_bytes=0, max_age_s=0)
    assert store.write_logs(
        _rows([*_live_records(era="modern"), _end(requests=0, errors=0, era="unknown")])
    )
    store.close()
    with Reader.open(store_path) as reader:
        [info] = reader.sessions()
    assert (info.status, info.requests, info.errors, info.era) == ("lost", 2, 1, "modern")


def test_a_later_end_never_lowers_the_stored_counts(store_path: Path) -> None:
    store = Store.open(store_path, max_bytes=0, max_age_s=0)
    assert store.write_logs(_rows(_live_records(era=None)))
    assert store.write_logs(
        _rows([_end(requests=7, errors=3, era="legacy", reason="client closed stdin")])
    )
    assert store.write_logs(_rows([_end(requests=0, errors=0, era="unknown")]))
    store.close()
    with Reader.open(store_path) as reader:
        row = reader.conn.execute(
            "SELECT requests, errors, era FROM sessions WHERE session_id = ?", (SID,)
        ).fetchone()
        [info] = reader.sessions()
    assert row == (7, 3, "legacy")
    assert (info.requests, info.errors, info.era) == (7, 3, "legacy")


def test_an_ended_session_keeps_the_end_counts_and_status(store_path: Path) -> None:
    end = _end(requests=5, errors=1, era="legacy", reason="client closed stdin")
    end.attrs[sc.HELMET_EXIT_STATUS] = 0
    write_store(
        store_path, [Session(SID, "svc", 0xAB, [*_live_records(era=None), end], [])]
    ).close()
    [row] = _sessions_json(store_path)
    assert _summary(row) == ("ended", 5, 1, "legacy", 0, "client closed stdin")
