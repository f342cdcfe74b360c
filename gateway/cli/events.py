"""``ivgw events``: the audit records as a table, JSON, or a live stream (``--follow``).

Read-only, like every record command: following polls the database with short read
transactions, so it never holds up the gateway's writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from gateway.audit import (
    AuditRecord,
    Kinds,
    iter_records,
)
from gateway.cli import app
from gateway.cli.common import (
    CONFIG,
    USAGE,
    CliError,
    ConfigOption,
    JsonOption,
    config,
    console,
    friendly,
    print_json,
)
from gateway.cli.records import _chair_filter, _db, parse_when
from gateway.config import Config

_SUMMARY_KEYS = (
    "cause",
    "reason",
    "detail",
    "command",
    "verdict",
    "drug",
    "reasons",
    "limits",
    "fingerprint",
    "result",
    "anchor",
    "count",
)


def summarize(r: AuditRecord, width: int = 100) -> str:
    """One line about a record: its subject and the data fields people look for first."""
    data = r.data
    parts = []
    if r.subject:
        parts.append(r.subject)
    keys = [k for k in _SUMMARY_KEYS if k in data] or sorted(data)
    for k in keys:
        v = data[k]
        if isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = ", ".join("%s=%s" % kv for kv in sorted(v.items()))
        parts.append("%s=%s" % (k, v))
    text = "; ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


_ALARM_KINDS = frozenset(
    {Kinds.INTERLOCK_TRIPPED, Kinds.KEY_REVOKED, Kinds.PROGRAM_REJECTED, Kinds.COMMAND_FAILED}
)


def event_json(r: AuditRecord) -> dict[str, Any]:
    """The fields of one record in ``events --json`` (an array) and ``--follow --json``
    (one object per line): the same keys either way, so tools need one parser."""
    return {
        "id": r.id,
        "at": r.at,
        "kind": r.kind,
        "chair": r.chair,
        "actor": r.actor,
        "subject": r.subject,
        "data": r.data,
    }


def _time_cell(r: AuditRecord) -> str:
    return r.at.replace("T", " ").rstrip("Z")


@app.command("events")
@friendly
def events(
    chair: str = typer.Option(None, "--chair", help="Only this chair (SITE/CHAIR)."),
    kind: str = typer.Option(
        None, "--kind", help="Only this kind, e.g. interlock.tripped (docs/audit.md lists them)."
    ),
    since: str = typer.Option(
        None,
        "--since",
        help="From this time: ISO 8601 (local time, or "
        "with Z/offset) or ago, e.g. -1h, -30m, today.",
    ),
    until: str = typer.Option(
        None, "--until", help="Before this time (same forms). Not with --follow."
    ),
    limit: int = typer.Option(
        100,
        "--limit",
        min=0,
        help="Show the most recent N matching records (0, only with --follow: none, just "
        "the ones that arrive from now on).",
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep watching, like tail -f: after the most recent --limit records, print each "
        "new matching record as the gateway writes it, one line each (JSON Lines with "
        "--json), until Ctrl-C.",
    ),
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            metavar="SECONDS",
            help="With --follow: seconds between looks for new records (default 0.5).",
        ),
    ] = None,
    max_records: Annotated[
        int,
        typer.Option(
            "--max-records",
            min=0,
            metavar="N",
            help="With --follow: stop after N records printed, counting the --limit ones "
            "(0: no limit). For scripts and tests.",
        ),
    ] = 0,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="With --follow: stop following after this long (exit 0). For scripts and tests.",
        ),
    ] = None,
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Audit records: time, kind, chair, actor and a summary, oldest first; --follow keeps
    watching for new ones."""
    if follow:
        poll = _follow_options(until, interval, timeout)
    else:
        for given, name in (
            (interval is not None, "--interval"),
            (max_records != 0, "--max-records"),
            (timeout is not None, "--timeout"),
        ):
            if given:
                raise CliError("%s only applies with --follow" % name, USAGE)
        if limit == 0:
            raise CliError("--limit 0 shows nothing without --follow; give 1 or more", USAGE)
    now = time.time()
    t_since = parse_when(since, now, "--since") if since else None
    t_until = parse_when(until, now, "--until") if until else None
    chair_id = _chair_filter(chair)
    cfg = config(config_path)
    if follow:
        _follow_events(cfg, chair_id, kind, t_since, limit, poll, max_records, as_json)
        return
    with _db(cfg) as conn:
        recent: deque[AuditRecord] = deque(
            iter_records(conn, chair=chair_id, kind=kind, since=t_since, until=t_until),
            maxlen=limit,
        )
    if as_json:
        print_json([event_json(r) for r in recent])
        return
    t = Table(title="audit events (%d shown)" % len(recent))
    for col in _EVENT_COLUMNS:
        t.add_column(col, overflow="fold")
    for r in recent:
        # Text, not markup strings: a "[red]" inside a record's data is shown, not obeyed
        t.add_row(
            str(r.id),
            _time_cell(r),
            Text(_one_line(r.kind), style="red" if r.kind in _ALARM_KINDS else ""),
            Text(_one_line(r.chair or "-")),
            Text(_one_line(r.actor)),
            Text(_one_line(summarize(r))),
        )
    console.print(t)


# --- events --follow ----------------------------------------------------------------------------
#
# The cursor is the record id. The gateway assigns ids inside the write transaction that
# commits the record (AuditLog.append: head id + 1 under BEGIN IMMEDIATE), so a reader
# never sees id N+1 committed while N is still to come: "everything after the last id I
# read" is exactly what is new. Each poll is one short read transaction, never held while
# printing or sleeping, so a slow terminal cannot stop the gateway's WAL checkpoints.

_EVENT_COLUMNS = ("id", "time (UTC)", "kind", "chair", "actor", "summary")
_KIND_WIDTH = max(len(v) for k, v in vars(Kinds).items() if k.isupper())
_TIME_WIDTH = len("2025-01-31 09:15:02.125")
_CHAIR_WIDTH = 12
_ACTOR_WIDTH = 14
_PAGE = 1000  # records per read transaction; a bigger burst is read in several, in order


@dataclasses.dataclass(frozen=True)
class Polling:
    """How ``events --follow`` polls: ``interval`` seconds between looks, and an optional
    ``timeout`` in seconds after which following stops."""

    interval: float = 0.5
    timeout: float | None = None


def _follow_options(until: str | None, interval: float | None, timeout: float | None) -> Polling:
    if until is not None:
        raise CliError(
            "--until cannot be used with --follow: a followed listing has no end "
            "(use --timeout SECONDS or --max-records N to stop it)",
            USAGE,
        )
    for value, name in ((interval, "--interval"), (timeout, "--timeout")):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise CliError("%s %s: give a number of seconds above 0" % (name, value), USAGE)
    return Polling(0.5 if interval is None else interval, timeout)


def _one_line(text: str) -> str:
    """Control characters (a newline or terminal escape in a node-supplied detail) shown
    as escapes, so one record is always one line and cannot repaint the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def event_line(r: AuditRecord, id_width: int = 6) -> Text:
    """One record as one line with the columns of the ``events`` table (fixed widths, a
    longer value pushes the rest right rather than being cut) and its alarm kinds in red."""
    line = Text(no_wrap=True)
    line.append(str(r.id).rjust(id_width) + "  " + _time_cell(r).ljust(_TIME_WIDTH) + "  ")
    kind = _one_line(r.kind)
    line.append(kind, style="red" if r.kind in _ALARM_KINDS else None)
    line.append(" " * max(0, _KIND_WIDTH - len(kind)) + "  ")
    line.append(_one_line(r.chair or "-").ljust(_CHAIR_WIDTH) + "  ")
    line.append(_one_line(r.actor).ljust(_ACTOR_WIDTH) + "  ")
    line.append(_one_line(summarize(r)))
    return line


def event_header(id_width: int = 6) -> Text:
    """The column names over :func:`event_line` lines."""
    widths = (id_width, _TIME_WIDTH, _KIND_WIDTH, _CHAIR_WIDTH, _ACTOR_WIDTH)
    cells = [_EVENT_COLUMNS[0].rjust(id_width)]
    cells += [c.ljust(w) for c, w in zip(_EVENT_COLUMNS[1:-1], widths[1:], strict=True)]
    return Text("  ".join([*cells, _EVENT_COLUMNS[-1]]), style="bold")


@contextlib.contextmanager
def _read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so the records and the highest id come from the same commit."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()


def _top_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0])


def latest_records(
    conn: sqlite3.Connection,
    *,
    chair: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> tuple[list[AuditRecord], int]:
    """The most recent ``limit`` matching records (oldest first) and the cursor to follow
    from: the highest record id in the same snapshot, matching or not."""
    with _read_snapshot(conn):
        recent = (
            list(deque(iter_records(conn, chair=chair, kind=kind, since=since), maxlen=limit))
            if limit > 0
            else []
        )
        return recent, _top_id(conn)


def _db_identity(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CliError(
            "the gateway database %s disappeared while following" % path, CONFIG
        ) from None
    except OSError as e:
        raise CliError(
            "the gateway database %s cannot be read any more (%s)" % (path, e.strerror or e),
            CONFIG,
        ) from None
    return st.st_dev, st.st_ino


def _busy(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


def follow_records(
    conn: sqlite3.Connection,
    db_path: Path,
    *,
    after_id: int,
    chair: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    polling: Polling = Polling(),
    page: int = _PAGE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[AuditRecord]:
    """Every matching record with an id above ``after_id``, in id order, as it is written,
    each exactly once; ends only at ``polling.timeout`` (measured with ``clock`` from the
    first ``next()``).

    The file at ``db_path`` must stay the one ``conn`` opened: an open SQLite connection
    keeps reading a deleted or replaced file without complaint, so each poll checks the
    path; when it is gone, replaced or unreadable, or SQLite fails (other than busy, which
    is retried at the next poll), this raises a :class:`CliError` with code 5.
    """
    identity = _db_identity(db_path)
    deadline = None if polling.timeout is None else clock() + polling.timeout
    cursor = after_id
    while True:
        if _db_identity(db_path) != identity:
            raise CliError(
                "the gateway database %s was replaced while following; run the command "
                "again to follow the new one" % db_path,
                CONFIG,
            )
        if not os.access(db_path, os.R_OK):
            raise CliError(
                "the gateway database %s is no longer readable (permission denied)" % db_path,
                CONFIG,
            )
        batch: list[AuditRecord] = []
        try:
            with _read_snapshot(conn):
                batch = list(
                    iter_records(
                        conn, chair=chair, kind=kind, since=since, after_id=cursor, limit=page
                    )
                )
                # a full page may have more after it; otherwise nothing up to the top
                # id matched, so skip over it rather than scanning it again next time
                cursor = batch[-1].id if len(batch) == page else max(cursor, _top_id(conn))
        except sqlite3.Error as e:
            if not _busy(e):
                raise CliError(
                    "cannot read the gateway database %s any more (%s)" % (db_path, e), CONFIG
                ) from None
            batch = []
        yield from batch
        if len(batch) == page:
            continue  # a burst: read on at once
        if deadline is None:
            sleep(polling.interval)
            continue
        left = deadline - clock()
        if left <= 0:
            return
        sleep(min(polling.interval, left))


def _follow_events(
    cfg: Config,
    chair: str | None,
    kind: str | None,
    since: float | None,
    limit: int,
    polling: Polling,
    max_records: int,
    as_json: bool,
) -> None:
    """``events --follow``: the backlog, then new records as they come, until Ctrl-C, the
    timeout, ``max_records`` or the reader of a pipe going away (all exit 0)."""
    out = sys.stdout
    try:
        with _db(cfg) as conn:
            try:
                recent, cursor = latest_records(
                    conn, chair=chair, kind=kind, since=since, limit=limit
                )
            except sqlite3.Error as e:
                raise CliError(
                    "cannot read the gateway database %s (%s)" % (cfg.db_path, e), CONFIG
                ) from None
            id_width = max(6, len(str(cursor)) + 1)
            if not as_json:
                _write(out, event_header(id_width))
            printed = 0
            for r in itertools.chain(
                recent,
                follow_records(
                    conn,
                    cfg.db_path,
                    after_id=cursor,
                    chair=chair,
                    kind=kind,
                    since=since,
                    polling=polling,
                ),
            ):
                _write(
                    out,
                    json.dumps(event_json(r), default=str) if as_json else event_line(r, id_width),
                )
                printed += 1
                if max_records and printed >= max_records:
                    break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # the reader went away (`ivgw events -f | head`): a normal end. Point stdout at
        # /dev/null so Python's exit-time flush does not complain about the pipe again.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())


def _write(out: Any, line: str | Text) -> None:
    if isinstance(line, Text):
        # rendered by the shared console (colour only on a terminal) but written here, so a
        # closed pipe is a BrokenPipeError for the caller, not the console's own exit
        with console.capture() as cap:
            console.print(line, soft_wrap=True, highlight=False)
        out.write(cap.get())
    else:
        out.write(line + "\n")
    out.flush()


# --- sessions, export, report ---------------------------------------------------------------
