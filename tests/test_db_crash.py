"""gateway/db.py: durability settings, clear errors, migrations, transactions, and a crash
test that SIGKILLs a real writer process and checks that no acknowledged commit is lost.

The crash test covers process death (the OS keeps the written pages). Power loss is what
``synchronous=FULL`` is for; it cannot be simulated here (docs/audit.md, "Limits").
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.audit import AuditLog, iter_records, verify
from gateway.db import DatabaseError, migrate, open_db, transaction

ROOT = Path(__file__).resolve().parent.parent
WRITER = ROOT / "tests" / "support_crash_writer.py"


def test_open_db_sets_durability_pragmas(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "g.db", busy_timeout_ms=1234)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
    conn.close()


def test_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "g.db"
    with pytest.raises(DatabaseError) as e:
        open_db(path)
    assert e.value.reason == "db.dir_missing"
    assert str(path) in str(e.value)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    path.write_bytes(b"this is a text file, not SQLite\n" * 200)
    with pytest.raises(DatabaseError) as e:
        open_db(path)
    assert e.value.reason == "db.not_a_database"
    assert str(path) in str(e.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as e:
        open_db(tmp_path)
    assert e.value.reason == "db.is_directory"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anyway")
def test_read_only_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    open_db(path).close()
    path.chmod(0o444)
    with pytest.raises(DatabaseError) as e:
        open_db(path)
    assert e.value.reason == "db.not_writable"


def test_second_gateway_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    first = open_db(path)
    with pytest.raises(DatabaseError) as e:
        open_db(path)
    assert e.value.reason == "db.locked"
    assert str(os.getpid()) in str(e.value)
    # Readers and lock-free admin connections coexist with the running gateway.
    open_db(path, readonly=True).close()
    open_db(path, gateway_lock=False).close()
    first.close()
    open_db(path).close()


def test_readonly_needs_an_existing_file_and_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as e:
        open_db(tmp_path / "absent.db", readonly=True)
    assert e.value.reason == "db.not_found"
    conn = open_db(tmp_path / "g.db")
    migrate(conn, ["CREATE TABLE t (x INTEGER)"], component="t")
    conn.close()
    ro = open_db(tmp_path / "g.db", readonly=True)
    assert ro.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    with pytest.raises(sqlite3.OperationalError):
        ro.execute("INSERT INTO t VALUES (1)")


def test_database_format_from_newer_software(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(DatabaseError) as e:
        open_db(path)
    assert e.value.reason == "db.schema_newer"
    with pytest.raises(DatabaseError) as e:
        open_db(path, readonly=True)
    assert e.value.reason == "db.schema_newer"


def test_migrations_are_forward_only_and_per_component(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "g.db")
    a = ["CREATE TABLE a1 (x INTEGER)", "CREATE TABLE a2 (x INTEGER); CREATE INDEX a2x ON a2 (x)"]
    b = ["CREATE TABLE b1 (x INTEGER)"]
    assert migrate(conn, a[:1], component="alpha") == 1
    assert migrate(conn, b, component="beta") == 1
    assert migrate(conn, a, component="alpha") == 2
    assert migrate(conn, a, component="alpha") == 2  # idempotent
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"a1", "a2", "a2x", "b1"} <= names
    with pytest.raises(DatabaseError) as e:
        migrate(conn, a[:1], component="alpha")
    assert e.value.reason == "db.schema_newer"
    assert "alpha" in str(e.value)


def test_editing_a_shipped_migration_is_refused(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "g.db")
    migrate(conn, ["CREATE TABLE t (x INTEGER)"], component="t")
    with pytest.raises(DatabaseError) as e:
        migrate(conn, ["CREATE TABLE t (x INTEGER, y TEXT)"], component="t")
    assert e.value.reason == "db.migration_mismatch"


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "g.db")
    ok = "CREATE TABLE t (x INTEGER)"
    broken = "CREATE TABLE u (x INTEGER); INSERT INTO nowhere VALUES (1)"
    with pytest.raises(DatabaseError) as e:
        migrate(conn, [ok, broken], component="t")
    assert e.value.reason == "db.migration_failed"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "t" in names and "u" not in names
    assert migrate(conn, [ok], component="t") == 1
    assert not conn.in_transaction


def test_migrate_refuses_to_commit_a_callers_transaction(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "g.db")
    migrate(conn, ["CREATE TABLE t (x INTEGER)"], component="t")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError):
        migrate(conn, ["CREATE TABLE t (x INTEGER)", "CREATE TABLE v (x)"], component="t")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_transaction_commits_rolls_back_and_nests(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "g.db")
    migrate(conn, ["CREATE TABLE t (x INTEGER)"], component="t")
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        raise ZeroDivisionError
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (3)")
        with pytest.raises(KeyError), transaction(conn):
            conn.execute("INSERT INTO t VALUES (4)")
            raise KeyError
        conn.execute("INSERT INTO t VALUES (5)")
    assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 3, 5]
    assert not conn.in_transaction


def _acks(text: str) -> list[tuple[int, int]]:
    # Only complete lines count: a line cut by the kill was not an acknowledgement.
    lines = text.split("\n")[:-1]
    return [(int(a), int(b)) for a, b in (line.split() for line in lines)]


def test_sigkill_never_loses_an_acknowledged_commit(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    acked: list[tuple[int, int]] = []
    for kill in range(5):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()  # the writer is in its commit loop
        if not first.endswith("\n"):
            proc.kill()
            proc.wait()
            pytest.fail("writer died before its first commit: %s" % proc.stderr.read())
        time.sleep(rng.uniform(0.05, 0.3))  # a random kill moment, not a wait for an event
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        out = first + proc.stdout.read()
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, "seed %d, kill %d: %s" % (seed, kill, err)
        acked += _acks(out)

        conn = open_db(path)  # the dead writer's lock is gone with it
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        report = verify(conn)
        assert report.ok, "seed %d, kill %d: %s" % (seed, kill, report)
        samples = dict(conn.execute("SELECT id, audit_id FROM sample").fetchall())
        audited = {int(r.subject or 0): r.id for r in iter_records(conn, kind="test.sample")}
        # Atomic: every committed sample has its audit record and vice versa.
        assert samples == audited, "seed %d, kill %d" % (seed, kill)
        missing = [pair for pair in acked if samples.get(pair[0]) != pair[1]]
        assert not missing, "seed %d, kill %d: acknowledged but lost %s" % (seed, kill, missing)
        conn.close()
    assert len(acked) >= 5
    # The chain stays appendable after all the crashes.
    conn = open_db(path)
    AuditLog(conn).append("test.after", actor="pytest")
    conn.commit()
    assert verify(conn).ok
