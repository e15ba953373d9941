"""Which index each query of the viewer uses: ``EXPLAIN QUERY PLAN`` of every statement run.

1. Record the statements: with ``--hook DIR`` this writes ``DIR/sqltrace_hook.py`` and a
   ``.pth`` line to put in the venv's site-packages; every ``sqlite3.connect`` of every Python
   process then logs its statements to ``$SQLTRACE_FILE``. Run the CLI commands, the web
   viewer's tests, the store tests with ``SQLTRACE_FILE=/tmp/trace.sql`` set; then delete the
   ``.pth`` file again::

       .venv/bin/python benchmarks/store_query_plans.py --hook /tmp/sqltrace
       echo "import sys; sys.path.append('/tmp/sqltrace'); import sqltrace_hook" \\
           > .venv/lib/python3.11/site-packages/zz_sqltrace.pth
       SQLTRACE_FILE=/tmp/trace.sql .venv/bin/python -m pytest tests/store tests/ui tests/cli
       SQLTRACE_FILE=/tmp/trace.sql .venv/bin/python -m helmet_otel logs ... --store BIG.db
       rm .venv/lib/python3.11/site-packages/zz_sqltrace.pth

2. ``store_query_plans.py /tmp/trace.sql BIG.db``: the distinct reading statements (literals
   folded), the plan of each against a big store (a copy of ``bench_store.py --keep``'s), and
   per index the statements whose plan uses it; an index no statement uses is listed last.
"""

from __future__ import annotations

import argparse
import collections
import re
import sqlite3
import sys
from pathlib import Path

HOOK = """import os, sqlite3
_path = os.environ.get("SQLTRACE_FILE")
if _path:
    _connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = _connect(*args, **kwargs)

        def log(sql, path=_path):
            try:
                with open(path, "a") as f:
                    f.write(sql.replace("\\n", " ") + "\\n")
            except OSError:
                pass

        conn.set_trace_callback(log)
        return conn

    sqlite3.connect = connect
"""

_READS = ("SELECT", "WITH", "DELETE", "UPDATE")


def distinct(trace: Path) -> dict[str, str]:
    """Folded statement -> one statement as run."""
    seen: dict[str, str] = {}
    for line in trace.read_text(errors="replace").splitlines():
        sql = line.strip()
        upper = sql.upper()
        if not upper.startswith(_READS) or "SQLITE_MASTER" in upper or "PRAGMA" in upper:
            continue
        folded = re.sub(r"'(?:[^']|'')*'", "?", sql)
        folded = re.sub(r"\b\d+(\.\d+)?\b", "?", folded)
        folded = re.sub(r"\?(\s*,\s*\?)+", "?,..", folded)
        seen.setdefault(folded, sql)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trace", type=Path, nargs="?")
    parser.add_argument("store", type=Path, nargs="?")
    parser.add_argument("--hook", type=Path, metavar="DIR", help="write the tracing hook")
    parser.add_argument("--plans", action="store_true", help="print every statement's plan")
    args = parser.parse_args()
    if args.hook is not None:
        args.hook.mkdir(parents=True, exist_ok=True)
        (args.hook / "sqltrace_hook.py").write_text(HOOK)
        print(f"wrote {args.hook / 'sqltrace_hook.py'}")
        return 0
    if args.trace is None or args.store is None:
        parser.error("give a trace file and a store")
    conn = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)
    uses: dict[str, set[int]] = collections.defaultdict(set)
    statements = distinct(args.trace)
    for number, (folded, sql) in enumerate(statements.items()):
        try:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        except sqlite3.Error as exc:
            plan = [f"(not planned here: {exc})"]
        for step in plan:
            for found in re.finditer(r"USING (?:COVERING )?INDEX (\w+)", step):
                uses[found.group(1)].add(number)
        if args.plans:
            print(f"#{number} {folded}")
            for step in plan:
                print(f"    {step}")
    indexes = [
        str(row[0])
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    ]
    print(f"{len(statements)} distinct statements")
    print("| index | statements using it |")
    print("|---|---|")
    for name in indexes:
        print(f"| `{name}` | {len(uses.get(name, ()))} |")
    unused = [name for name in indexes if not uses.get(name)]
    print(f"unused: {', '.join(unused) if unused else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
