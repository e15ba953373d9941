"""The two SQLite libraries a store writer can use (``store/engine.py``): apsw, which the
telemetry worker writes through, stores what sqlite3 does, the viewers (sqlite3) read it alike,
and its failures reach the writer as the sqlite3 exceptions, with SQLite's result codes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helmet_otel.store import Store
from helmet_otel.store.engine import ApswConnection, Engine
from helmet_otel.store.maintenance import check_integrity, delete_sessions
from helmet_otel.store.query import LogFilter, Reader
from helmet_otel.store.schema import SCHEMA_VERSION, connect_writer
from tests.store.scenario import BASE_NS, bulk_session, everything_session, write_store


def _seen(path: Path) -> tuple[object, ...]:
    """What the viewers read from a store: sessions, records, spans and full-text matches."""
    with Reader.open(path) as reader:
        sessions = [(s.session_id, s.status, s.requests, s.errors) for s in reader.sessions()]
        logs = [(e.ts, e.event, e.session_id, e.body) for e in reader.logs(LogFilter())]
        spans = [
            (s.span_id, s.kind, s.name, s.status, s.attributes)
            for sid, *_ in sessions
            for s in reader.spans(str(sid))
        ]
        found = {
            word: [e.ts for e in reader.logs(LogFilter(grep=word))]
            for word in ("result 7", "bulk-b", "echo", "nothing-like-this")
        }
    return sessions, logs, spans, found


def test_apsw_writes_what_sqlite3_writes_and_sqlite3_reads_it(tmp_path: Path) -> None:
    stores: dict[Engine, Path] = {}
    for engine in ("sqlite3", "apsw"):
        stores[engine] = path = tmp_path / engine / "store.db"
        sessions = [
            everything_session(),
            bulk_session("bulk-a", 300, base_ns=BASE_NS + 10**9),
            bulk_session("bulk-b", 300, base_ns=BASE_NS + 2 * 10**9),
        ]
        write_store(path, sessions, max_bytes=0, max_age_s=0, engine=engine).close()
    written = _seen(stores["sqlite3"])
    assert len(written[1]) == 13 + 2 * 602 and written[3]["result 7"]  # the scenario, whole
    assert _seen(stores["apsw"]) == written
    # sqlite3 deletes from apsw's tables (full-text entries included) and finds them sound
    apsw_store = stores["apsw"]
    delete_sessions(apsw_store, ["bulk-a"])
    assert check_integrity(apsw_store) is None
    with sqlite3.connect(apsw_store) as conn:
        conn.execute("INSERT INTO logs_fts (logs_fts) VALUES ('integrity-check')")
        conn.execute("INSERT INTO logs_spans (logs_spans) VALUES ('integrity-check')")
    conn.close()
    with Reader.open(apsw_store) as reader:
        assert not reader.logs(LogFilter(grep="bulk-a"))
        assert len(reader.logs(LogFilter(grep="bulk-b"))) == 600


# Holds the write lock of the store at argv[1] until stdin closes (its own process: POSIX locks
# do not exclude each other within one process).
HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
"""


def test_apsw_failures_are_the_sqlite3_exceptions_with_their_codes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    Store.open(path, max_bytes=0, max_age_s=0).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == b"held\n"
        conn = ApswConnection(path, 0)
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as busy:
            conn.execute("BEGIN IMMEDIATE")
        assert busy.value.sqlite_errorcode == 5  # SQLITE_BUSY
        assert conn.in_transaction is False
        conn.close()
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not SQLite " * 500)
    with pytest.raises(sqlite3.DatabaseError, match="file is not a database") as notadb:
        ApswConnection(junk, 0).execute("SELECT count(*) FROM sqlite_master")
    assert notadb.value.sqlite_errorcode == 26  # SQLITE_NOTADB
    assert type(notadb.value) is sqlite3.DatabaseError

    conn = connect_writer(path, engine="apsw")
    with pytest.raises(sqlite3.IntegrityError) as constraint:
        conn.execute("INSERT INTO sessions (session_id, first_ts, last_ts) VALUES ('s', NULL, 1)")
    assert constraint.value.sqlite_errorcode == 1299  # SQLITE_CONSTRAINT_NOTNULL
    conn.close()


def test_apsw_connection_gives_what_the_writer_reads(tmp_path: Path) -> None:
    conn = connect_writer(tmp_path / "store.db", engine="apsw")
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA secure_delete").fetchone() == (1,)
    assert conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) == 32766
    conn.execute("BEGIN IMMEDIATE")
    assert conn.in_transaction is True
    conn.executemany(
        "INSERT INTO session_errors (session_id, key) VALUES (?, ?)",
        [("s", "1"), ("s", "2"), ("t", "1")],
    )
    conn.execute("COMMIT")
    assert conn.in_transaction is False
    assert list(conn.execute("SELECT key FROM session_errors WHERE session_id = ?", ("s",))) == [
        ("1",),
        ("2",),
    ]
    assert conn.execute("DELETE FROM session_errors WHERE key = ?", ("1",)).rowcount == 2
    assert conn.execute("SELECT count(*) FROM session_errors").fetchall() == [(1,)]
    conn.close()


_MEMORY_USED = """
import sys
from pathlib import Path
import apsw
from helmet_otel.store.engine import connect
path = Path(sys.argv[1])
other = apsw.Connection(str(path.with_name("other.db"))) if sys.argv[2] == "open" else None
conn = connect("apsw", path, 1000)
conn.execute("CREATE TABLE t (x)")
conn.execute("INSERT INTO t VALUES (?)", ("x" * 5000,))
print(apsw.status(apsw.SQLITE_STATUS_MEMORY_USED)[0] > 0, conn.execute("SELECT count(*) FROM t").fetchone())
"""


@pytest.mark.parametrize(("other", "counted"), [("none", "False"), ("open", "True")])
def test_apsw_keeps_no_memory_statistics_unless_a_connection_came_first(
    tmp_path: Path, other: str, counted: str
) -> None:
    """The writer's apsw turns SQLite's memory statistics off (a global mutex per allocation):
    in a process of its own, as the worker is. With an apsw connection already open (the
    setting needs SQLite shut down), it connects all the same and the statistics stay on."""
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_USED, str(tmp_path / "store.db"), other],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split("\n") == [f"{counted} (1,)", ""]
