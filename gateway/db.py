"""Opening the gateway's SQLite database durably, and a tiny forward-only migration runner.

Why these settings:

* ``journal_mode=WAL``: the CLI (``ivgw events``, ``ivgw audit verify``) reads while the
  gateway writes; in WAL mode readers never block the writer nor see half a transaction.
* ``synchronous=FULL`` (not NORMAL): the gateway PUBACKs an MQTT message, and the node then
  drops it from its store-and-forward buffer, only after the transaction holding it has
  committed. With NORMAL, a WAL commit is not fsynced, so a power cut right after the ack
  can roll back a transaction the node believes is safe, and the packet (or the audit
  record of a rejection) is gone from both sides. FULL fsyncs the WAL on every commit: a
  committed transaction survives power loss. ``fullfsync`` makes macOS flush the drive cache
  too (no effect on Linux).
* ``foreign_keys=ON``: SQLite leaves them off by default, per connection.
* ``busy_timeout``: a CLI reader's checkpoint or a short admin write waits instead of
  failing at once.
* A lock file ``<db>.lock`` (``flock``) held for the connection's lifetime: two gateways on
  one database would both grant permits and interleave audit chains. The kernel releases a
  ``flock`` when its process dies, even by SIGKILL, so a crash never leaves a stale lock.
  SQLite's own locks are not used for this: they last one transaction, not a lifetime.
  The lock file stays on disk after close; only the ``flock`` on it means anything.

Errors a user can cause (wrong path, permissions, another gateway running, a file that is
not a database, a database from newer software) raise :class:`DatabaseError` with a
stable ``reason`` code and a one-sentence message naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from urllib.parse import quote

# Layout of the migration bookkeeping itself (PRAGMA user_version). Bumped only if the
# ``schema_migrations`` table changes shape; software that finds a higher number refuses to
# touch the database rather than guess.
FORMAT_VERSION = 1

DEFAULT_BUSY_TIMEOUT_MS = 5000

_COMPONENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class DatabaseError(Exception):
    """The gateway database cannot be opened or migrated; ``reason`` is a stable code.

    Codes: ``db.dir_missing``, ``db.not_found``, ``db.is_directory``, ``db.not_writable``,
    ``db.locked``, ``db.not_a_database``, ``db.no_wal``, ``db.schema_newer``,
    ``db.migration_mismatch``, ``db.migration_failed``, ``db.error``.
    """

    def __init__(self, path: str, reason: str, message: str) -> None:
        super().__init__("%s: %s" % (path, message))
        self.path = path
        self.reason = reason
        self.message = message


class _GatewayConnection(sqlite3.Connection):
    """A connection that owns the gateway lock file; closing it releases the lock."""

    _ivgw_lock: _LockFile | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            lock, self._ivgw_lock = self._ivgw_lock, None
            if lock is not None:
                lock.release()


class _LockFile:
    def __init__(self, path: str, db_path: str) -> None:
        self.path = path
        try:
            self._f = open(path, "a+", encoding="ascii")
        except OSError as e:
            raise DatabaseError(
                db_path, "db.not_writable", "cannot open the lock file %s (%s)" % (path, e.strerror)
            ) from None
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.seek(0)
            holder = self._f.read().strip() or "unknown"
            self._f.close()
            raise DatabaseError(
                db_path,
                "db.locked",
                "the database is in use by another gateway (pid %s holds %s)" % (holder, path),
            ) from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(str(os.getpid()))
        self._f.flush()

    def release(self) -> None:
        if not self._f.closed:
            self._f.close()  # closing the descriptor drops the flock


def open_db(
    path: str | os.PathLike[str],
    *,
    readonly: bool = False,
    gateway_lock: bool = True,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
) -> sqlite3.Connection:
    """Open (creating if needed) the gateway database with the durability settings above.

    ``readonly=True`` is for the CLI's reports: the file must exist, nothing is written,
    no lock is taken. ``gateway_lock=False`` is for short admin writes by the CLI (key
    registration) that must coexist with a running gateway.

    The connection keeps Python's default transaction handling (an implicit BEGIN before
    the first INSERT/UPDATE/DELETE, ended by ``commit()`` or ``with conn:``); use
    :func:`transaction` for an explicit ``BEGIN IMMEDIATE`` block.
    """
    p = os.fspath(path)
    if readonly:
        return _open_readonly(p, busy_timeout_ms)
    parent = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(parent):
        raise DatabaseError(p, "db.dir_missing", "the directory %s does not exist" % parent)
    if os.path.isdir(p):
        raise DatabaseError(p, "db.is_directory", "this is a directory, not a database file")
    if os.path.exists(p) and not os.access(p, os.R_OK | os.W_OK):
        raise DatabaseError(p, "db.not_writable", "the database file is not readable and writable")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DatabaseError(
            p,
            "db.not_writable",
            "the directory %s is not writable (SQLite creates its -wal and -shm files there)"
            % parent,
        )
    lock = _LockFile(p + ".lock", p) if gateway_lock else None
    try:
        conn = sqlite3.connect(p, timeout=busy_timeout_ms / 1000.0, factory=_GatewayConnection)
    except sqlite3.Error as e:
        if lock is not None:
            lock.release()
        raise _translate(p, e) from None
    conn._ivgw_lock = lock
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseError(
                p, "db.no_wal", "SQLite refused WAL journal mode (got %r); use a local disk" % mode
            )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA fullfsync=ON")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=%d" % int(busy_timeout_ms))
        _ensure_bookkeeping(conn, p)
    except sqlite3.Error as e:
        conn.close()
        raise _translate(p, e) from None
    except DatabaseError:
        conn.close()
        raise
    return conn


def _open_readonly(p: str, busy_timeout_ms: int) -> sqlite3.Connection:
    if not os.path.isfile(p):
        raise DatabaseError(p, "db.not_found", "no database file at this path")
    uri = "file:%s?mode=ro" % quote(os.path.abspath(p))
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000.0)
    except sqlite3.Error as e:
        raise _translate(p, e) from None
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA foreign_keys=ON")
        _check_format(conn, p)
    except sqlite3.Error as e:
        conn.close()
        raise _translate(p, e) from None
    except DatabaseError:
        conn.close()
        raise
    return conn


def _translate(p: str, e: sqlite3.Error) -> DatabaseError:
    text = str(e)
    low = text.lower()
    if "not a database" in low or "malformed" in low:
        return DatabaseError(p, "db.not_a_database", "the file is not a valid SQLite database")
    if "locked" in low or "busy" in low:
        return DatabaseError(p, "db.locked", "the database is locked by another process")
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return DatabaseError(p, "db.not_writable", "SQLite cannot open or write it (%s)" % text)
    return DatabaseError(p, "db.error", "SQLite error: %s" % text)


def _check_format(conn: sqlite3.Connection, p: str) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > FORMAT_VERSION:
        raise DatabaseError(
            p,
            "db.schema_newer",
            "the database format is version %d but this software knows only up to %d; "
            "upgrade the gateway software" % (version, FORMAT_VERSION),
        )
    return version


def _ensure_bookkeeping(conn: sqlite3.Connection, p: str) -> None:
    if _check_format(conn, p) == FORMAT_VERSION:
        return
    conn.executescript(
        """
        BEGIN IMMEDIATE;
        CREATE TABLE IF NOT EXISTS schema_migrations (
            component TEXT NOT NULL,
            version INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', 'now')),
            PRIMARY KEY (component, version)
        );
        PRAGMA user_version = %d;
        COMMIT;
        """
        % FORMAT_VERSION
    )


def db_path(conn: sqlite3.Connection) -> str:
    """The file behind ``conn`` (for messages); ``:memory:`` for an in-memory database."""
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(file) or ":memory:"
    return "?"


def migrate(conn: sqlite3.Connection, migrations: Sequence[str], *, component: str = "main") -> int:
    """Apply the not-yet-applied ``migrations`` of ``component``, in order; return its version.

    Each module owns a ``component`` name and an append-only list of SQL scripts: version
    ``n`` means ``migrations[:n]`` have run. Versions are kept per component in
    ``schema_migrations`` (``PRAGMA user_version`` is one integer for the whole file, so two
    modules sharing it would silently skip each other's scripts). The SHA-256 of every
    applied script is recorded and compared on each start, so editing a shipped migration,
    or two modules using the same component name, fails loudly instead of leaving the
    schema different from what the code believes. Each script runs in its own transaction,
    together with its bookkeeping row: a crash mid-migration leaves the previous version.
    """
    p = db_path(conn)
    if not _COMPONENT_RE.match(component):
        raise ValueError("component must match %s, got %r" % (_COMPONENT_RE.pattern, component))
    if conn.in_transaction:
        raise RuntimeError("migrate() must not run inside a transaction (it commits)")
    try:
        _ensure_bookkeeping(conn, p)  # a no-op after open_db; here for other connections
    except sqlite3.Error as e:
        raise _translate(p, e) from None
    applied = {
        int(v): str(h)
        for v, h in conn.execute(
            "SELECT version, sha256 FROM schema_migrations WHERE component = ?", (component,)
        )
    }
    current = max(applied, default=0)
    if current > len(migrations):
        raise DatabaseError(
            p,
            "db.schema_newer",
            "schema %r is at version %d but this software knows only %d; "
            "upgrade the gateway software" % (component, current, len(migrations)),
        )
    for version in range(1, current + 1):
        if applied.get(version) != _sha256(migrations[version - 1]):
            raise DatabaseError(
                p,
                "db.migration_mismatch",
                "migration %d of schema %r differs from the one applied to this database"
                % (version, component),
            )
    for version in range(current + 1, len(migrations) + 1):
        sql = migrations[version - 1]
        script = (
            "BEGIN IMMEDIATE;\n%s\n;\n"
            "INSERT INTO schema_migrations (component, version, sha256) "
            "VALUES ('%s', %d, '%s');\nCOMMIT;\n" % (sql, component, version, _sha256(sql))
        )
        try:
            conn.executescript(script)
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.rollback()
            raise DatabaseError(
                p,
                "db.migration_failed",
                "migration %d of schema %r failed: %s" % (version, component, e),
            ) from None
    return len(migrations)


def _sha256(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` if the block raises.

    IMMEDIATE takes the write lock up front, so a block that reads then writes cannot fail
    halfway with SQLITE_BUSY. Nested use becomes a SAVEPOINT: the inner block rolls back on
    its own, the outer one still decides the commit.
    """
    if conn.in_transaction:
        # Same-named savepoints nest: ROLLBACK TO / RELEASE act on the innermost one.
        conn.execute("SAVEPOINT ivgw_tx")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO ivgw_tx")
            conn.execute("RELEASE ivgw_tx")
            raise
        conn.execute("RELEASE ivgw_tx")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
