"""A page of search results is the same whichever way it is read: a rare word by id and then
sorted, a common word through windows of the newest records or by walking the whole time index
(``store.search``). Records are written out of time order and some share a time, so reading by
id alone, or a window cut between records of one time, would give a wrong page."""

from __future__ import annotations

from pathlib import Path

import pytest

from helmet_otel import semconv as sc
from helmet_otel.store import Store, search
from helmet_otel.store.model import LogRow, log_row
from helmet_otel.store.pages import page
from helmet_otel.store.query import LogFilter, Reader, fts_query

BASE = 1_800_000_000_000_000_000


def _fill(path: Path) -> None:
    store = Store.open(path, max_bytes=0, max_age_s=0)
    rows: list[LogRow] = []
    for i in range(60):
        words = ["alpha", f"item{i}"] + (["zebra"] if i in (7, 33, 51) else [])
        ts = BASE + (i if i % 10 else 1000 - i) * 1_000_000  # every tenth is written late
        ts -= (i % 4 == 1) * 1_000_000  # and some share their time with the record before
        rows.append(
            log_row(ts=ts, event=sc.EVENT_REQUEST if i % 2 else sc.EVENT_RESPONSE,
                    severity_number=9, severity_text="INFO", service="svc", trace_id=None,
                    span_id=None, body={"text": " ".join(words)}, has_body=True,
                    attributes={sc.HELMET_SESSION_ID: f"s-{i % 3}"})
        )  # fmt: skip
    store.write_logs(rows)
    store.close()


@pytest.mark.parametrize(
    ("rare_matches", "windows"), [(0, (4, 16)), (0, (2,)), (0, (1000,)), (5, (8,)), (20_000, ())]
)
def test_every_plan_gives_the_pages_of_the_full_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rare_matches: int, windows: tuple[int, ...]
) -> None:
    path = tmp_path / "store.db"
    _fill(path)
    monkeypatch.setattr(search, "RARE_MATCHES", rare_matches)
    monkeypatch.setattr(search, "WINDOWS", windows)
    with Reader.open(path) as reader:
        for flt in [
            LogFilter(grep="alpha"),
            LogFilter(grep="alph"),
            LogFilter(grep="zebra"),
            LogFilter(grep="nothing here"),
            LogFilter(grep="alpha", events=(sc.EVENT_REQUEST,)),
            LogFilter(grep="zeb", session_prefixes=("s-0",)),
            LogFilter(grep="alpha", session_prefixes=("s-1",)),
            LogFilter(grep="alpha", until_ns=BASE + 40 * 1_000_000),
            LogFilter(grep="alpha", since_ns=BASE + 20 * 1_000_000),
        ]:
            expected = list(reversed(reader.logs(flt)))  # every match, newest first
            walked: list[int] = []
            before = None
            while True:
                found = page(reader, flt, before=before, limit=7)
                walked += [e.id for e in found.entries]
                if not found.more:
                    break
                before = (found.entries[-1].ts, found.entries[-1].id)
            assert walked == [e.id for e in expected], flt
        query = fts_query("alph")
        assert query is not None
        assert search.is_rare(reader, query) is (rare_matches >= 60)
        assert search.is_rare(reader, '"zebra"*') is (rare_matches >= 3)
        assert search.is_rare(reader, '"absent"*')
