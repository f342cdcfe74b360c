"""gateway/audit.py: appends, transactions, tamper detection by direct SQL, anchors, canonical
JSON, and the independent verification script printed in docs/audit.md."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import (
    ANCHOR_CHAIN_MISMATCH,
    ANCHOR_MISMATCH,
    HASH_MISMATCH,
    HEAD_MISMATCH,
    HEAD_MISSING,
    ID_GAP,
    PREV_HASH_MISMATCH,
    TRUNCATED,
    Anchor,
    AuditError,
    AuditLog,
    Kinds,
    canonical_json,
    genesis_hash,
    iter_records,
    record_hash,
    verify,
)
from gateway.db import open_db

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class FakeClock:
    def __init__(self, start: float = T0, step: float = 0.25) -> None:
        self.t = start
        self.step = step

    def __call__(self) -> float:
        t = self.t
        self.t += self.step
        return t


@dataclass
class Log:
    path: Path
    conn: sqlite3.Connection
    audit: AuditLog


def _fill(audit: AuditLog, n: int) -> None:
    for i in range(n):
        with audit.transaction():
            audit.append(
                Kinds.PACKET_REJECTED if i % 2 else Kinds.PERMIT_GRANTED,
                actor="gateway",
                chair=None if i % 3 == 1 else "chair-%d" % (i % 2),
                subject="node-%d" % i,
                data={"reason": "cose.bad_signature", "i": i, "note": "dose ≤ limit"},
            )


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    path = tmp_path / "gw.db"
    conn = open_db(path)
    audit = AuditLog(conn, clock=FakeClock())
    yield Log(path, conn, audit)
    conn.close()


def _tamper(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """What an attacker with file access does: drop the guard triggers, then plain SQL."""
    raw = sqlite3.connect(path)
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute('DROP TRIGGER "%s"' % name)
    for sql, args in statements:
        raw.execute(sql, args)
    raw.commit()
    raw.close()


def _rows(path: Path) -> dict[int, tuple[Any, ...]]:
    raw = sqlite3.connect(path)
    rows = {
        r[0]: r
        for r in raw.execute(
            "SELECT id, at, actor, kind, chair, subject, data, prev_hash, hash FROM audit"
        )
    }
    raw.close()
    return rows


# --- happy path -------------------------------------------------------------------------


def test_append_returns_the_stored_record_and_verifies(log: Log) -> None:
    with log.audit.transaction():
        rec = log.audit.append(
            Kinds.INTERLOCK_TRIPPED,
            actor="gateway",
            chair="c3",
            subject="spo2_low",
            data={"value": 88, "threshold": 90, "mdc": "MDC_PULS_OXIM_SAT_O2"},
        )
    assert rec.id == 1
    assert rec.at == "2023-11-14T22:13:20.000Z"
    assert rec.prev_hash == genesis_hash(log.audit.chain_id)
    assert rec.data == {"value": 88, "threshold": 90, "mdc": "MDC_PULS_OXIM_SAT_O2"}
    assert rec.data_json == '{"mdc":"MDC_PULS_OXIM_SAT_O2","threshold":90,"value":88}'
    _fill(log.audit, 4)
    report = log.audit.verify()
    assert report.ok and report.problem is None and report.first_bad_id is None
    assert report.records_checked == 5 and report.head_id == 5
    assert list(log.audit.iter_records(limit=1)) == [rec]


def test_milliseconds_and_utc(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "g.db")
    audit = AuditLog(conn, clock=lambda: 1_700_000_000.1239)
    assert audit.append("k", actor="a").at == "2023-11-14T22:13:20.124Z"
    conn.rollback()


def test_append_does_not_commit_and_rollback_leaves_no_fork(log: Log) -> None:
    log.audit.append("k", actor="a")
    other = sqlite3.connect(log.path)
    assert other.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
    log.conn.rollback()
    log.audit.append("k", actor="b")  # reuses id 1: the rolled-back record never existed
    log.conn.commit()
    assert other.execute("SELECT id, actor FROM audit").fetchall() == [(1, "b")]
    assert log.audit.verify().ok


def test_record_and_data_commit_together(log: Log) -> None:
    log.conn.execute("CREATE TABLE program (id TEXT PRIMARY KEY)")
    with pytest.raises(RuntimeError), log.audit.transaction():
        log.conn.execute("INSERT INTO program VALUES ('p1')")
        log.audit.append(Kinds.PROGRAM_ACCEPTED, actor="user:ann", chair="c1", subject="p1")
        raise RuntimeError("store failed")
    assert log.conn.execute("SELECT count(*) FROM program").fetchone()[0] == 0
    assert list(log.audit.iter_records()) == []
    with log.audit.transaction():
        log.conn.execute("INSERT INTO program VALUES ('p1')")
        log.audit.append(Kinds.PROGRAM_ACCEPTED, actor="user:ann", chair="c1", subject="p1")
    assert [r.subject for r in log.audit.iter_records()] == ["p1"]


def test_a_new_log_on_the_same_database_continues_the_chain(log: Log) -> None:
    _fill(log.audit, 3)
    again = AuditLog(log.conn, clock=FakeClock(T0 + 100))
    assert again.chain_id == log.audit.chain_id
    with again.transaction():
        assert again.append("k", actor="a").id == 4
    assert verify(log.conn).ok


def test_triggers_refuse_updates_and_deletes(log: Log) -> None:
    _fill(log.audit, 2)
    for sql in (
        "UPDATE audit SET actor = 'x' WHERE id = 1",
        "DELETE FROM audit WHERE id = 2",
        "UPDATE audit_meta SET value = 'x'",
        "DELETE FROM audit_head",
        "INSERT INTO audit VALUES (9, 'a', 'b', 'c', NULL, NULL, '{}', 'p', 'h')",
    ):
        with pytest.raises(sqlite3.IntegrityError):
            log.conn.execute(sql)
        log.conn.rollback()
    assert log.audit.verify().ok


def test_iter_records_filters(log: Log) -> None:
    _fill(log.audit, 6)  # at = T0 + 0.25 * i; chairs chair-0, None, chair-0, chair-1, None, chair-1
    assert [r.id for r in log.audit.iter_records(chair="chair-0")] == [1, 3]
    assert [r.id for r in log.audit.iter_records(kind=Kinds.PACKET_REJECTED)] == [2, 4, 6]
    assert [r.id for r in log.audit.iter_records(since=T0 + 0.5, until=T0 + 1.25)] == [3, 4, 5]
    since = datetime.fromtimestamp(T0 + 1.0, UTC)
    assert [r.id for r in iter_records(log.conn, since=since)] == [5, 6]
    assert [r.id for r in log.audit.iter_records(after_id=2, limit=2)] == [3, 4]
    with pytest.raises(AuditError):
        list(log.audit.iter_records(since=datetime(2024, 1, 1)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "", "actor": "a"},
        {"kind": "k", "actor": ""},
        {"kind": "k", "actor": "a", "chair": ""},
        {"kind": "k", "actor": "a", "data": {"x": {1, 2}}},
        {"kind": "k", "actor": "a", "data": {"x": float("nan")}},
        {"kind": "k", "actor": "a", "data": {"x": "\ud800"}},
    ],
)
def test_bad_arguments_raise_audit_error_and_write_nothing(log: Log, kwargs: Any) -> None:
    kind = kwargs.pop("kind")
    with pytest.raises(AuditError):
        log.audit.append(kind, **kwargs)
    assert not log.conn.in_transaction
    assert log.audit.verify().records_checked == 0


# --- tampering by direct SQL -------------------------------------------------------------


def _forge_in_middle(path: Path) -> list[tuple[str, tuple[Any, ...]]]:
    """Shift records 4.. up by one and insert a correctly hashed forged record 4."""
    rows = _rows(path)
    at, prev = rows[3][1], rows[3][8]
    h = record_hash(4, at, "gateway", "override", "chair-0", None, "{}", prev)
    return [
        ("UPDATE audit SET id = id + 1000 WHERE id >= 4", ()),
        ("UPDATE audit SET id = id - 999 WHERE id > 1000", ()),
        (
            "INSERT INTO audit VALUES (4, ?, 'gateway', 'override', 'chair-0', NULL, '{}', ?, ?)",
            (at, prev, h),
        ),
        ("UPDATE audit_head SET id = id + 1", ()),
    ]


def _swap_2_3(path: Path) -> list[tuple[str, tuple[Any, ...]]]:
    rows = _rows(path)
    cols = "at = ?, actor = ?, kind = ?, chair = ?, subject = ?, data = ?, prev_hash = ?, hash = ?"
    return [
        ("UPDATE audit SET %s WHERE id = 2" % cols, rows[3][1:]),
        ("UPDATE audit SET %s WHERE id = 3" % cols, rows[2][1:]),
    ]


def _append_bypassing_head(path: Path) -> list[tuple[str, tuple[Any, ...]]]:
    prev = _rows(path)[6][8]
    at = "2023-11-14T23:00:00.000Z"
    h = record_hash(7, at, "gateway", "k", None, None, "{}", prev)
    return [
        ("INSERT INTO audit VALUES (7, ?, 'gateway', 'k', NULL, NULL, '{}', ?, ?)", (at, prev, h))
    ]


Edit = Callable[[Path], list[tuple[str, tuple[Any, ...]]]]


def _sql(*statements: str) -> Edit:
    return lambda _path: [(s, ()) for s in statements]


TAMPERING: list[tuple[str, Edit, str, int | None]] = [
    ("edit data", _sql("""UPDATE audit SET data = '{"i":99}' WHERE id = 3"""), HASH_MISMATCH, 3),
    (
        "edit at",
        _sql("UPDATE audit SET at = '2023-11-14T22:13:21.000Z' WHERE id = 2"),
        HASH_MISMATCH,
        2,
    ),
    ("edit hash", _sql("UPDATE audit SET hash = '%s' WHERE id = 4" % ("0" * 64)), HASH_MISMATCH, 4),
    ("edit actor", _sql("UPDATE audit SET actor = 'user:eve' WHERE id = 1"), HASH_MISMATCH, 1),
    ("NULL chair to empty", _sql("UPDATE audit SET chair = '' WHERE id = 5"), HASH_MISMATCH, 5),
    (
        "edit prev_hash",
        _sql("UPDATE audit SET prev_hash = hash WHERE id = 3"),
        PREV_HASH_MISMATCH,
        3,
    ),
    ("insert forged row in middle", _forge_in_middle, PREV_HASH_MISMATCH, 5),
    ("delete middle row", _sql("DELETE FROM audit WHERE id = 3"), ID_GAP, 3),
    ("delete last row", _sql("DELETE FROM audit WHERE id = 6"), TRUNCATED, 6),
    ("delete last two rows", _sql("DELETE FROM audit WHERE id >= 5"), TRUNCATED, 5),
    ("swap two rows", _swap_2_3, PREV_HASH_MISMATCH, 2),
    ("delete head", _sql("DELETE FROM audit_head"), HEAD_MISSING, None),
    ("edit head hash", _sql("UPDATE audit_head SET hash = '%s'" % ("1" * 64)), HEAD_MISMATCH, 6),
    ("append bypassing head", _append_bypassing_head, HEAD_MISMATCH, 7),
    (
        "edit chain_id",
        _sql("UPDATE audit_meta SET value = '%s'" % ("ab" * 16)),
        PREV_HASH_MISMATCH,
        1,
    ),
]


def _doc_script(tmp_path: Path) -> Path:
    text = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- verify-script -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/audit.md lost its verification script"
    script = tmp_path / "verify_audit.py"
    script.write_text(match.group(1), encoding="utf-8")
    return script


def _run_doc_script(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(_doc_script(tmp_path)), str(db), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("name", "edit", "problem", "first_bad"), TAMPERING, ids=[t[0] for t in TAMPERING]
)
def test_tampering_is_detected(
    log: Log, tmp_path: Path, name: str, edit: Edit, problem: str, first_bad: int | None
) -> None:
    _fill(log.audit, 6)
    assert log.audit.verify().ok
    _tamper(log.path, *edit(log.path))
    report = log.audit.verify()
    assert not report.ok, name
    assert (report.problem, report.first_bad_id) == (problem, first_bad), report
    assert report.message
    done = _run_doc_script(tmp_path, log.path)
    assert done.returncode == 1 and "BAD" in done.stderr, (name, done)


def test_doc_script_accepts_an_intact_chain_and_its_anchor(log: Log, tmp_path: Path) -> None:
    empty = _run_doc_script(tmp_path, log.path, log.audit.export_anchor().to_text())
    assert empty.returncode == 0 and "OK: 0 records" in empty.stdout, empty
    _fill(log.audit, 5)
    anchor = log.audit.export_anchor()
    _fill(log.audit, 2)
    done = _run_doc_script(tmp_path, log.path, anchor.to_text())
    assert done.returncode == 0, done
    assert done.stdout.startswith("OK: 7 records")


def test_splicing_another_databases_chain_is_detected(tmp_path: Path) -> None:
    # Same clock, same events: only chain_id tells the two chains apart.
    logs = []
    for name in ("a.db", "b.db"):
        conn = open_db(tmp_path / name)
        audit = AuditLog(conn, clock=FakeClock())
        _fill(audit, 4)
        logs.append(Log(tmp_path / name, conn, audit))
    a, b = logs
    ra, rb = _rows(a.path), _rows(b.path)
    a_anchor = a.audit.export_anchor()
    assert all(ra[i][1:7] == rb[i][1:7] and ra[i][8] != rb[i][8] for i in ra)
    # Replace a's record 3 by b's record 3.
    _tamper(
        a.path,
        ("DELETE FROM audit WHERE id = 3", ()),
        ("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)", rb[3]),
    )
    report = a.audit.verify()
    assert (report.problem, report.first_bad_id) == (PREV_HASH_MISMATCH, 3)
    # Replace a's whole chain and head by b's (but a keeps its own chain_id).
    _tamper(
        a.path,
        ("DELETE FROM audit", ()),
        *[("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)", rb[i]) for i in sorted(rb)],
        ("UPDATE audit_head SET id = 4, hash = ?", (rb[4][8],)),
    )
    report = a.audit.verify()
    assert (report.problem, report.first_bad_id) == (PREV_HASH_MISMATCH, 1)
    # With b's chain_id copied too, a's database is b's chain: only a's anchor tells.
    _tamper(a.path, ("UPDATE audit_meta SET value = ?", (b.audit.chain_id,)))
    assert verify(a.conn).ok
    assert verify(a.conn, anchors=[a_anchor]).problem == ANCHOR_CHAIN_MISMATCH
    for log in logs:
        log.conn.close()


def _rewrite_from(path: Path, first: int, data: str) -> None:
    """A full, consistent rewrite: edit record ``first``, recompute every later hash and the head."""
    rows = _rows(path)
    statements: list[tuple[str, tuple[Any, ...]]] = []
    prev = rows[first][7]
    for i in sorted(rows):
        if i < first:
            continue
        r = list(rows[i])
        if i == first:
            r[6] = data
        r[7] = prev
        r[8] = prev = record_hash(*r[:8])
        statements.append(
            (
                "UPDATE audit SET data = ?, prev_hash = ?, hash = ? WHERE id = ?",
                (r[6], r[7], r[8], i),
            )
        )
    statements.append(("UPDATE audit_head SET hash = ?", (prev,)))
    _tamper(path, *statements)


def test_only_an_external_anchor_catches_a_consistent_rewrite(log: Log, tmp_path: Path) -> None:
    _fill(log.audit, 4)
    anchor = log.audit.export_anchor()
    assert anchor.id == 4
    _fill(log.audit, 2)
    _rewrite_from(log.path, 2, '{"reason":"nothing happened"}')
    assert log.audit.verify().ok  # the documented limit: no secret in the chain
    report = log.audit.verify(anchors=[anchor])
    assert (report.problem, report.first_bad_id) == (ANCHOR_MISMATCH, 4)
    assert _run_doc_script(tmp_path, log.path).returncode == 0
    assert _run_doc_script(tmp_path, log.path, anchor.to_text()).returncode == 1


def test_only_an_external_anchor_catches_truncation_with_a_rewritten_head(log: Log) -> None:
    _fill(log.audit, 6)
    anchor = log.audit.export_anchor()
    h4 = _rows(log.path)[4][8]
    _tamper(
        log.path,
        ("DELETE FROM audit WHERE id > 4", ()),
        ("UPDATE audit_head SET id = 4, hash = ?", (h4,)),
    )
    assert log.audit.verify().ok
    report = log.audit.verify(anchors=[anchor])
    assert (report.problem, report.first_bad_id) == (TRUNCATED, 5)


def test_anchors(log: Log, tmp_path: Path) -> None:
    genesis_anchor = log.audit.export_anchor()
    assert genesis_anchor.id == 0 and genesis_anchor.hash == genesis_hash(log.audit.chain_id)
    _fill(log.audit, 3)
    anchor = log.audit.export_anchor()
    assert Anchor.parse(anchor.to_text()) == anchor
    assert log.audit.verify(anchors=[genesis_anchor, anchor]).ok
    other = AuditLog(open_db(tmp_path / "other.db"))
    foreign = other.export_anchor()
    assert log.audit.verify(anchors=[foreign]).problem == ANCHOR_CHAIN_MISMATCH
    for bad in ("", "ivgw-audit-anchor:v1:xyz:1:00", anchor.to_text().replace(":3:", ":-3:")):
        with pytest.raises(AuditError) as e:
            Anchor.parse(bad)
        assert e.value.reason == "audit.bad_anchor"


def test_readonly_connection_verifies(log: Log) -> None:
    _fill(log.audit, 3)
    ro = open_db(log.path, readonly=True)
    report = verify(ro)
    assert report.ok and report.records_checked == 3
    assert [r.id for r in iter_records(ro, chair="chair-0")] == [1, 3]


# --- encodings ---------------------------------------------------------------------------


def test_hash_encoding_is_unambiguous() -> None:
    base = (1, "2023-11-14T22:13:20.000Z", "ab", "c", None, None, "{}", "0" * 64)
    shifted = (1, "2023-11-14T22:13:20.000Z", "a", "bc", None, None, "{}", "0" * 64)
    empty_chair = (1, "2023-11-14T22:13:20.000Z", "ab", "c", "", None, "{}", "0" * 64)
    moved = (1, "2023-11-14T22:13:20.000Z", "ab", "c", None, "", "{}", "0" * 64)
    hashes = {record_hash(*t) for t in (base, shifted, empty_chair, moved)}
    assert len(hashes) == 4
    assert genesis_hash("00" * 16) != genesis_hash("01" * 16)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=6)


@given(json_objects, st.randoms(use_true_random=False))
def test_canonical_json_ignores_key_order(data: dict[str, Any], rnd: Any) -> None:
    items = list(data.items())
    rnd.shuffle(items)
    shuffled = dict(items)
    text = canonical_json(data)
    assert canonical_json(shuffled) == text
    assert json.loads(text) == json.loads(json.dumps(data))
    args = (1, "2023-11-14T22:13:20.000Z", "gateway", "k", None, None)
    assert record_hash(*args, canonical_json(shuffled), "0" * 64) == record_hash(
        *args, text, "0" * 64
    )


def test_canonical_json_examples() -> None:
    assert (
        canonical_json({"b": 1, "a": [1.5, None, True], "é": "ü"})
        == '{"a":[1.5,null,true],"b":1,"é":"ü"}'
    )


# --- properties over whole chains ---------------------------------------------------------

texts = st.text(min_size=1, max_size=12)
appends = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from([v for k, v in vars(Kinds).items() if k.isupper()]) | texts,
            "actor": texts,
            "chair": st.none() | texts,
            "subject": st.none() | texts,
            "data": json_objects,
        }
    ),
    min_size=1,
    max_size=8,
)


def _memory_log(items: list[dict[str, Any]]) -> tuple[sqlite3.Connection, AuditLog, list[Any]]:
    conn = sqlite3.connect(":memory:")
    audit = AuditLog(conn, clock=FakeClock(step=0.001))
    records = []
    for item in items:
        with audit.transaction():
            records.append(
                audit.append(
                    item["kind"],
                    actor=item["actor"],
                    chair=item["chair"],
                    subject=item["subject"],
                    data=item["data"],
                )
            )
    return conn, audit, records


@settings(max_examples=60, deadline=None)
@given(appends)
def test_any_sequence_of_appends_verifies(items: list[dict[str, Any]]) -> None:
    conn, audit, records = _memory_log(items)
    report = audit.verify()
    assert report.ok and report.records_checked == len(items) == report.head_id
    assert list(audit.iter_records()) == records
    assert [r.data for r in records] == [json.loads(canonical_json(i["data"])) for i in items]
    conn.close()


FIELDS = ["at", "actor", "kind", "chair", "subject", "data", "prev_hash", "hash"]


@settings(max_examples=150, deadline=None)
@given(appends, st.data())
def test_any_single_field_edit_is_detected(
    items: list[dict[str, Any]], data: st.DataObject
) -> None:
    conn, audit, records = _memory_log(items)
    target = data.draw(st.sampled_from(records), label="record")
    field = data.draw(st.sampled_from(FIELDS + ["id"]), label="field")
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute('DROP TRIGGER "%s"' % name)
    if field == "id":
        new_id = data.draw(st.sampled_from([0, -1, len(records) + 1, len(records) + 50]))
        conn.execute("UPDATE audit SET id = ? WHERE id = ?", (new_id, target.id))
        conn.commit()
        assert not audit.verify().ok
        return
    old = getattr(target, "data_json" if field == "data" else field)
    values = (st.none() | texts) if field in ("chair", "subject") else st.text(max_size=70)
    new = data.draw(values.filter(lambda v: v != old), label="new value")
    conn.execute("UPDATE audit SET %s = ? WHERE id = ?" % field, (new, target.id))
    conn.commit()
    report = audit.verify()
    assert not report.ok
    assert report.first_bad_id == target.id, report
    conn.close()
