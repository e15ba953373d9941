"""A route's query is interrupted when its client goes away, and only that query."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from helmet_otel.ui.cancel import Cancel, CancelledError

ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"


def test_cancel_interrupts_the_running_query_and_not_the_next_one() -> None:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    started = threading.Event()
    conn.set_progress_handler(lambda: started.set() or 0, 1000)
    cancel = Cancel()
    failures: list[BaseException] = []

    def run() -> None:
        with cancel.running(conn):
            try:
                conn.execute(ENDLESS).fetchall()
            except sqlite3.OperationalError as exc:
                failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(10)
    cancel.cancel()
    worker.join(10)
    assert not worker.is_alive()
    assert [str(f) for f in failures] == ["interrupted"]
    cancel.cancel()  # again, after the run: nothing is interrupted any more
    assert conn.execute("SELECT 41 + 1").fetchall() == [(42,)]
    with pytest.raises(CancelledError), cancel.running(conn):
        pass  # a cancelled request's route does not start
