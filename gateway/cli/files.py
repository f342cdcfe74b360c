"""Clinical files: ``druglib validate|show|diff`` and ``rules validate`` (docs/cli.md "Files").

These run before a file is deployed, on any machine, without a gateway: a library or rule
set is reviewed by reading what it allows (``show``) and what changed (``diff``), and only a
file that ``validate`` accepts can ever be loaded by the gateway (it uses the same loaders).
Every problem is printed as ``FILE:LINE:COL: path: message``, one per line, like a compiler,
so an editor can jump to it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from gateway.cli import app
from gateway.cli.common import (
    NOT_FOUND,
    REFUSED,
    CliError,
    JsonOption,
    console,
    err_console,
    friendly,
    print_json,
)
from gateway.druglib import (
    Change,
    DrugEntry,
    DrugLibrary,
    DrugLibraryError,
    Limits,
    diff_libraries,
    load_library,
)
from gateway.interlocks import RulesError, RuleSet, load_ruleset

druglib_app = typer.Typer(
    name="druglib",
    no_args_is_help=True,
    help="Drug library files: validate, show, diff (docs/druglib.md).",
)
rules_app = typer.Typer(
    name="rules", no_args_is_help=True, help="Interlock rule files: validate (docs/interlocks.md)."
)
app.add_typer(druglib_app, name="druglib")
app.add_typer(rules_app, name="rules")

_LIMIT_FIELDS = ("lower_hard", "lower_soft", "default", "upper_soft", "upper_hard")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise CliError("%s: file not found" % path, NOT_FOUND)
    if path.is_dir():
        raise CliError("%s: is a folder, not a file" % path, NOT_FOUND)
    return path


def _issues(lines: list[str], as_json: bool, source: Path) -> None:
    """Print every problem (one per line) and fail with exit code 1."""
    if as_json:
        print_json({"file": str(source), "ok": False, "issues": lines})
    else:
        for line in lines:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise CliError(
        "%s: %d problem%s found" % (source, len(lines), "" if len(lines) == 1 else "s"), REFUSED
    )


def _library(path: Path, as_json: bool = False) -> DrugLibrary:
    _existing(path)
    try:
        return load_library(path)
    except DrugLibraryError as e:
        _issues([str(i) for i in e.issues], as_json, path)
        raise AssertionError("unreachable") from None


def _num(d: Decimal | None) -> str:
    return "-" if d is None else str(d)


def _limits_dict(limits: Limits | None) -> dict[str, str | None] | None:
    if limits is None:
        return None
    return {
        f: (None if getattr(limits, f) is None else str(getattr(limits, f))) for f in _LIMIT_FIELDS
    }


def entry_dict(e: DrugEntry) -> dict[str, Any]:
    """A drug entry as JSON-ready data (numbers as exact decimal strings)."""
    return {
        "name": e.name,
        "concentrations_mg_ml": [str(c) for c in e.concentrations],
        "dosing_unit": str(e.dosing_unit),
        "weight_kg": None
        if e.weight_kg is None
        else {"min": str(e.weight_kg.min), "max": str(e.weight_kg.max)},
        "rate": _limits_dict(e.rate),
        "bolus": _limits_dict(e.bolus),
        "max_cumulative_dose": _limits_dict(e.max_cumulative_dose),
        "duration_min": _limits_dict(e.duration_min),
        "advisory": e.advisory,
    }


def library_dict(lib: DrugLibrary) -> dict[str, Any]:
    return {
        "file": lib.source,
        "name": lib.name,
        "version": lib.version,
        "approved_by": lib.approved_by,
        "approved_on": str(lib.approved_on),
        "sha256": lib.sha256,
        "care_areas": {
            a.id: {
                "description": a.description,
                "drugs": {d.id: entry_dict(d) for d in a.drugs.values()},
            }
            for a in lib.care_areas.values()
        },
    }


@druglib_app.command("validate")
@friendly
def druglib_validate(
    file: Annotated[Path, typer.Argument(help="Drug library YAML file.")],
    as_json: bool = JsonOption,
) -> None:
    """Check a drug library; print every problem as FILE:LINE:COL: path: message (exit 1)."""
    lib = _library(file, as_json)
    drugs = sum(len(a.drugs) for a in lib.care_areas.values())
    if as_json:
        print_json(
            {
                "file": str(file),
                "ok": True,
                "name": lib.name,
                "version": lib.version,
                "sha256": lib.sha256,
                "care_areas": {a.id: sorted(a.drugs) for a in lib.care_areas.values()},
                "drugs": drugs,
            }
        )
        return
    console.print(
        "%s: ok: %s, version %s" % (file, lib.name, lib.version),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print("sha256 %s" % lib.sha256, highlight=False, soft_wrap=True)
    console.print(
        "%d care area%s, %d drug entr%s:"
        % (
            len(lib.care_areas),
            "" if len(lib.care_areas) == 1 else "s",
            drugs,
            "y" if drugs == 1 else "ies",
        ),
        highlight=False,
    )
    for a in lib.care_areas.values():
        console.print(
            "  %s: %s" % (a.id, ", ".join(a.drugs) or "no drugs"),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if "EXAMPLE" in (lib.name + lib.approved_by).upper():
        console.print("[yellow]this is an EXAMPLE library, not approved for clinical use[/]")


@druglib_app.command("show")
@friendly
def druglib_show(
    file: Annotated[Path, typer.Argument(help="Drug library YAML file.")],
    as_json: bool = JsonOption,
) -> None:
    """Every care area, drug entry and limit of a library, for review."""
    lib = _library(file)
    if as_json:
        print_json(library_dict(lib))
        return
    console.print(
        "[bold]%s[/], version %s, approved by %s on %s"
        % (escape(lib.name), escape(lib.version), escape(lib.approved_by), lib.approved_on),
        highlight=False,
        soft_wrap=True,
    )
    console.print("sha256 %s" % lib.sha256, highlight=False, soft_wrap=True)
    for area in lib.care_areas.values():
        console.print()
        console.print(
            "[bold]care area %s[/]: %s" % (escape(area.id), escape(area.description)),
            highlight=False,
            soft_wrap=True,
        )
        for e in area.drugs.values():
            title = "%s (%s): %s mg/mL, dosed in %s" % (
                e.id,
                e.name,
                ", ".join(str(c) for c in e.concentrations),
                e.dosing_unit,
            )
            if e.weight_kg is not None:
                title += ", weight %s-%s kg" % (e.weight_kg.min, e.weight_kg.max)
            t = Table(
                title=escape(title),
                title_justify="left",
                caption=escape(e.advisory),
                caption_justify="left",
            )
            t.add_column("limit")
            for col in ("lower hard", "lower soft", "default", "upper soft", "upper hard"):
                t.add_column(col, justify="right")
            t.add_column("unit")
            dose_unit = e.dosing_unit.dose_unit
            blocks: list[tuple[str, Limits | None, str]] = [
                ("rate", e.rate, str(e.dosing_unit)),
                ("bolus", e.bolus, dose_unit),
                ("max dose", e.max_cumulative_dose, dose_unit),
                ("duration", e.duration_min, "min"),
            ]
            for name, lim, unit in blocks:
                if lim is None:
                    t.add_row(name, "[red]refused[/]", "", "", "", "", "")
                else:
                    t.add_row(name, *[_num(getattr(lim, f)) for f in _LIMIT_FIELDS], unit)
            console.print(t)


def change_dict(c: Change) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "path": c.path,
        "old": c.old,
        "new": c.new,
        "unit": c.unit,
        "effect": c.effect,
        "text": str(c),
    }


@druglib_app.command("diff")
@friendly
def druglib_diff(
    old: Annotated[Path, typer.Argument(help="The library in use.")],
    new: Annotated[Path, typer.Argument(help="The proposed library.")],
    fail_on_loosened: bool = typer.Option(
        False, "--fail-on-loosened", help="Exit 1 if any limit is loosened (allows more)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """What changed between two libraries, limit by limit, loosened and tightened first.

    Exit 0 whether or not they differ, unless --fail-on-loosened and a limit allows more."""
    a, b = _library(old), _library(new)
    changes = diff_libraries(a, b)
    loosened = [c for c in changes if c.effect == "loosened"]
    tightened = [c for c in changes if c.effect == "tightened"]
    other = [c for c in changes if c.effect not in ("loosened", "tightened")]
    if as_json:
        data = {
            "old": {"file": str(old), "version": a.version, "sha256": a.sha256},
            "new": {"file": str(new), "version": b.version, "sha256": b.sha256},
            "loosened": [change_dict(c) for c in loosened],
            "tightened": [change_dict(c) for c in tightened],
            "other": [change_dict(c) for c in other],
        }
        print_json(data)
    else:
        console.print(
            "%s (%s) -> %s (%s)" % (old, a.ident, new, b.ident),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if not changes:
            console.print("no differences")
        for title, group, colour in (
            ("loosened (allows more)", loosened, "red"),
            ("tightened (allows less)", tightened, "green"),
            ("other changes", other, "default"),
        ):
            if group:
                console.print("[bold %s]%s: %d[/]" % (colour, title, len(group)))
                for c in group:
                    console.print("  " + str(c), markup=False, highlight=False, soft_wrap=True)
    if fail_on_loosened and loosened:
        raise CliError(
            "%d limit%s loosened in %s" % (len(loosened), "" if len(loosened) == 1 else "s", new),
            REFUSED,
        )


@rules_app.command("validate")
@friendly
def rules_validate(
    file: Annotated[Path, typer.Argument(help="Interlock rules YAML file.")],
    as_json: bool = JsonOption,
) -> None:
    """Check an interlock rule file; print every problem as FILE:LINE:COL: path: message."""
    _existing(file)
    try:
        rules: RuleSet = load_ruleset(file)
    except RulesError as e:
        _issues([str(i) for i in e.issues], as_json, file)
        return
    if as_json:
        print_json(
            {
                "file": str(file),
                "ok": True,
                "protocol": rules.protocol,
                "version": rules.version,
                "sha256": rules.sha256,
                "parameters": [p.name for p in rules.parameters],
                "summary": rules.summary(),
            }
        )
        return
    console.print(rules.summary(), markup=False, highlight=False, soft_wrap=True)
