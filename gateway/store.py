"""The gateway's records in SQLite: nodes and keys, sessions, accepted packets, commands,
acks, interlock trips, rejection counters, and the state a restart must resume from.

Writes happen in the ingest loop's transactions (``db.transaction``), together with the
audit records that describe them, so a record and its audit entry commit or vanish
together. Reads for the CLI open the same file read-only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway import db
from gateway.verify import NodeKey
from protocol import cbor, cose

MIGRATIONS = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        chair TEXT NOT NULL,
        alg INTEGER NOT NULL,
        public_key BLOB NOT NULL,
        key_version INTEGER NOT NULL DEFAULT 1,
        registered_at REAL NOT NULL,
        revoked_at REAL,
        UNIQUE (site, chair)
    );
    CREATE TABLE replay (
        node_id TEXT PRIMARY KEY REFERENCES nodes(node_id),
        boot INTEGER NOT NULL, top INTEGER NOT NULL, bitmap TEXT NOT NULL,
        prev_boot INTEGER NOT NULL DEFAULT -1, prev_top INTEGER NOT NULL DEFAULT -1,
        prev_bitmap TEXT NOT NULL DEFAULT '0',
        gaps INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL REFERENCES nodes(node_id),
        site TEXT NOT NULL, chair TEXT NOT NULL,
        care_area TEXT NOT NULL, drug TEXT NOT NULL,
        concentration_mg_ml TEXT NOT NULL, weight_kg TEXT NOT NULL,
        dose_rate TEXT NOT NULL, dosing_unit TEXT NOT NULL, duration_min TEXT NOT NULL,
        rate_ul_h INTEGER NOT NULL, vtbi_ul INTEGER NOT NULL, diameter_cmm INTEGER NOT NULL,
        library_version TEXT NOT NULL, library_hash TEXT NOT NULL,
        override_operator TEXT, override_reason TEXT,
        operator TEXT NOT NULL,
        state TEXT NOT NULL,  -- programmed | running | stopped | ended
        created_at REAL NOT NULL, started_at REAL, ended_at REAL
    );
    CREATE INDEX sessions_chair ON sessions(site, chair, id);
    CREATE TABLE packets (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        boot INTEGER NOT NULL, seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        received_at REAL NOT NULL,
        session_id INTEGER REFERENCES sessions(id),
        body TEXT NOT NULL,
        UNIQUE (node_id, boot, seq)
    );
    CREATE INDEX packets_session ON packets(session_id, id);
    CREATE TABLE commands (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
        kind TEXT NOT NULL, args TEXT NOT NULL,
        session_id INTEGER REFERENCES sessions(id),
        operator TEXT,
        sent_at REAL NOT NULL,
        ack_result INTEGER, ack_reason TEXT, acked_at REAL,
        UNIQUE (node_id, epoch, seq)
    );
    CREATE TABLE trips (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL, chair TEXT NOT NULL,
        session_id INTEGER REFERENCES sessions(id),
        rule TEXT NOT NULL, cause TEXT NOT NULL,
        breach_at REAL NOT NULL, tripped_at REAL NOT NULL,
        stop_sent_at REAL, latency_ms REAL,
        acked_by TEXT, ack_reason TEXT, acked_at REAL
    );
    CREATE TABLE interlock_state (
        site TEXT NOT NULL, chair TEXT NOT NULL, snapshot TEXT NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (site, chair)
    );
    CREATE TABLE rejections (
        node_id TEXT NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL,
        last_at REAL NOT NULL, PRIMARY KEY (node_id, reason)
    );
    """,
    # 2: packets keep the COSE_Sign1 exactly as the node signed it (``signed``) instead of
    # a JSON rendering of its payload: anyone holding the node's public key can re-verify
    # a stored packet, and storing costs no conversion on the ingest path. ``body`` stays
    # for rows written before this version.
    """
    CREATE TABLE packets_v2 (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        boot INTEGER NOT NULL, seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        received_at REAL NOT NULL,
        session_id INTEGER REFERENCES sessions(id),
        body TEXT,
        signed BLOB,
        CHECK ((body IS NULL) != (signed IS NULL)),
        UNIQUE (node_id, boot, seq)
    );
    INSERT INTO packets_v2 (id, node_id, boot, seq, kind, received_at, session_id, body)
        SELECT id, node_id, boot, seq, kind, received_at, session_id, body FROM packets;
    DROP TABLE packets;
    ALTER TABLE packets_v2 RENAME TO packets;
    CREATE INDEX packets_session ON packets(session_id, id);
    """,
)


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    site: str
    chair: str
    alg: int
    public_key: bytes
    key_version: int
    registered_at: float
    revoked_at: float | None

    @property
    def key(self) -> NodeKey:
        return NodeKey(self.node_id, self.alg, self.public_key, self.revoked_at is not None)

    @property
    def chair_id(self) -> str:
        return "%s/%s" % (self.site, self.chair)


def _node(row: tuple) -> NodeRecord:
    return NodeRecord(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], row[7])


_NODE_COLS = "node_id, site, chair, alg, public_key, key_version, registered_at, revoked_at"


class Store:
    def __init__(self, conn: sqlite3.Connection):
        db.migrate(conn, MIGRATIONS, component="gateway")
        self.conn = conn

    # --- meta ---------------------------------------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def next_epoch(self) -> int:
        """The gateway's command epoch: +1 at every start, so command (epoch, seq) never
        repeats and a node can tell a restarted gateway's commands from replays."""
        with db.transaction(self.conn):
            epoch = int(self.meta("epoch", "0") or 0) + 1
            self.set_meta("epoch", str(epoch))
        return epoch

    # --- nodes --------------------------------------------------------------------------
    def nodes(self) -> list[NodeRecord]:
        return [_node(r) for r in self.conn.execute(
            "SELECT %s FROM nodes ORDER BY site, chair" % _NODE_COLS)]

    def node(self, node_id: str) -> NodeRecord | None:
        row = self.conn.execute("SELECT %s FROM nodes WHERE node_id = ?" % _NODE_COLS,
                                (node_id,)).fetchone()
        return _node(row) if row else None

    def node_for_chair(self, site: str, chair: str) -> NodeRecord | None:
        row = self.conn.execute("SELECT %s FROM nodes WHERE site = ? AND chair = ?" % _NODE_COLS,
                                (site, chair)).fetchone()
        return _node(row) if row else None

    def register_node(self, node_id: str, site: str, chair: str, alg: int, public: bytes,
                      now: float) -> NodeRecord:
        self.conn.execute(
            "INSERT INTO nodes (node_id, site, chair, alg, public_key, registered_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (node_id, site, chair, alg, public, now))
        rec = self.node(node_id)
        assert rec is not None
        return rec

    def rotate_key(self, node_id: str, alg: int, public: bytes, now: float) -> None:
        self.conn.execute(
            "UPDATE nodes SET alg = ?, public_key = ?, key_version = key_version + 1, "
            "registered_at = ?, revoked_at = NULL WHERE node_id = ?",
            (alg, public, now, node_id))

    def revoke(self, node_id: str, now: float) -> None:
        self.conn.execute("UPDATE nodes SET revoked_at = ? WHERE node_id = ?", (now, node_id))

    # --- replay windows -------------------------------------------------------------------
    def replay_states(self) -> dict[str, tuple]:
        return {r[0]: tuple(r[1:]) for r in self.conn.execute(
            "SELECT node_id, boot, top, bitmap, prev_boot, prev_top, prev_bitmap, gaps "
            "FROM replay")}

    def save_replay(self, node_id: str, cur: tuple, prev: tuple, gaps: int) -> None:
        self.conn.execute(
            "INSERT INTO replay (node_id, boot, top, bitmap, prev_boot, prev_top, prev_bitmap, "
            "gaps) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET "
            "boot = excluded.boot, top = excluded.top, bitmap = excluded.bitmap, "
            "prev_boot = excluded.prev_boot, prev_top = excluded.prev_top, "
            "prev_bitmap = excluded.prev_bitmap, gaps = excluded.gaps",
            (node_id, cur[0], cur[1], str(cur[2]), prev[0], prev[1], str(prev[2]), gaps))

    # --- packets ------------------------------------------------------------------------
    def add_packet(self, node_id: str, boot: int, seq: int, kind: str, received_at: float,
                   session_id: int | None, signed: bytes) -> None:
        """``signed``: the verified COSE_Sign1 as received (its payload is the message)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO packets (node_id, boot, seq, kind, received_at, session_id, "
            "signed) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (node_id, boot, seq, kind, received_at, session_id, signed))

    def packets(self, session_id: int, kind: str | None = None) -> Iterator[tuple]:
        """(node, boot, seq, kind, received_at, body) in arrival order; ``body`` is the
        message as JSON-shaped data (string keys, bytes as hex), see ``packet_body``."""
        q = ("SELECT node_id, boot, seq, kind, received_at, body, signed FROM packets "
             "WHERE session_id = ?")
        args: list[Any] = [session_id]
        if kind:
            q += " AND kind = ?"
            args.append(kind)
        for r in self.conn.execute(q + " ORDER BY id", args):
            yield r[0], r[1], r[2], r[3], r[4], packet_body(r[5], r[6])

    def count_packets(self, node_id: str | None = None, kind: str | None = None) -> int:
        q, args = "SELECT COUNT(*) FROM packets WHERE 1=1", []
        if node_id:
            q += " AND node_id = ?"
            args.append(node_id)
        if kind:
            q += " AND kind = ?"
            args.append(kind)
        return int(self.conn.execute(q, args).fetchone()[0])

    # --- rejections ---------------------------------------------------------------------
    def count_rejection(self, node_id: str, reason: str, n: int, now: float) -> None:
        self.conn.execute(
            "INSERT INTO rejections (node_id, reason, count, last_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(node_id, reason) DO UPDATE SET count = count + excluded.count, "
            "last_at = excluded.last_at", (node_id, reason, n, now))

    def rejections(self) -> list[tuple[str, str, int, float]]:
        return [tuple(r) for r in self.conn.execute(  # type: ignore[misc]
            "SELECT node_id, reason, count, last_at FROM rejections ORDER BY node_id, reason")]

    # --- sessions -----------------------------------------------------------------------
    def add_session(self, **f: Any) -> int:
        cols = ", ".join(f)
        qs = ", ".join("?" for _ in f)
        cur = self.conn.execute("INSERT INTO sessions (%s) VALUES (%s)" % (cols, qs),
                                [str(v) if _decimalish(v) else v for v in f.values()])
        return int(cur.lastrowid or 0)

    def update_session(self, session_id: int, **f: Any) -> None:
        sets = ", ".join("%s = ?" % k for k in f)
        self.conn.execute("UPDATE sessions SET %s WHERE id = ?" % sets, [*f.values(), session_id])

    def session(self, session_id: int) -> dict | None:
        cur = self.conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def sessions(self, site: str | None = None, chair: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM sessions WHERE 1=1", []
        if site:
            q += " AND site = ?"
            args.append(site)
        if chair:
            q += " AND chair = ?"
            args.append(chair)
        cur = self.conn.execute(q + " ORDER BY id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    def open_session(self, site: str, chair: str) -> dict | None:
        cur = self.conn.execute(
            "SELECT * FROM sessions WHERE site = ? AND chair = ? AND state != 'ended' "
            "ORDER BY id DESC LIMIT 1", (site, chair))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None

    # --- commands -----------------------------------------------------------------------
    def add_command(self, node_id: str, epoch: int, seq: int, kind: str, args: dict,
                    session_id: int | None, operator: str | None, now: float) -> None:
        self.conn.execute(
            "INSERT INTO commands (node_id, epoch, seq, kind, args, session_id, operator, sent_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (node_id, epoch, seq, kind, json.dumps(_jsonable(args)), session_id, operator, now))

    def ack_command(self, node_id: str, epoch: int, seq: int, result: int, reason: str,
                    now: float) -> str | None:
        row = self.conn.execute(
            "SELECT kind FROM commands WHERE node_id = ? AND epoch = ? AND seq = ?",
            (node_id, epoch, seq)).fetchone()
        self.conn.execute(
            "UPDATE commands SET ack_result = ?, ack_reason = ?, acked_at = ? "
            "WHERE node_id = ? AND epoch = ? AND seq = ? AND ack_result IS NULL",
            (result, reason, now, node_id, epoch, seq))
        return row[0] if row else None

    def commands(self, session_id: int) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM commands WHERE session_id = ? ORDER BY id",
                                (session_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    # --- trips and interlock state --------------------------------------------------------
    def add_trip(self, site: str, chair: str, session_id: int | None, rule: str, cause: str,
                 breach_at: float, tripped_at: float) -> int:
        cur = self.conn.execute(
            "INSERT INTO trips (site, chair, session_id, rule, cause, breach_at, tripped_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (site, chair, session_id, rule, cause, breach_at, tripped_at))
        return int(cur.lastrowid or 0)

    def trip_stop_sent(self, trip_id: int, sent_at: float, latency_ms: float) -> None:
        self.conn.execute("UPDATE trips SET stop_sent_at = ?, latency_ms = ? WHERE id = ?",
                          (sent_at, latency_ms, trip_id))

    def ack_trips(self, site: str, chair: str, operator: str, reason: str, now: float) -> None:
        self.conn.execute(
            "UPDATE trips SET acked_by = ?, ack_reason = ?, acked_at = ? "
            "WHERE site = ? AND chair = ? AND acked_at IS NULL",
            (operator, reason, now, site, chair))

    def trips(self, session_id: int | None = None) -> list[dict]:
        q, args = "SELECT * FROM trips", []
        if session_id is not None:
            q += " WHERE session_id = ?"
            args.append(session_id)
        cur = self.conn.execute(q + " ORDER BY id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    def save_interlock(self, site: str, chair: str, snapshot: dict, now: float) -> None:
        self.conn.execute(
            "INSERT INTO interlock_state (site, chair, snapshot, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(site, chair) DO UPDATE SET snapshot = excluded.snapshot, "
            "updated_at = excluded.updated_at", (site, chair, json.dumps(snapshot), now))

    def interlock_snapshots(self) -> dict[tuple[str, str], dict]:
        return {(r[0], r[1]): json.loads(r[2]) for r in self.conn.execute(
            "SELECT site, chair, snapshot FROM interlock_state")}


def packet_body(body: str | None, signed: bytes | None) -> dict:
    """A stored packet's message as JSON-shaped data (string keys, bytes as hex), from
    either column: ``signed`` (the COSE_Sign1, current rows) or ``body`` (older rows).

    Stored packets were verified before they were stored, so the payload is decoded here
    without checking the signature again (``ivgw`` commands that must prove a packet's
    origin verify it against the node's key)."""
    if signed is not None:
        return _jsonable(cbor.loads(cose.decode(bytes(signed)).payload))
    if body is None:
        raise ValueError("packet row has neither a signed packet nor a body")
    return json.loads(body)


def _decimalish(v: Any) -> bool:
    return type(v).__name__ == "Decimal"


def _jsonable(obj: Any) -> Any:
    """CBOR maps have integer keys; JSON keys are strings. Bytes become hex."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return obj.hex()
    return obj
