"""``ivgw druglib validate|show|diff`` and ``ivgw rules validate`` on real and broken files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.druglib import DrugLibraryError, load_library
from gateway.interlocks import RulesError, load_ruleset

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "config" / "druglib.example.yaml"
RULES = ROOT / "config" / "rules.example.yaml"
runner = CliRunner(env={"COLUMNS": "250"})


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.stdout, r.stderr


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def edited(tmp_path: Path, name: str, source: Path, *pairs: tuple[str, str]) -> Path:
    text = source.read_text()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    p = tmp_path / name
    p.write_text(text)
    return p


# --- druglib validate ---------------------------------------------------------------------


def test_validate_accepts_the_example_and_summarizes_it() -> None:
    code, out, _ = run("druglib", "validate", str(LIBRARY))
    lib = load_library(LIBRARY)
    assert code == 0
    assert "%s: ok: %s, version %s" % (LIBRARY, lib.name, lib.version) in out
    assert lib.sha256 in out
    assert "2 care areas, 3 drug entries" in out
    assert "ketamine-trd: ketamine, sodium-chloride-0-9" in out
    assert "EXAMPLE" in out
    code, out, _ = run("druglib", "validate", str(LIBRARY), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["sha256"] == lib.sha256
    assert data["care_areas"]["recovery"] == ["sodium-chloride-0-9"] and data["drugs"] == 3


def test_validate_prints_every_problem_with_file_line_and_column(tmp_path: Path) -> None:
    bad = edited(
        tmp_path,
        "bad.yaml",
        LIBRARY,
        (
            "          upper_hard: 1.0                 # guideline cap",
            "          uper_hard: 1.0                  # guideline cap",
        ),
        ("concentrations: [1, 2]", "concentrations: [1, -2]"),
        ("upper_hard: 90", 'upper_hard: "90"'),
    )
    with pytest.raises(DrugLibraryError) as exc:
        load_library(bad)
    expected = [str(i) for i in exc.value.issues]
    assert len(expected) >= 3
    code, out, err = run("druglib", "validate", str(bad))
    assert code == 1 and out == ""
    lines = [ln for ln in err.splitlines() if not ln.startswith("error:")]
    assert lines == expected
    for ln in lines:
        assert re.match(r"^%s:\d+:\d+: \S+: " % re.escape(str(bad)), ln), ln
    assert any("uper_hard" in ln for ln in lines)
    assert error_line(err) == "error: %s: %d problems found" % (bad, len(expected))
    code, out, err = run("druglib", "validate", str(bad), "--json")
    assert code == 1 and json.loads(out) == {"file": str(bad), "ok": False, "issues": expected}


def test_validate_missing_file_or_folder_is_not_found(tmp_path: Path) -> None:
    code, _, err = run("druglib", "validate", str(tmp_path / "nope.yaml"))
    assert code == 3 and error_line(err) == "error: %s: file not found" % (tmp_path / "nope.yaml")
    code, _, err = run("druglib", "show", str(tmp_path))
    assert code == 3 and "is a folder" in error_line(err)


def test_validate_not_yaml(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_bytes(b"\xff\xfe not text")
    code, _, err = run("druglib", "validate", str(p))
    assert code == 1 and err.splitlines()[0].startswith(str(p) + ":")


# --- druglib show --------------------------------------------------------------------------


def test_show_lists_every_entry_and_limit() -> None:
    code, out, _ = run("druglib", "show", str(LIBRARY))
    assert code == 0
    for text in (
        "care area ketamine-trd",
        "care area recovery",
        "ketamine (Ketamine)",
        "1, 2 mg/mL, dosed in mg/kg/h, weight 40-160 kg",
        "sodium-chloride-0-9",
        "0.25",
        "0.75",
        "1.0",
        "mg/kg/h",
        "refused",
        "Keep-vein-open",
    ):
        assert text in out, text
    code, out, _ = run("druglib", "show", str(LIBRARY), "--json")
    data = json.loads(out)
    ket = data["care_areas"]["ketamine-trd"]["drugs"]["ketamine"]
    assert ket["rate"] == {
        "lower_hard": "0.25",
        "lower_soft": "0.5",
        "default": "0.75",
        "upper_soft": "0.9",
        "upper_hard": "1.0",
    }
    assert ket["bolus"] is None and ket["concentrations_mg_ml"] == ["1", "2"]
    assert ket["max_cumulative_dose"]["lower_hard"] is None
    assert data["sha256"] == load_library(LIBRARY).sha256


# --- druglib diff -------------------------------------------------------------------------


def test_diff_identical_libraries() -> None:
    code, out, _ = run("druglib", "diff", str(LIBRARY), str(LIBRARY), "--fail-on-loosened")
    assert code == 0 and "no differences" in out


def test_diff_groups_loosened_and_tightened(tmp_path: Path) -> None:
    new = edited(
        tmp_path,
        "new.yaml",
        LIBRARY,
        ('version: "2026-11-01.1"', 'version: "2026-11-02.1"'),
        (
            "          upper_hard: 1.0                 # guideline cap",
            "          upper_hard: 1.2                 # guideline cap",
        ),
        ("upper_hard: 90", "upper_hard: 80"),
    )
    code, out, _ = run("druglib", "diff", str(LIBRARY), str(new))
    assert code == 0
    lines = out.splitlines()
    loose = lines.index("loosened (allows more): 1")
    tight = lines.index("tightened (allows less): 1")
    other = lines.index("other changes: 1")
    assert loose < tight < other
    assert lines[loose + 1].strip() == (
        "changed care_areas.ketamine-trd.drugs.ketamine.rate."
        "upper_hard: 1.0 -> 1.2 mg/kg/h (loosened)"
    )
    assert "duration_min.upper_hard: 90 -> 80 min (tightened)" in lines[tight + 1]
    assert "version: 2026-11-01.1 -> 2026-11-02.1" in lines[other + 1]
    code, _, err = run("druglib", "diff", str(LIBRARY), str(new), "--fail-on-loosened")
    assert code == 1 and error_line(err) == "error: 1 limit loosened in %s" % new
    code, out, _ = run("druglib", "diff", str(LIBRARY), str(new), "--json")
    data = json.loads(out)
    assert [c["path"] for c in data["loosened"]] == [
        "care_areas.ketamine-trd.drugs.ketamine.rate.upper_hard"
    ]
    assert data["tightened"][0]["effect"] == "tightened" and data["other"][0]["path"] == "version"
    # reversed, 1.2 -> 1.0 is tightened but 80 -> 90 is loosened
    code, _, _ = run("druglib", "diff", str(new), str(LIBRARY), "--fail-on-loosened")
    assert code == 1
    # only tightened: --fail-on-loosened passes
    tight_only = edited(tmp_path, "tight.yaml", LIBRARY, ("upper_hard: 90", "upper_hard: 80"))
    code, _, _ = run("druglib", "diff", str(LIBRARY), str(tight_only), "--fail-on-loosened")
    assert code == 0


def test_diff_with_a_broken_file_lists_its_problems(tmp_path: Path) -> None:
    bad = edited(tmp_path, "bad.yaml", LIBRARY, ("dosing_unit: mg/kg/h", "dosing_unit: mg/kg"))
    code, _, err = run("druglib", "diff", str(LIBRARY), str(bad))
    assert code == 1 and err.splitlines()[0].startswith(str(bad) + ":")
    code, _, err = run("druglib", "diff", str(tmp_path / "none.yaml"), str(LIBRARY))
    assert code == 3 and "file not found" in error_line(err)


# --- rules validate -----------------------------------------------------------------------


def test_rules_validate_ok_prints_the_summary() -> None:
    code, out, _ = run("rules", "validate", str(RULES))
    assert code == 0 and out.strip() == load_ruleset(RULES).summary()
    code, out, _ = run("rules", "validate", str(RULES), "--json")
    data = json.loads(out)
    assert data["ok"] is True and data["sha256"] == load_ruleset(RULES).sha256


def test_rules_validate_prints_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text('format: 1\nprotocol: x\nversion: "1"\nbogus: 3\n')
    with pytest.raises(RulesError) as exc:
        load_ruleset(bad)
    expected = [str(i) for i in exc.value.issues]
    code, _, err = run("rules", "validate", str(bad))
    assert code == 1
    assert [ln for ln in err.splitlines() if not ln.startswith("error:")] == expected
    assert any(re.match(r"^%s:4:1: " % re.escape(str(bad)), ln) for ln in expected)
    assert "%d problems found" % len(expected) in error_line(err)
    code, _, err = run("rules", "validate", str(tmp_path / "none.yaml"))
    assert code == 3 and "file not found" in error_line(err)


MINE = (
    "init",
    "provision",
    "broker-config",
    "flash",
    "keys",
    "druglib",
    "rules",
    "audit",
    "events",
    "sessions",
    "export",
    "report",
)


def test_every_command_and_option_of_these_modules_has_help() -> None:
    import typer.main

    group = typer.main.get_command(app)
    seen = 0

    def walk(cmd: object, path: str) -> None:
        nonlocal seen
        subs = getattr(cmd, "commands", None)
        if subs is not None:
            assert getattr(cmd, "help", None), path
            for name, sub in subs.items():
                walk(sub, path + " " + name)
            return
        seen += 1
        assert (getattr(cmd, "help", None) or "").strip(), path
        for param in getattr(cmd, "params", []):
            assert (getattr(param, "help", None) or "").strip(), "%s %s" % (path, param.name)
        code, out, _ = run(*path.split()[1:], "--help")
        assert code == 0 and "Usage" in out, path

    for name in MINE:
        walk(group.commands[name], "ivgw " + name)  # type: ignore[attr-defined]
    assert seen == 17
