"""Child process for tests/test_db_crash.py: commit forever, acknowledge each commit.

Each transaction inserts a sample row of random size, appends the audit record that
describes it, and links the two; only after ``commit`` returns does it print
``<sample id> <audit id>`` (flushed), just as the gateway PUBACKs only after commit. The
test SIGKILLs this process at random moments and checks that every acknowledged pair is
in the database. Usage: ``python tests/support_crash_writer.py DB_PATH SEED``.
"""

from __future__ import annotations

import random
import sys

from gateway.audit import AuditLog
from gateway.db import migrate, open_db, transaction

SCHEMA = (
    "CREATE TABLE sample (id INTEGER PRIMARY KEY, audit_id INTEGER NOT NULL, payload TEXT NOT NULL)",
)


def main(path: str, seed: int) -> None:
    conn = open_db(path)
    audit = AuditLog(conn)
    migrate(conn, SCHEMA, component="crashtest")
    rng = random.Random(seed)
    while True:
        pad = "x" * rng.randrange(10, 6000)  # some transactions span several pages
        with transaction(conn):
            cur = conn.execute("INSERT INTO sample (audit_id, payload) VALUES (0, ?)", (pad,))
            sample_id = int(cur.lastrowid or 0)
            record = audit.append(
                "test.sample",
                actor="crash-writer",
                subject=str(sample_id),
                data={"sample": sample_id, "size": len(pad)},
            )
            conn.execute("UPDATE sample SET audit_id = ? WHERE id = ?", (record.id, sample_id))
        sys.stdout.write("%d %d\n" % (sample_id, record.id))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
