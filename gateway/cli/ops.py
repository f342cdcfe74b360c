"""Operations and clinical actions: ``run``, ``status``, ``devices``, ``watch``, ``program``,
``start``, ``stop``, ``ack``. Everything but ``run`` talks to the running gateway through
its control socket (a Unix socket only the gateway's user can open)."""

from __future__ import annotations

import logging
import signal
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from gateway.cli import app
from gateway.cli.common import (
    NOT_FOUND,
    REFUSED,
    UNREACHABLE,
    CliError,
    ConfigOption,
    JsonOption,
    config,
    console,
    err_console,
    friendly,
    print_json,
)
from gateway.service import ServiceError, control_request


@app.command()
@friendly
def run(
    config_path: Path = ConfigOption,
    workers: int = typer.Option(None, "--workers", help="Verification worker processes "
                                "(default from the configuration, 1)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every decision."),
) -> None:
    """Run the gateway service (until SIGTERM or Ctrl-C)."""
    import dataclasses

    from gateway.druglib import DrugLibraryError
    from gateway.interlocks import RulesError
    from gateway.service import Gateway

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    cfg = config(config_path)
    if workers is not None:
        cfg = dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, workers=workers))
    try:
        gw = Gateway(cfg, create_key=config_path is None)
    except (DrugLibraryError, RulesError) as e:
        raise CliError(str(e), REFUSED) from None
    except ServiceError as e:
        raise CliError(str(e), REFUSED) from None
    signal.signal(signal.SIGTERM, lambda *a: gw.stop())
    try:
        gw.start()
    except ServiceError as e:
        gw.close()
        raise CliError(str(e), UNREACHABLE) from None
    console.print("gateway running: epoch %d, %d chairs, data in %s"
                  % (gw.epoch, len(gw.core.chairs), cfg.data_dir), highlight=False)
    try:
        gw.run_forever()
    except KeyboardInterrupt:
        gw.stop()


def _call(config_path: Path | None, req: dict[str, Any]) -> Any:
    resp = control_request(config(config_path), req)
    if not resp.get("ok"):
        code = {"unknown": NOT_FOUND, "offline": UNREACHABLE}.get(resp.get("code", ""), REFUSED)
        raise CliError(resp.get("error", "refused"), code)
    return resp["result"]


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    return "%ds" % s if s < 120 else "%dm" % (s // 60)


def chairs_table(chairs: list[dict[str, Any]]) -> Table:
    t = Table(title="chairs", expand=False)
    for col in ("chair", "node", "online", "firmware", "pump", "rate mL/h", "infused mL",
                "last vitals (age)", "interlocks", "permit"):
        t.add_column(col)
    for c in chairs:
        vit = ", ".join("%s %g (%s)" % (v["name"].replace("MDC_", "").split("_")[-1],
                                        v["value"], _age(v.get("ageS")))
                        for v in c["vitals"][:4]) or "-"
        inter = "LATCHED " if c["latched"] else ""
        inter += "; ".join(c["interlocks"][:2])
        pump = c["pump"]
        t.add_row(
            "%s/%s" % (c["site"], c["chair"]), c["node"],
            "[green]yes[/]" if c["online"] else "[red]no[/]", c.get("firmware") or "-",
            pump["state"], "%.2f" % pump["rate"]["value"], "%.2f" % pump["volumeInfused"]["value"],
            vit, ("[red]%s[/]" % inter) if inter else "-",
            "%.1fs" % (c["permitRemainingMs"] / 1000) if c["permitRemainingMs"] else "-",
        )
    return t


@app.command()
@friendly
def status(config_path: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """The gateway's state: connection, counters, clinical files, chairs."""
    res = _call(config_path, {"op": "status"})
    if as_json:
        print_json(res)
        return
    g = res["gateway"]
    console.print("gateway %s, epoch %d, broker %s, %d packets processed, workers %d"
                  % (g["version"], g["epoch"], "connected" if g["connected"] else "DISCONNECTED",
                     g["processed"], g["workers"]), highlight=False)
    console.print("drug library %s, rules %s%s" % (
        g["library"], g["rules"], "  [yellow](EXAMPLE clinical settings)[/]" if g["examples"]
        else ""))
    if g["counters"]:
        console.print("counters: " + ", ".join("%s=%d" % kv for kv in sorted(g["counters"].items())),
                      highlight=False)
    console.print(chairs_table(res["chairs"]))


@app.command()
@friendly
def devices(config_path: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """One row per chair: node, online, firmware, pump, vitals and their age, interlocks, permit."""
    res = _call(config_path, {"op": "status"})
    if as_json:
        print_json(res["chairs"])
        return
    console.print(chairs_table(res["chairs"]))


@app.command()
@friendly
def watch(
    config_path: Path = ConfigOption,
    interval: float = typer.Option(1.0, help="Refresh period in seconds."),
    count: int = typer.Option(0, help="Stop after this many refreshes (0: until Ctrl-C)."),
) -> None:
    """A live dashboard of every chair, updated in place."""
    n = 0
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        while count == 0 or n < count:
            res = _call(config_path, {"op": "status"})
            live.update(chairs_table(res["chairs"]))
            n += 1
            if count == 0 or n < count:
                time.sleep(interval)


def _dec(value: str, what: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise CliError("%s: %r is not a number" % (what, value), 2) from None
    if not d.is_finite():
        raise CliError("%s must be a finite number" % what, 2)
    return d


@app.command()
@friendly
def program(
    chair: str = typer.Argument(..., help="SITE/CHAIR, e.g. north/c1."),
    drug: str = typer.Option(..., help="Drug id in the drug library, e.g. ketamine."),
    concentration: str = typer.Option(..., help="Concentration in mg/mL (one the library lists)."),
    weight: str = typer.Option(None, help="Patient weight in kg (weight-based dosing)."),
    dose: str = typer.Option(..., help="Dose rate in the library's dosing unit, e.g. 0.75 (mg/kg/h)."),
    duration: str = typer.Option(..., help="Infusion duration in minutes."),
    syringe_diameter: str = typer.Option("26.70", help="Syringe inner diameter in mm."),
    operator: str = typer.Option(..., envvar="IVGW_OPERATOR", help="Who programs (audited)."),
    override_reason: str = typer.Option(None, help="Reason for a soft-limit override "
                                        "(asked for interactively when needed)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask; refuse soft limits without "
                             "--override-reason."),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Program an infusion, checked against the drug library.

    A hard-limit breach is refused with the limit named. A soft-limit breach asks for
    confirmation and a reason (recorded with the operator's name)."""
    req: dict[str, Any] = {
        "op": "program", "chair": chair, "drug": drug,
        "concentration_mg_ml": str(_dec(concentration, "--concentration")),
        "weight_kg": str(_dec(weight, "--weight")) if weight is not None else None,
        "dose_rate": str(_dec(dose, "--dose")), "duration_min": str(_dec(duration, "--duration")),
        "diameter_cmm": int(_dec(syringe_diameter, "--syringe-diameter") * 100),
        "operator": operator, "override_reason": override_reason,
    }
    res = _call(config_path, dict(req, dry_run=True))
    if res["verdict"] == "soft" and not override_reason:
        _show_check(res)
        if yes:
            raise CliError("soft limit: %s; give --override-reason to proceed"
                           % "; ".join(v["message"] for v in res["violations"]))
        if not typer.confirm("Override the soft limit(s) above?", default=False):
            raise CliError("not programmed (soft-limit override declined)")
        req["override_reason"] = typer.prompt("Reason for the override")
    res = _call(config_path, req)
    if as_json:
        print_json(res)
    else:
        _show_check(res)
    if res["verdict"] == "hard":
        hard = [v for v in res["violations"] if v["hard"]]
        raise CliError("refused: hard limit %s: %s" % (hard[0]["limit"], hard[0]["message"])
                       if hard else "refused by the drug library")
    if "session" in res and not as_json:
        console.print("programmed: session %d, %.3f mL/h, %.3f mL to infuse"
                      % (res["session"], res["rate_ul_h"] / 1000, res["vtbi_ul"] / 1000))


def _show_check(res: dict[str, Any]) -> None:
    colour = {"ok": "green", "soft": "yellow", "hard": "red"}[res["verdict"]]
    console.print("drug library %s: [%s]%s[/]" % (res["library_version"], colour,
                                                   res["verdict"].upper()))
    for v in res["violations"]:
        err_console.print("  %s limit %s: %s" % ("HARD" if v["hard"] else "soft", v["limit"],
                                                 v["message"]), highlight=False)


@app.command()
@friendly
def start(
    chair: str = typer.Argument(..., help="SITE/CHAIR."),
    operator: str = typer.Option(..., envvar="IVGW_OPERATOR", help="Who starts (audited)."),
    config_path: Path = ConfigOption,
) -> None:
    """Start the programmed infusion (needs fresh vitals and no latched interlock)."""
    res = _call(config_path, {"op": "start", "chair": chair, "operator": operator})
    console.print("started chair %s, session %d" % (res["chair"], res["session"]))


@app.command()
@friendly
def stop(
    chair: str = typer.Argument(..., help="SITE/CHAIR."),
    operator: str = typer.Option(..., envvar="IVGW_OPERATOR", help="Who stops (audited)."),
    reason: str = typer.Option("e-stop", help="Why (audited)."),
    config_path: Path = ConfigOption,
) -> None:
    """Emergency stop: stop the pump now and latch the chair until `ivgw ack`."""
    res = _call(config_path, {"op": "stop", "chair": chair, "operator": operator,
                              "reason": reason})
    console.print("stop sent to chair %s; the chair is latched until acknowledged" % res["chair"])


@app.command()
@friendly
def ack(
    chair: str = typer.Argument(..., help="SITE/CHAIR."),
    operator: str = typer.Option(..., envvar="IVGW_OPERATOR", help="Who acknowledges (audited)."),
    reason: str = typer.Option(..., help="Why it is safe to go on (audited)."),
    config_path: Path = ConfigOption,
) -> None:
    """Acknowledge a latched interlock (refused while its cause is still present)."""
    res = _call(config_path, {"op": "ack", "chair": chair, "operator": operator,
                              "reason": reason})
    console.print(res["message"])
