"""Hardware-in-the-loop fixtures: a bench (broker + gateway + chairs) per test or module.

``--board PORT`` runs chair 1 on a real board (its USB console), with the emulators on the
host serial ports named by ``--board-wiring FILE`` (docs/hil.md). Without it, every chair is
the real firmware in the MicroPython unix port.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.bench import Bench


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--board", default=None, help="Serial port of a real board for chair 1.")
    parser.addoption("--board-wiring", default=None,
                     help="JSON: {uarts: {role: host port}, wiring: {role: {port, tx, rx}}}.")


@pytest.fixture
def make_bench(request: pytest.FixtureRequest, tmp_path: Path):
    benches: list[Bench] = []
    board = request.config.getoption("--board")
    board_cfg = None
    if board:
        wiring_file = request.config.getoption("--board-wiring")
        if not wiring_file:
            raise pytest.UsageError("--board needs --board-wiring FILE (see docs/hil.md)")
        board_cfg = dict(json.loads(Path(wiring_file).read_text()), port=board)
        missing = [k for k in ("uarts", "wiring", "broker_host") if k not in board_cfg]
        if missing:
            raise pytest.UsageError("--board-wiring %s: missing %s (see docs/hil.md)"
                                    % (wiring_file, ", ".join(missing)))

    def make(chairs: int = 1, **kw) -> Bench:
        if board_cfg is not None:
            kw.setdefault("chair_kwargs", {})["board"] = board_cfg
        bench = Bench(tmp_path / ("bench%d" % len(benches)), chairs, **kw)
        benches.append(bench)
        bench.start()
        return bench

    yield make
    failed = getattr(request.node, "rep_call", None)
    for b in benches:
        b.close()
        if failed is not None and failed.failed:
            print("\n" + b.describe_logs())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def figure(name: str, value: object) -> None:
    """Every scenario prints the figure it is about (stop latency, dose error, counts)."""
    print("\nFIGURE %s: %s" % (name, value))
