"""``ivgw``: the biomedical engineer's command line (docs/cli.md).

Commands are grouped by module: operations (ops.py), clinical actions (ops.py), files
(files.py), provisioning, keys, broker configuration and flashing (provision.py), records
(records.py), and the demo (demo.py). Each module registers its commands on ``app``.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ivgw",
    help="Chairside infusion gateway: provision nodes, run the gateway, watch chairs, "
         "act on infusions and investigate sessions.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

import importlib  # noqa: E402

for _name in ("ops", "files", "provision", "records", "events", "demo"):
    try:
        importlib.import_module("gateway.cli." + _name)
    except ModuleNotFoundError as _e:
        if _e.name != "gateway.cli." + _name:
            raise

__all__ = ["app"]
