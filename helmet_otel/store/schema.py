"""The store's SQLite schema, its migrations, and how connections are opened.

The schema version lives in ``PRAGMA user_version``. Migrations are an ordered registry; each
runs with the record of it (the new ``user_version``) in one ``BEGIN IMMEDIATE`` transaction, so
two processes opening a fresh or old store at once apply each migration exactly once. A store
written by a newer helmet-otel (higher version) is never touched.

The tables (see ``docs/store.md`` for every column):

- ``logs``: one row per OTel log record. The attributes filters use are promoted to columns
  (``session_id``, ``event``, ``direction``, ``kind``, ``method``, ``target``, ...); the rest
  stay in ``attrs`` (JSON). ``id`` is AUTOINCREMENT, so it only grows and is the cursor
  ``logs --follow`` polls with.
- ``logs_fts``: contentless FTS5 index over the bodies (``fts_text``), written by the writer.
- ``sessions``: one row per ``helmet.session.id``, upserted from the records as they arrive;
  ``session_errors`` holds the distinct failed requests of each, for live error counts.
- ``spans``: one row per ended span, or per call's CLIENT/SERVER pair (``client_span_id``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from helmet_otel.store.engine import Connection, Engine, connect

__all__ = [
    "BULK_EVENTS",
    "FTS_DELETE",
    "FTS_INSERT",
    "MIGRATIONS",
    "RARE_EVENT",
    "SCHEMA_VERSION",
    "SPAN_INSERT",
    "Migration",
    "StoreError",
    "connect_reader",
    "connect_writer",
    "forget_logs",
    "fts_text",
    "is_a_directory",
    "migrate",
    "schema_version",
]


class StoreError(Exception):
    """The store cannot be used (missing, unreadable, corrupt, newer schema). Message is for users."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


# The full-text index holds the JSON body with JSON escapes turned into spaces, so "a\nb"
# indexes a and b. The writer inserts it (and retention deletes it) explicitly: FTS5 rows
# inserted from a trigger are flushed one statement at a time, three times slower.
_JSON_ESCAPES: Final = ("\\n", "\\r", "\\t", '\\"', "\\\\")


def fts_text(body_json: str) -> str:
    """The text indexed for a body; retention must delete exactly this text again."""
    if "\\" not in body_json:  # every JSON escape starts with a backslash
        return body_json
    for escape in _JSON_ESCAPES:
        body_json = body_json.replace(escape, " ")
    return body_json


# The full-text table of a new store has no per-record token counts (``columnsize=0``: nothing
# ranks matches, so the ``logs_fts_docsize`` row every record wrote was never read; 1.2 us per
# call less for the writer). A store made before keeps its table, token counts and all: both
# kinds are written, searched and deleted from alike, so there is nothing to migrate.
LOGS_FTS: Final = """CREATE VIRTUAL TABLE logs_fts USING fts5 (
        body, content='', columnsize=0, tokenize='unicode61 remove_diacritics 2'
    )"""

_V1: Final = (
    """CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID""",
    """CREATE TABLE logs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts INTEGER NOT NULL,
        session_id TEXT,
        event TEXT,
        severity_number INTEGER,
        severity_text TEXT,
        direction TEXT,
        kind TEXT,
        method TEXT,
        target TEXT,
        request_id TEXT,
        latency_ms REAL,
        size INTEGER,
        is_error INTEGER NOT NULL DEFAULT 0,
        error_type TEXT,
        service TEXT,
        trace_id TEXT,
        span_id TEXT,
        body TEXT,
        attrs TEXT
    )""",
    "CREATE INDEX logs_ts ON logs (ts)",
    "CREATE INDEX logs_session_ts ON logs (session_id, ts)",
    "CREATE INDEX logs_event_ts ON logs (event, ts)",
    "CREATE INDEX logs_target_ts ON logs (target, ts) WHERE target IS NOT NULL",
    "CREATE INDEX logs_errors_ts ON logs (ts) WHERE is_error = 1",
    LOGS_FTS,
    """CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        service TEXT,
        server_name TEXT,
        server_command TEXT,
        transport TEXT,
        proxy_pid INTEGER,
        proxy_host TEXT,
        client_name TEXT,
        client_version TEXT,
        server_info_name TEXT,
        server_version TEXT,
        protocol_version TEXT,
        era TEXT,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        start_ts INTEGER,
        end_ts INTEGER,
        duration_ms REAL,
        requests INTEGER,
        errors INTEGER,
        exit_status,
        exit_reason TEXT,
        seen_requests INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE session_errors (
        session_id TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (session_id, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX sessions_last_ts ON sessions (last_ts)",
    """CREATE TABLE spans (
        id INTEGER PRIMARY KEY,
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        start_ts INTEGER NOT NULL,
        end_ts INTEGER,
        status TEXT NOT NULL,
        status_message TEXT,
        session_id TEXT,
        segment INTEGER,
        service TEXT,
        attrs TEXT,
        links TEXT
    )""",
    "CREATE INDEX spans_session ON spans (session_id, start_ts)",
    "CREATE INDEX spans_start ON spans (start_ts)",
)

FTS_INSERT: Final = "INSERT INTO logs_fts (rowid, body) VALUES (?, ?)"
FTS_DELETE: Final = "INSERT INTO logs_fts (logs_fts, rowid, body) VALUES ('delete', ?, ?)"

# Version 2: the indexes of the viewer's server, method and call queries. ``logs_service_ts``
# and ``logs_method_ts`` serve ``--server``/``--method`` and list the known names (one index
# seek per distinct value); ``logs_call`` finds a request's answer (and an answer's request);
# ``logs_span`` finds the records of a span (``show SPAN_ID``, as exports and traces name it).
_V2: Final = (
    "CREATE INDEX logs_span ON logs (span_id) WHERE span_id IS NOT NULL",
    "CREATE INDEX logs_service_ts ON logs (service, ts)",
    "CREATE INDEX logs_method_ts ON logs (method, ts)",
    "CREATE INDEX logs_call ON logs (session_id, request_id, ts) WHERE request_id IS NOT NULL",
)

# Version 3: what each session's server process used (``helmet.server.cpu_time``,
# ``helmet.server.memory.peak`` of its performance and end records): ``sessions`` shows them.
# ``imported_ts``: when ``logs --import`` brought the session in (NULL: a proxy recorded it).
_V3: Final = (
    "ALTER TABLE sessions ADD COLUMN cpu_s REAL",
    "ALTER TABLE sessions ADD COLUMN peak_memory INTEGER",
    "ALTER TABLE sessions ADD COLUMN imported_ts INTEGER",
)

# Version 4 (issue 15: the writer's CPU per call). ``logs_span`` goes: span ids are random, so
# every record written landed on a random page of that index (on a store of 300,000 records it
# was a third of the writer's time). ``show SPAN_ID`` looks span ids up in ``logs_spans``
# instead, a contentless FTS5 table of one token per record, which takes new entries in
# batches (7 times cheaper per record). ``spans_start`` goes too: only retention used it, and
# it finds each session's old spans through ``spans(session_id, start_ts)``.
_V4: Final = (
    """CREATE VIRTUAL TABLE logs_spans USING fts5 (
        span_id, content='', detail=none, tokenize='ascii'
    )""",
    "INSERT INTO logs_spans (rowid, span_id) SELECT id, span_id FROM logs"
    " WHERE span_id IS NOT NULL",
    "DROP INDEX IF EXISTS logs_span",
    "DROP INDEX IF EXISTS spans_start",
)

# The events of nearly every record (a call's request and answer): ``logs(event, ts)`` leaves
# them out (a query for them reads the time or session index, where they are every other
# record). A query for any other event must say ``RARE_EVENT`` too, literally, for SQLite to use
# that index.
BULK_EVENTS: Final = ("helmet.request", "helmet.response")
RARE_EVENT: Final = f"event NOT IN ({', '.join(repr(e) for e in BULK_EVENTS)})"

# Version 5 (issue 15: the writer's CPU per call). A call's CLIENT span, when it differs from
# its SERVER span only in its id, kind and parent, is stored in the SERVER span's row
# (``client_span_id``); readers expand the pair again: one row and one index entry per call
# instead of two. ``logs_spans`` is made again with ``columnsize=0``: no row of token counts
# per record (nothing ranks span ids), which was about half of what that table cost the writer.
# Both full-text tables merge their segments 8 at a time instead of 4 (``automerge``): fewer
# merges while writing (1.7 us per call), at most twice as many segments for a query to read.
# ``logs(event, ts)`` leaves out the requests and answers (``RARE_EVENT``; 2.3 us per call).
_V5: Final = (
    "ALTER TABLE spans ADD COLUMN client_span_id TEXT",
    "DROP TABLE IF EXISTS logs_spans",
    """CREATE VIRTUAL TABLE logs_spans USING fts5 (
        span_id, content='', columnsize=0, detail=none, tokenize='ascii'
    )""",
    "INSERT INTO logs_spans (rowid, span_id) SELECT id, span_id FROM logs"
    " WHERE span_id IS NOT NULL",
    "DROP INDEX IF EXISTS logs_event_ts",
    f"CREATE INDEX logs_event_ts ON logs (event, ts) WHERE {RARE_EVENT}",
    "INSERT INTO logs_spans (logs_spans, rank) VALUES ('automerge', 8)",
    "INSERT INTO logs_fts (logs_fts, rank) VALUES ('automerge', 8)",
)

# Version 6 (issue 15: the writer's CPU per call). ``logs_call`` goes: two entries per call
# (request ids as text, so counting ids landed all over a long session's part of it) were about
# 2 us of the writer's 23. A request's answer is found among the records of its span
# (``logs_spans``), or else along the session's time (``store/calls.py``).
_V6: Final = ("DROP INDEX IF EXISTS logs_call",)

SPAN_INSERT: Final = "INSERT INTO logs_spans (rowid, span_id) VALUES (?, ?)"
SPAN_DELETE: Final = "INSERT INTO logs_spans (logs_spans, rowid, span_id) VALUES ('delete', ?, ?)"


def forget_logs(conn: Connection, doomed: Sequence[tuple[int, str | None, str | None]]) -> None:
    """Delete log records ``(id, body, span_id)`` and their full-text entries (inside a
    transaction). A contentless FTS5 entry is deleted with exactly the text it indexed."""
    conn.executemany(FTS_DELETE, [(i, fts_text(b)) for i, b, _ in doomed if b is not None])
    conn.executemany(SPAN_DELETE, [(i, s) for i, _, s in doomed if s is not None])
    conn.executemany("DELETE FROM logs WHERE id = ?", [(i,) for i, _, _ in doomed])


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "initial schema", _V1),
    Migration(2, "server, method, call and span indexes", _V2),
    Migration(3, "server process CPU time and peak memory per session; imported sessions", _V3),
    Migration(4, "span ids in logs_spans (FTS5) instead of logs(span_id); no spans(start_ts)", _V4),
    Migration(
        5,
        "a call's CLIENT span in its SERVER span's row (spans.client_span_id); "
        "logs_spans without token counts",
        _V5,
    ),
    Migration(6, "no logs_call: a request's answer is looked for in its span", _V6),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version


def schema_version(conn: Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: Connection) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the version found before.

    Raises ``StoreError`` for a store from a newer helmet-otel and ``sqlite3.Error`` otherwise
    (busy included: callers retry).
    """
    found = schema_version(conn)
    if found == SCHEMA_VERSION:
        return found
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the store has schema version {found}, newer than this helmet-otel understands "
            f"({SCHEMA_VERSION}); upgrade helmet-otel or use another --store"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)  # another process may have migrated meanwhile
        if current > SCHEMA_VERSION:
            raise StoreError(f"the store has schema version {current}, newer than supported")
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO store_meta (key, value) VALUES (?, ?)",
                (f"migration.{migration.version}", migration.description),
            )
            conn.execute(f"PRAGMA user_version = {migration.version:d}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return found


def is_a_directory(path: Path) -> str:
    """What is wrong with a store path that names a directory (SQLite only says "disk I/O
    error" or "unable to open database file")."""
    return (
        "it is a directory, not a store file (--store and HELMET_STORE name the database "
        f"file itself, e.g. {path / 'store.db'})"
    )


def _ensure_file(path: Path) -> None:
    """Create the directory (0700) and an empty database file (0600): bodies may be private."""
    if path.is_dir():
        raise StoreError(is_a_directory(path))
    _private_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _private_dirs(directory: Path) -> None:
    """Create ``directory`` and every missing parent 0700 (``mkdir(parents=True)`` gives the
    parents the umask's mode: 0777 under umask 000)."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir(mode=0o700)


PAGE_SIZE: Final = 8192  # of a new store


def connect_writer(
    path: Path, *, busy_timeout_ms: int = 2000, engine: Engine = "sqlite3"
) -> Connection:
    """A read-write connection in WAL mode with the schema migrated, through ``engine``'s
    SQLite library (``store/engine.py``). Raises ``sqlite3.Error`` (busy included),
    ``OSError`` or ``StoreError``."""
    _ensure_file(path)
    conn = connect(engine, path, busy_timeout_ms)
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
        # The page size of a brand-new file (before anything reads it: an existing store keeps
        # its own). 8 KiB: fewer pages, and WAL frames, per batch written.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE:d}")
        if int(conn.execute("PRAGMA page_count").fetchone()[0]) == 0:
            # A brand-new file: the vacuum mode must be set before anything initialises it.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            if mode != "wal":
                raise StoreError(f"cannot switch {path} to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -16000")
        # Deleted records are overwritten, whatever the library's build default (Debian's
        # SQLite has it on, most others off): a pruned body leaves nothing in free pages.
        conn.execute("PRAGMA secure_delete = ON")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_reader(path: Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A query-only connection for the viewer commands. Raises ``StoreError`` with a message
    for users when the store is missing, unreadable, corrupt or too new."""
    if not path.exists():
        raise StoreError(f"no store at {path} (no proxy has written to it yet)")
    if path.is_dir():
        raise StoreError(f"cannot read the store at {path}: {is_a_directory(path)}")
    try:
        conn = _open_existing(path, busy_timeout_ms)
        try:
            version = schema_version(conn)
            if version != SCHEMA_VERSION:
                conn.close()
                _upgrade_for_reading(path, version, busy_timeout_ms)
                conn = _open_existing(path, busy_timeout_ms)
            conn.execute("PRAGMA query_only = 1")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the store at {path}: {exc}") from None
    return conn


def _open_existing(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(
            f"{uri}?mode=rw", uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None
        )
    except sqlite3.OperationalError:
        # read-only file or directory: read without being able to create -shm/-wal
        conn = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None
        )
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
    conn.execute("PRAGMA cache_size = -32000")
    return conn


def _upgrade_for_reading(path: Path, version: int, busy_timeout_ms: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store at {path} has schema version {version}, newer than this helmet-otel "
            f"understands ({SCHEMA_VERSION}); upgrade helmet-otel"
        )
    try:
        connect_writer(path, busy_timeout_ms=busy_timeout_ms).close()
    except (sqlite3.Error, OSError) as exc:
        if version >= 1:
            return  # e.g. a read-only file system: read it as it is (newer indexes are missing)
        raise StoreError(
            f"the store at {path} has schema version {version} and could not be upgraded "
            f"to {SCHEMA_VERSION}: {exc}"
        ) from None
