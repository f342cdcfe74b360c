"""``ivgw demo``: the whole system on embedded defaults, on one machine, in a few minutes.

It starts an embedded MQTT broker (amqtt; ``--broker mosquitto`` uses a local Mosquitto
instead), the real gateway, and N emulated chairs - each the real firmware in MicroPython
with an emulated pump, oximeter and monitor driven by a patient model - then plays an
accelerated ketamine session (scenarios/demo.toml: two uneventful sessions and one
desaturation that trips its chair's interlock), shows the live dashboard, and ends by
writing every session's report and printing where they are.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from gateway.cli import app
from gateway.cli.common import REFUSED, CliError, console, friendly
from gateway.cli.ops import chairs_table

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIO = ROOT / "scenarios" / "demo.toml"


@app.command()
@friendly
def demo(
    chairs: int = typer.Option(None, help="Number of chairs (default: the scenario's, 3)."),
    speed: float = typer.Option(None, help="Scenario seconds per real second "
                                "(default: the scenario's, 20)."),
    scenario: Path = typer.Option(DEFAULT_SCENARIO, help="Scenario file (TOML, docs/scenarios.md)."),
    broker: str = typer.Option("embedded", help="'embedded' (amqtt, no install needed) or "
                               "'mosquitto' (a local Mosquitto on a free port)."),
    out: Path = typer.Option(None, help="Where the run's logs, database and reports go "
                             "(default: a new folder under ./ivgw-demo)."),
    live: bool = typer.Option(True, "--live/--no-live", help="Show the live dashboard "
                              "(--no-live: plain log lines, for scripts)."),
    duration: float = typer.Option(None, help="Stop after this many scenario seconds "
                                   "(default: the scenario's)."),
) -> None:
    """Run the demo: gateway, broker and emulated chairs; one chair trips an interlock."""
    import dataclasses

    from testbed.run_scenario import ScenarioRun
    from testbed.scenario import ScenarioError, load

    try:
        sc = load(scenario)
    except (ScenarioError, OSError) as e:
        raise CliError(str(e), 3 if isinstance(e, OSError) else REFUSED) from None
    if speed is not None:
        sc = dataclasses.replace(sc, speed=speed)
    if duration is not None:
        sc = dataclasses.replace(sc, duration_s=duration)
    base = Path(out) if out else Path("ivgw-demo") / time.strftime("%Y%m%d-%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    if broker == "embedded":
        from testbed.amqtt_broker import AmqttBroker

        brk = AmqttBroker(base / "broker")
    elif broker == "mosquitto":
        from testbed.mosquitto import MosquittoBroker

        brk = MosquittoBroker(base / "broker", persistence=True,
                              extra_config=("max_queued_messages 100000",))
    else:
        raise CliError("--broker must be 'embedded' or 'mosquitto', not %r" % broker, 2)

    events: list[str] = []

    def note(msg: str) -> None:
        events.append(msg)
        if not live:
            console.print(msg, highlight=False)

    run = ScenarioRun(sc, base, broker=brk, chairs=chairs, on_event=note)
    console.print("demo: scenario %r, %d chairs, %gx speed, %.0f s of scenario (~%.0f s); "
                  "files in %s" % (sc.name, len(run.runs), sc.speed, sc.duration_s,
                                   sc.real_s(sc.duration_s), base), highlight=False)
    try:
        run.start()
        if live:
            with Live(console=console, refresh_per_second=2) as view:
                last = [0.0]

                def refresh() -> None:
                    if time.monotonic() - last[0] < 0.5:
                        return
                    last[0] = time.monotonic()
                    view.update(_dashboard(run, events))

                run.run(refresh)
        else:
            run.run()
        outcomes = run.outcomes()
        reports = _reports(run, base)
    finally:
        run.close()
    _summary(outcomes, reports, base)
    if any(not o.ok for o in outcomes):
        raise CliError("the demo did not go as its scenario expects (see above)", REFUSED)


def _dashboard(run, events: list[str]) -> Panel:
    try:
        chairs = run.bench.status()["chairs"]
    except Exception:  # noqa: BLE001 - the dashboard must not kill the demo
        chairs = []
    t = chairs_table(chairs)
    log = Table.grid()
    for line in events[-6:]:
        log.add_row(line)
    grid = Table.grid()
    grid.add_row(t)
    grid.add_row(log)
    return Panel(grid, title="ivgw demo - scenario time %s / %s (x%g)" % (
        _mmss(run.now), _mmss(run.scenario.duration_s), run.scenario.speed))


def _mmss(s: float) -> str:
    return "%d:%02d" % (s // 60, s % 60)


def _reports(run, base: Path) -> list[Path]:
    from gateway import report
    from gateway.db import open_db

    out = []
    conn = open_db(run.bench.config().db_path, readonly=True)
    try:
        for r in run.runs:
            for sid in r.sessions:
                data = report.load_session(conn, sid)
                if data is None:
                    continue
                files = report.render_report(conn, data, base / "reports")
                out += [files.png, files.pdf]
    finally:
        conn.close()
    return out


def _summary(outcomes, reports: list[Path], base: Path) -> None:
    t = Table(title="demo outcome")
    for col in ("chair", "sessions", "delivered mL", "programmed mL", "dose error", "trips",
                "as expected"):
        t.add_column(col)
    for o in outcomes:
        t.add_row(o.chair, ",".join(map(str, o.sessions)) or "-", "%.2f" % (o.delivered_ul / 1000),
                  "%.2f" % (o.programmed_ul / 1000),
                  "-" if o.dose_error_pct is None else "%.2f %%" % o.dose_error_pct,
                  "; ".join("%s (stop sent %.0f ms after the breach)" % (r, lat or 0)
                            for r, _, lat in o.trips) or "none",
                  "[green]yes[/]" if o.ok else "[red]%s[/]" % "; ".join(o.problems))
    console.print(t)
    console.print("session reports:")
    for p in reports:
        console.print("  %s" % p, highlight=False)
    console.print("logs, database and gateway config: %s" % base, highlight=False)
