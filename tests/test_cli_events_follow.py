"""``ivgw events --follow``: records written by another connection (the gateway) while the
CLI follows appear exactly once, in id order, with the filters applied; as aligned lines
or JSON Lines; and it ends cleanly (Ctrl-C, --max-records, --timeout, a closed pipe) or
with exit 5 when the database goes away.

Writers run on a thread with their own connection, like the gateway. Tests that race
them use ``--limit 0`` (only records committed after the follower's first read), so
everything they see came through the follow path, and check that the ids they got are
consecutive (or exactly the matching ones in that id range): nothing skipped or doubled
whichever way the race went. Timing is controlled by a fake clock where it matters.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.audit import AuditLog, AuditRecord, Kinds, format_at, iter_records
from gateway.cli import app
from gateway.cli.common import CliError
from gateway.cli.events import (
    Polling,
    event_header,
    event_json,
    event_line,
    follow_records,
    latest_records,
)
from gateway.db import open_db, transaction
from gateway.store import Store

T0 = 1_780_000_000.0
runner = CliRunner(env={"COLUMNS": "250"})
FOLLOW = ["events", "--follow", "--interval", "0.01", "--timeout", "30"]


@dataclass(frozen=True)
class Env:
    cfg: Path
    db: Path


@dataclass(frozen=True)
class Spec:
    """One record for a writer to append."""

    kind: str
    chair: str | None = "north/c1"
    at: float = T0
    subject: str | None = None


def _append(audit: AuditLog, clock: list[float], specs: list[Spec], n: int) -> None:
    for i, s in enumerate(specs):
        clock[0] = s.at
        audit.append(s.kind, actor="gateway", chair=s.chair, subject=s.subject, data={"n": n + i})


@pytest.fixture
def env(tmp_path: Path) -> Env:
    data = tmp_path / "data"
    data.mkdir()
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\ndata_dir = "data"\n')
    db = data / "ivgw.sqlite3"
    conn = open_db(db)
    Store(conn)
    clock = [T0]
    audit = AuditLog(conn, clock=lambda: clock[0])
    with transaction(conn):
        _append(
            audit,
            clock,
            [
                Spec(Kinds.PROGRAM_ACCEPTED, at=T0 - 60),
                Spec(Kinds.INTERLOCK_TRIPPED, at=T0, subject="spo2"),
                Spec(Kinds.INTERLOCK_ACKED, at=T0 + 60),
            ],
            0,
        )
    conn.close()
    return Env(cfg, db)


class Writer:
    """Appends records on its own thread and connection until stopped: ``make(i)`` gives
    the records of the i-th transaction."""

    def __init__(self, db: Path, make: Callable[[int], list[Spec]]) -> None:
        self._db, self._make = db, make
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer")
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            conn = open_db(self._db)
            try:
                clock = [T0]
                audit = AuditLog(conn, clock=lambda: clock[0])
                i = n = 0
                while not self._stop.is_set():
                    specs = self._make(i)
                    with transaction(conn):
                        _append(audit, clock, specs, n)
                    i, n = i + 1, n + len(specs)
                    self._stop.wait(0.001)  # let the reader in; correctness never depends on it
            finally:
                conn.close()
        except BaseException as e:  # reported by __exit__
            self.error = e

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


def _all(db: Path) -> list[AuditRecord]:
    conn = open_db(db, readonly=True)
    try:
        return list(iter_records(conn))
    finally:
        conn.close()


def _run(env: Env, *args: str) -> str:
    r = runner.invoke(app, [*FOLLOW, *args, "--config", str(env.cfg)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    return r.stdout


def _json_lines(text: str) -> list[dict]:
    lines = text.splitlines()
    objs = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) for o in objs)
    return objs


# --- through the CLI, with a concurrent writer ---------------------------------------------------


def test_records_appended_while_following_appear_once_and_in_order(env: Env, no_leaks) -> None:
    # transactions of 1..5 records, so some polls see several at once
    with Writer(env.db, lambda i: [Spec(Kinds.PERMIT_GRANTED)] * (1 + i % 5)):
        out = _run(env, "--json", "--limit", "0", "--max-records", "120")
    got = _json_lines(out)
    ids = [o["id"] for o in got]
    assert len(ids) == 120
    assert ids[0] > 3, "--limit 0 printed a record from before it started"
    assert ids == list(range(ids[0], ids[0] + 120))
    by_id = {r.id: event_json(r) for r in _all(env.db)}
    assert got == [by_id[i] for i in ids]


def test_backlog_then_followed_lines_have_no_gap_or_repeat_at_the_seam(env: Env, no_leaks) -> None:
    with Writer(env.db, lambda i: [Spec(Kinds.COMMAND_SENT, chair="north/c2")] * (1 + i % 3)):
        out = _run(env, "--limit", "1000", "--max-records", "60")
    header, *lines = out.splitlines()
    assert header.split() == ["id", "time", "(UTC)", "kind", "chair", "actor", "summary"]
    assert [int(line.split()[0]) for line in lines] == list(range(1, 61))
    assert "interlock.tripped" in lines[1] and "command.sent" in lines[-1]
    # aligned: every line's kind starts under the header's "kind"
    col = header.index("kind")
    assert all(line[col:].split()[0] in vars(Kinds).values() for line in lines)


def test_filters_apply_to_followed_records(env: Env, no_leaks) -> None:
    since = datetime.fromtimestamp(T0, UTC).isoformat()
    cycle = [
        Spec(Kinds.INTERLOCK_TRIPPED, chair="north/c2", at=T0 + 5),  # the only match
        Spec(Kinds.INTERLOCK_TRIPPED, chair="north/c1", at=T0 + 5),  # other chair
        Spec(Kinds.PERMIT_GRANTED, chair="north/c2", at=T0 + 5),  # other kind
        Spec(Kinds.INTERLOCK_TRIPPED, chair="north/c2", at=T0 - 5),  # before --since
        Spec(Kinds.INTERLOCK_TRIPPED, chair=None, at=T0 + 5),  # no chair
    ]
    with Writer(env.db, lambda i: cycle[i % 5 : i % 5 + 1 + i % 2]):
        out = _run(
            env,
            *("--json", "--limit", "0", "--max-records", "15"),
            *("--kind", "interlock.tripped", "--chair", "north/c2", "--since", since),
        )
    got = _json_lines(out)
    assert len(got) == 15
    assert all(o["kind"] == "interlock.tripped" and o["chair"] == "north/c2" for o in got)
    first, last = got[0]["id"], got[-1]["id"]
    expected = [
        event_json(r)
        for r in _all(env.db)
        if first <= r.id <= last
        and (r.kind, r.chair) == ("interlock.tripped", "north/c2")
        and r.at >= format_at(T0)
    ]
    assert got == expected  # every matching record in that range, none skipped


def test_a_burst_of_500_records_at_once_all_appear(env: Env, no_leaks) -> None:
    with Writer(env.db, lambda i: [Spec(Kinds.PACKET_REJECTED, subject=str(i))] * 500):
        out = _run(env, "--json", "--limit", "0", "--max-records", "1000")
    ids = [o["id"] for o in _json_lines(out)]
    # the follower started between two bursts (a transaction is all or nothing)
    assert (ids[0] - 4) % 500 == 0
    assert ids == list(range(ids[0], ids[0] + 1000))


# --- through the CLI, no writer ------------------------------------------------------------------


def test_json_lines_carry_the_same_objects_as_json(env: Env) -> None:
    listed = json.loads(runner.invoke(app, ["events", "--json", "--config", str(env.cfg)]).stdout)
    out = _run(env, "--json", "--max-records", "3")
    assert len(out.splitlines()) == 3
    assert _json_lines(out) == listed
    assert [o["kind"] for o in listed] == [
        "program.accepted",
        "interlock.tripped",
        "interlock.acked",
    ]


def test_timeout_ends_following_with_exit_0(env: Env) -> None:
    r = runner.invoke(
        app,
        ["events", "-f", "--json", "--limit", "1", "--interval", "0.01", "--timeout", "0.05"]
        + ["--config", str(env.cfg)],
    )
    assert r.exit_code == 0, r.output
    assert [o["kind"] for o in _json_lines(r.stdout)] == ["interlock.acked"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["-f", "--until", "now"], ("--until", "--follow")),
        (["-f", "--interval", "0"], ("--interval",)),
        (["-f", "--interval", "-1"], ("--interval",)),
        (["-f", "--interval", "nan"], ("--interval",)),
        (["-f", "--timeout", "0"], ("--timeout",)),
        (["--interval", "1"], ("--interval", "--follow")),
        (["--timeout", "1"], ("--timeout", "--follow")),
        (["--max-records", "5"], ("--max-records", "--follow")),
        (["--limit", "0"], ("--limit",)),
    ],
)
def test_option_combinations_that_make_no_sense_are_usage_errors(
    env: Env, args: list[str], needles: tuple[str, ...]
) -> None:
    r = runner.invoke(app, ["events", *args, "--config", str(env.cfg)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.stdout == ""
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_follow_without_a_database_is_exit_5(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\ndata_dir = "nowhere"\n')
    r = runner.invoke(app, ["events", "-f", "--timeout", "1", "--config", str(cfg)])
    assert r.exit_code == 5 and "ivgw init" in r.stderr and "Traceback" not in r.output


# --- the follow loop itself, on a fake clock -----------------------------------------------------


class FakeTime:
    """``clock`` and ``sleep`` for follow_records; ``on_sleep(n)`` runs at the n-th sleep
    (1-based), where a test plays the gateway."""

    def __init__(self, on_sleep: Callable[[int], None] = lambda n: None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self._on_sleep(len(self.sleeps))


@pytest.fixture
def reader(env: Env) -> Iterator[sqlite3.Connection]:
    conn = open_db(env.db, readonly=True)
    yield conn
    conn.close()


def _writer_conn(env: Env) -> tuple[sqlite3.Connection, AuditLog, list[float]]:
    conn = open_db(env.db)
    clock = [T0]
    return conn, AuditLog(conn, clock=lambda: clock[0]), clock


def test_follow_reads_a_burst_in_pages_exactly_once_and_sleeps_only_when_idle(
    env: Env, reader: sqlite3.Connection
) -> None:
    conn, audit, clock = _writer_conn(env)

    def gateway(n: int) -> None:
        if n == 1:  # 500 at once, every other one a trip
            burst = [
                Spec(Kinds.INTERLOCK_TRIPPED if i % 2 else Kinds.PERMIT_GRANTED) for i in range(500)
            ]
            with transaction(conn):
                _append(audit, clock, burst, 0)
        elif n == 2:  # then three, one commit each
            for i in range(3):
                with transaction(conn):
                    _append(audit, clock, [Spec(Kinds.INTERLOCK_TRIPPED)], 500 + i)

    fake = FakeTime(gateway)
    try:
        got = list(
            follow_records(
                reader,
                env.db,
                after_id=3,
                kind=Kinds.INTERLOCK_TRIPPED,
                polling=Polling(interval=0.5, timeout=2.0),
                page=7,
                clock=fake.clock,
                sleep=fake.sleep,
            )
        )
    finally:
        conn.close()
    expected = [r for r in _all(env.db) if r.id > 3 and r.kind == Kinds.INTERLOCK_TRIPPED]
    assert len(expected) == 253
    assert got == expected
    # pages of a burst are read back to back; it sleeps only when it has caught up, and
    # its last look is at the timeout
    assert fake.sleeps == [0.5, 0.5, 0.5, 0.5]


def test_follow_timeout_cuts_the_last_sleep_short(env: Env, reader: sqlite3.Connection) -> None:
    fake = FakeTime()
    got = list(
        follow_records(
            reader,
            env.db,
            after_id=0,
            polling=Polling(interval=0.5, timeout=1.2),
            clock=fake.clock,
            sleep=fake.sleep,
        )
    )
    assert [r.id for r in got] == [1, 2, 3]
    assert fake.sleeps == pytest.approx([0.5, 0.5, 0.2])


def test_latest_records_gives_the_backlog_and_the_cursor_past_non_matching_records(
    env: Env, reader: sqlite3.Connection
) -> None:
    recent, cursor = latest_records(reader, kind=Kinds.INTERLOCK_TRIPPED, limit=5)
    assert [r.id for r in recent] == [2] and cursor == 3
    assert latest_records(reader, limit=0) == ([], 3)
    assert [r.id for r in latest_records(reader, limit=2)[0]] == [2, 3]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_follow_stops_with_exit_code_5_when_the_database_goes_away(
    env: Env, reader: sqlite3.Connection, tmp_path: Path, how: str
) -> None:
    def gateway(n: int) -> None:
        if how == "deleted":
            env.db.unlink()
        else:
            other = tmp_path / "other.sqlite3"
            other.write_bytes(env.db.read_bytes())
            os.replace(other, env.db)

    fake = FakeTime(gateway)
    records = follow_records(
        reader, env.db, after_id=0, polling=Polling(0.5), clock=fake.clock, sleep=fake.sleep
    )
    assert [next(records).id for _ in range(3)] == [1, 2, 3]
    with pytest.raises(CliError) as e:
        next(records)
    assert e.value.code == 5 and str(env.db) in str(e.value)
    assert ("disappeared" if how == "deleted" else "replaced") in str(e.value)


# --- lines ---------------------------------------------------------------------------------------


def test_event_lines_align_under_the_header_and_colour_alarm_kinds_red(
    env: Env, reader: sqlite3.Connection
) -> None:
    recs = _all(env.db)
    header = event_header(6).plain
    for r in recs:
        line = event_line(r, 6)
        text = line.plain
        assert "\n" not in text
        assert text.index(r.kind) == header.index("kind")
        assert text.index(r.chair or "-") == header.index("chair")
        assert text.index("gateway") == header.index("actor")
        red = [text[s.start : s.end] for s in line.spans if "red" in str(s.style)]
        assert red == ([r.kind] if r.kind == Kinds.INTERLOCK_TRIPPED else [])


def test_event_line_shows_control_characters_as_escapes(env: Env) -> None:
    conn, audit, clock = _writer_conn(env)
    try:
        with transaction(conn):
            audit.append(
                Kinds.COMMAND_FAILED,
                actor="gateway",
                chair="north/c1",
                data={"detail": "line one\nline two \x1b[2J"},
            )
    finally:
        conn.close()
    text = event_line(_all(env.db)[-1]).plain
    assert "\n" not in text and "\x1b" not in text
    assert "line one\\nline two \\x1b[2J" in text


# --- a real process: Ctrl-C, a closed pipe, the database deleted ---------------------------------


def _spawn(env: Env, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "events", "-f", "--interval", "0.02", *args]
        + ["--config", str(env.cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job (`pytest &`) ignores SIGINT, and so would the child
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _readlines(proc: subprocess.Popen[str], n: int) -> list[str]:
    assert proc.stdout is not None
    return [proc.stdout.readline() for _ in range(n)]


def test_ctrl_c_ends_following_cleanly_with_exit_0(env: Env, no_leaks) -> None:
    proc = _spawn(env)
    try:
        lines = _readlines(proc, 4)  # header and the three records: it is following now
        assert "interlock.acked" in lines[3]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert err == ""


def test_a_closed_pipe_ends_following_quietly(env: Env, no_leaks) -> None:
    proc = _spawn(env, "--json")
    try:
        assert len(_readlines(proc, 3)) == 3
        assert proc.stdout is not None
        proc.stdout.close()  # like `ivgw events -f | head -3`
        conn, audit, clock = _writer_conn(env)
        try:
            for i in range(2000):  # until it tries to write and finds the reader gone
                with transaction(conn):
                    _append(audit, clock, [Spec(Kinds.COMMAND_SENT)], i)
                try:
                    proc.wait(timeout=0.05)
                    break
                except subprocess.TimeoutExpired:
                    pass
        finally:
            conn.close()
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0, err
    assert err == ""


def test_database_deleted_while_following_is_one_error_line_and_exit_5(env: Env, no_leaks) -> None:
    proc = _spawn(env, "--json")
    try:
        assert len(_readlines(proc, 3)) == 3
        env.db.unlink()
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 5, err
    assert out == ""
    assert err.splitlines() == [
        "error: the gateway database %s disappeared while following" % env.db
    ]


def test_brackets_in_record_data_are_shown_not_taken_as_markup(env: Env) -> None:
    conn, audit, clock = _writer_conn(env)
    try:
        with transaction(conn):
            audit.append(
                Kinds.COMMAND_FAILED, actor="gateway", data={"detail": "[red]hidden[/] text"}
            )
    finally:
        conn.close()
    table = runner.invoke(app, ["events", "--config", str(env.cfg)])
    assert table.exit_code == 0 and "[red]hidden[/] text" in table.stdout
    assert "[red]hidden[/] text" in _run(env, "--limit", "1", "--max-records", "1")
