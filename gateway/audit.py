"""Append-only, hash-chained audit log in the gateway's SQLite database (docs/audit.md).

Why a hash chain: the audit record is what a clinic shows when asked "why did chair 3's
pump stop at 10:42, and who overrode what". Each record's hash covers its own fields and
the previous record's hash, so editing, inserting, deleting or reordering any record
breaks every later link, and ``verify`` names the first broken record. Deleting records
at the end leaves no broken link, so the latest (id, hash) is also kept in ``audit_head``
(moved by a trigger in the same statement as the insert) and can be exported as an
:class:`Anchor` to be kept outside the database: someone with write access to the file
can rewrite the whole chain and its head consistently, and only an anchor stored
elsewhere catches that.

Why no commit in :meth:`AuditLog.append`: the record must be atomic with the data it
describes (a stored packet and its acceptance, a key revocation and its audit record).
The caller commits both together; if the caller rolls back, the record never existed.

Why the head is read per append rather than cached in memory: a cached head goes stale
when a caller rolls back a transaction that contained an append, and the next append
would then fork the chain. The read is one primary-key row, not a scan of the chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.db import migrate, transaction

HASH_DOMAIN = b"ivgw-audit-v1\n"
GENESIS_DOMAIN = b"ivgw-audit-genesis-v1\n"
ANCHOR_PREFIX = "ivgw-audit-anchor:v1"

# The "audit" schema for gateway.db.migrate. Append-only list: never edit a shipped entry.
AUDIT_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        chair TEXT,
        subject TEXT,
        data TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX audit_chair_at ON audit (chair, at);
    CREATE INDEX audit_kind_at ON audit (kind, at);
    CREATE TABLE audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO audit_meta (key, value) VALUES ('chain_id', lower(hex(randomblob(16))));
    CREATE TABLE audit_head (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        id INTEGER NOT NULL,
        hash TEXT
    );
    INSERT INTO audit_head (one, id, hash) VALUES (1, 0, NULL);
    CREATE TRIGGER audit_in_order BEFORE INSERT ON audit
    WHEN NEW.id IS NOT (SELECT id + 1 FROM audit_head WHERE one = 1)
    BEGIN SELECT RAISE(ABORT, 'audit: records must be appended in id order'); END;
    CREATE TRIGGER audit_moves_head AFTER INSERT ON audit
    BEGIN UPDATE audit_head SET id = NEW.id, hash = NEW.hash WHERE one = 1; END;
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
    CREATE TRIGGER audit_meta_no_update BEFORE UPDATE ON audit_meta
    BEGIN SELECT RAISE(ABORT, 'audit_meta is write-once'); END;
    CREATE TRIGGER audit_meta_no_delete BEFORE DELETE ON audit_meta
    BEGIN SELECT RAISE(ABORT, 'audit_meta is write-once'); END;
    CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
    BEGIN SELECT RAISE(ABORT, 'audit_head cannot be deleted'); END;
    """,
)


class Kinds:
    """The record kinds the gateway writes (docs/audit.md lists the data fields of each)."""

    GATEWAY_START = "gateway.start"
    GATEWAY_STOP = "gateway.stop"
    PACKET_REJECTED = "packet.rejected"
    INTERLOCK_TRIPPED = "interlock.tripped"
    INTERLOCK_ACKED = "interlock.acked"
    INTERLOCK_CLEARED = "interlock.cleared"
    PERMIT_GRANTED = "permit.granted"
    PERMIT_WITHHELD = "permit.withheld"
    PROGRAM_ACCEPTED = "program.accepted"
    PROGRAM_REJECTED = "program.rejected"
    OVERRIDE = "override"
    COMMAND_SENT = "command.sent"
    COMMAND_ACKED = "command.acked"
    COMMAND_FAILED = "command.failed"
    KEY_REGISTERED = "key.registered"
    KEY_ROTATED = "key.rotated"
    KEY_REVOKED = "key.revoked"
    ANCHOR_EXPORTED = "audit.anchor"


# VerifyReport.problem codes (stable: tools and docs/audit.md refer to them).
HASH_MISMATCH = "hash_mismatch"
PREV_HASH_MISMATCH = "prev_hash_mismatch"
ID_GAP = "id_gap"
TRUNCATED = "truncated"
HEAD_MISMATCH = "head_mismatch"
HEAD_MISSING = "head_missing"
MALFORMED = "malformed"
NOT_INITIALIZED = "not_initialized"
ANCHOR_CHAIN_MISMATCH = "anchor_chain_mismatch"
ANCHOR_MISMATCH = "anchor_mismatch"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHAIN_ID = re.compile(r"^[0-9a-f]{32}$")
_COLUMNS = "id, at, actor, kind, chair, subject, data, prev_hash, hash"


class AuditError(Exception):
    """A bad argument to the audit log or a bad anchor text; ``reason`` is a stable code.

    Codes: ``audit.bad_field``, ``audit.bad_data``, ``audit.bad_anchor``,
    ``audit.not_initialized``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: str
    actor: str
    kind: str
    chair: str | None
    subject: str | None
    data_json: str
    prev_hash: str
    hash: str

    @property
    def data(self) -> dict[str, Any]:
        """A fresh dict parsed from ``data_json`` (the stored, hashed canonical text)."""
        value: dict[str, Any] = json.loads(self.data_json)
        return value


@dataclass(frozen=True)
class Anchor:
    """The chain's head at one moment, to be stored outside the database.

    ``id == 0`` anchors an empty chain; its ``hash`` is then the genesis value.
    """

    chain_id: str
    id: int
    hash: str

    def to_text(self) -> str:
        return "%s:%s:%d:%s" % (ANCHOR_PREFIX, self.chain_id, self.id, self.hash)

    @classmethod
    def parse(cls, text: str) -> Anchor:
        parts = text.strip().split(":")
        if (
            len(parts) != 5
            or ":".join(parts[:2]) != ANCHOR_PREFIX
            or not _CHAIN_ID.match(parts[2])
            or not parts[3].isdigit()
            or not _HEX64.match(parts[4])
        ):
            raise AuditError(
                "audit.bad_anchor",
                "anchor text must look like %s:<32 hex chain id>:<id>:<64 hex hash>, got %r"
                % (ANCHOR_PREFIX, text[:120]),
            )
        return cls(chain_id=parts[2], id=int(parts[3]), hash=parts[4])


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records_checked: int
    first_bad_id: int | None
    problem: str | None
    message: str
    chain_id: str | None
    head_id: int
    head_hash: str | None


def canonical_json(data: Mapping[str, Any]) -> str:
    """The one JSON text of ``data``: sorted keys, no spaces, UTF-8 (no \\u escapes)."""
    try:
        text = json.dumps(
            dict(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        text.encode("utf-8")
    except (TypeError, ValueError) as e:  # UnicodeEncodeError is a ValueError
        raise AuditError("audit.bad_data", "data is not JSON-encodable: %s" % e) from None
    return text


def format_at(t: float) -> str:
    """Epoch seconds as UTC ISO-8601 with milliseconds, e.g. ``2025-01-31T09:15:02.125Z``.

    Fixed width and always UTC, so text order is time order (the time filters rely on it).
    """
    ms = int(round(t * 1000.0))
    secs, frac = divmod(ms, 1000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % frac


def _field(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    raw = value.encode("utf-8")
    return b"\x01" + len(raw).to_bytes(4, "big") + raw


def record_hash(
    id: int,
    at: str,
    actor: str,
    kind: str,
    chair: str | None,
    subject: str | None,
    data_json: str,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of the fields, each length-prefixed, NULL distinct from ``""``."""
    h = hashlib.sha256(HASH_DOMAIN)
    for value in (str(id), at, actor, kind, chair, subject, data_json, prev_hash):
        h.update(_field(value))
    return h.hexdigest()


def genesis_hash(chain_id: str) -> str:
    """The ``prev_hash`` of record 1: chains of two databases cannot be spliced together."""
    return hashlib.sha256(GENESIS_DOMAIN + _field(chain_id)).hexdigest()


def _chain_id(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT value FROM audit_meta WHERE key = 'chain_id'").fetchone()
    except sqlite3.OperationalError:  # no such table: the schema was never created
        return None
    return row[0] if row is not None and isinstance(row[0], str) else None


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise AuditError("audit.bad_field", "%s must be a non-empty string, got %r" % (name, value))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditError("audit.bad_field", "%s is not valid Unicode text" % name) from None


class AuditLog:
    """Writes audit records on ``conn`` (a connection from :func:`gateway.db.open_db`).

    Creates the schema on first use (component ``"audit"`` of :func:`gateway.db.migrate`,
    so construct it outside any transaction). ``clock`` returns wall-clock epoch seconds.
    """

    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        migrate(conn, AUDIT_MIGRATIONS, component="audit")
        chain_id = _chain_id(conn)
        if chain_id is None:
            raise AuditError("audit.not_initialized", "the audit_meta chain_id row is missing")
        self._conn = conn
        self._clock = clock
        self.chain_id = chain_id
        self._genesis = genesis_hash(chain_id)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """``with audit.transaction(): store(...); audit.append(...)`` commits both or neither."""
        return transaction(self._conn)

    def append(
        self,
        kind: str,
        *,
        actor: str,
        chair: str | None = None,
        subject: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Add one record in the caller's transaction; the caller commits (never done here).

        If no transaction is open, one is begun (``BEGIN IMMEDIATE``) and left open for the
        caller to commit together with the data the record describes. The returned record
        exists only once that commit succeeds.
        """
        _check_text("kind", kind)
        _check_text("actor", actor)
        if chair is not None:
            _check_text("chair", chair)
        if subject is not None:
            _check_text("subject", subject)
        data_json = canonical_json(data if data is not None else {})
        at = format_at(self._clock())
        conn = self._conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")  # the head read and the insert must be atomic
        head_id, head_hash = conn.execute(
            "SELECT id, hash FROM audit_head WHERE one = 1"
        ).fetchone()
        prev = head_hash if head_id else self._genesis
        rec_id = int(head_id) + 1
        digest = record_hash(rec_id, at, actor, kind, chair, subject, data_json, prev)
        conn.execute(
            "INSERT INTO audit (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)" % _COLUMNS,
            (rec_id, at, actor, kind, chair, subject, data_json, prev, digest),
        )
        return AuditRecord(rec_id, at, actor, kind, chair, subject, data_json, prev, digest)

    def verify(self, *, anchors: Sequence[Anchor] = ()) -> VerifyReport:
        return verify(self._conn, anchors=anchors)

    def export_anchor(self) -> Anchor:
        return export_anchor(self._conn)

    def iter_records(
        self,
        *,
        chair: str | None = None,
        kind: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> Iterator[AuditRecord]:
        return iter_records(
            self._conn,
            chair=chair,
            kind=kind,
            since=since,
            until=until,
            after_id=after_id,
            limit=limit,
        )


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so the records and the head come from the same commit."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.rollback()


def export_anchor(conn: sqlite3.Connection) -> Anchor:
    """The current head as an :class:`Anchor`, for storing outside the database.

    Print or publish it regularly (session report, MQTT status); ``verify(anchors=...)``
    later proves the chain up to that record was not rewritten. It vouches for nothing by
    itself: run :func:`verify` before trusting the chain it names.
    """
    with _snapshot(conn):
        chain_id = _chain_id(conn)
        row = (
            conn.execute("SELECT id, hash FROM audit_head WHERE one = 1").fetchone()
            if chain_id is not None
            else None
        )
    if chain_id is None or row is None:
        raise AuditError("audit.not_initialized", "this database has no audit chain")
    head_id, head_hash = int(row[0]), row[1]
    return Anchor(chain_id, head_id, str(head_hash) if head_id else genesis_hash(chain_id))


def verify(conn: sqlite3.Connection, *, anchors: Sequence[Anchor] = ()) -> VerifyReport:
    """Re-hash the whole chain; check ids, links, the head and any external anchors.

    Works on a read-only connection; reads one snapshot. Reports the first problem found
    in id order (``first_bad_id``: the first record whose integrity fails or is missing).
    """
    with _snapshot(conn):
        return _verify(conn, anchors)


def _verify(conn: sqlite3.Connection, anchors: Sequence[Anchor]) -> VerifyReport:
    chain_id = _chain_id(conn)
    if chain_id is None:
        return _report(False, 0, None, NOT_INITIALIZED, "no audit chain in this database", None)
    head_row = conn.execute("SELECT id, hash FROM audit_head WHERE one = 1").fetchone()
    head_id = head_row[0] if head_row is not None else 0
    head_hash = head_row[1] if head_row is not None else None
    if not isinstance(head_id, int) or not (head_hash is None or isinstance(head_hash, str)):
        return _report(False, 0, None, MALFORMED, "the audit_head row is malformed", chain_id)

    def bad(checked: int, first: int | None, problem: str, message: str) -> VerifyReport:
        return _report(False, checked, first, problem, message, chain_id, head_id, head_hash)

    genesis = genesis_hash(chain_id)
    by_id: dict[int, Anchor] = {}
    for a in anchors:
        if a.chain_id != chain_id:
            return bad(
                0,
                None,
                ANCHOR_CHAIN_MISMATCH,
                "an anchor of chain %s does not belong to this database (chain %s)"
                % (a.chain_id, chain_id),
            )
        if a.id == 0 and a.hash != genesis:
            return bad(0, None, ANCHOR_MISMATCH, "the anchor's genesis hash does not match")
        if a.id > 0:
            by_id[a.id] = a

    expected, prev, checked = 1, genesis, 0
    for row in conn.execute("SELECT %s FROM audit ORDER BY id" % _COLUMNS):
        rid = row[0]
        if rid != expected:
            if rid > expected:
                return bad(
                    checked,
                    expected,
                    ID_GAP,
                    "record %d is missing (the next record is %d)" % (expected, rid),
                )
            return bad(checked, rid, MALFORMED, "record id %d is out of sequence" % rid)
        if not _well_typed(row):
            return bad(checked, rid, MALFORMED, "record %d has a field of the wrong type" % rid)
        if row[7] != prev:
            return bad(
                checked,
                rid,
                PREV_HASH_MISMATCH,
                "record %d does not link to record %d (inserted, removed, reordered or "
                "spliced)" % (rid, rid - 1),
            )
        if record_hash(*row[:8]) != row[8]:
            return bad(checked, rid, HASH_MISMATCH, "record %d was altered" % rid)
        anchor = by_id.get(rid)
        if anchor is not None and anchor.hash != row[8]:
            return bad(
                checked,
                rid,
                ANCHOR_MISMATCH,
                "record %d differs from the external anchor: the chain up to it was rewritten"
                % rid,
            )
        prev = row[8]
        checked += 1
        expected += 1

    last_id = expected - 1
    if head_row is None:
        return bad(checked, None, HEAD_MISSING, "the audit_head row is missing")
    if head_id > last_id:
        return bad(
            checked,
            last_id + 1,
            TRUNCATED,
            "the head names record %d but the chain ends at %d: records were deleted"
            % (head_id, last_id),
        )
    if head_id < last_id:
        return bad(
            checked,
            head_id + 1,
            HEAD_MISMATCH,
            "records after %d were added without moving the head" % head_id,
        )
    if head_hash != (prev if last_id else None):
        return bad(
            checked, last_id, HEAD_MISMATCH, "the head hash does not match record %d" % last_id
        )
    beyond = [i for i in by_id if i > last_id]
    if beyond:
        return bad(
            checked,
            last_id + 1,
            TRUNCATED,
            "an external anchor names record %d but the chain ends at %d: records were "
            "deleted and the head rewritten" % (min(beyond), last_id),
        )
    return _report(
        True,
        checked,
        None,
        None,
        "%d records verified, head %d" % (checked, last_id),
        chain_id,
        head_id,
        head_hash,
    )


def _report(
    ok: bool,
    checked: int,
    first: int | None,
    problem: str | None,
    message: str,
    chain_id: str | None,
    head_id: int = 0,
    head_hash: str | None = None,
) -> VerifyReport:
    return VerifyReport(ok, checked, first, problem, message, chain_id, head_id, head_hash)


def _well_typed(row: tuple[Any, ...]) -> bool:
    required = (row[1], row[2], row[3], row[6], row[7], row[8])
    optional = (row[4], row[5])
    return all(isinstance(v, str) for v in required) and all(
        v is None or isinstance(v, str) for v in optional
    )


def _at_bound(name: str, value: datetime | float) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise AuditError("audit.bad_field", "%s must be a timezone-aware datetime" % name)
        return format_at(value.timestamp())
    return format_at(float(value))


def iter_records(
    conn: sqlite3.Connection,
    *,
    chair: str | None = None,
    kind: str | None = None,
    since: datetime | float | None = None,
    until: datetime | float | None = None,
    after_id: int = 0,
    limit: int | None = None,
) -> Iterator[AuditRecord]:
    """Records in id order, filtered; ``since`` inclusive, ``until`` exclusive.

    Times are epoch seconds or aware datetimes compared with ``at`` (the wall clock when
    written: a clock step can make ``at`` go backwards while ids go forwards). ``after_id``
    pages and follows (``ivgw events --follow``). Nothing is verified here: run
    :func:`verify` for that.
    """
    where = ["id > ?"]
    args: list[object] = [after_id]
    if chair is not None:
        where.append("chair = ?")
        args.append(chair)
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if since is not None:
        where.append("at >= ?")
        args.append(_at_bound("since", since))
    if until is not None:
        where.append("at < ?")
        args.append(_at_bound("until", until))
    sql = "SELECT %s FROM audit WHERE %s ORDER BY id" % (_COLUMNS, " AND ".join(where))
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    for row in conn.execute(sql, args):
        yield AuditRecord(*row)
