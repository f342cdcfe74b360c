"""Shared CLI plumbing: the console, the configuration option, exit codes, clean errors.

Exit codes (docs/cli.md):
  0  done
  1  refused or failed: a check found problems (validation errors, a hard dose limit,
     an audit chain that does not verify, an interlock that cannot be acknowledged)
  2  usage error (bad option or argument; typer/click's own code)
  3  not found: unknown chair, node, session or file
  4  the gateway or the broker is not reachable
  5  configuration, permission or database problem
Every error a user can cause is one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from gateway.config import Config, ConfigError, load

OK, REFUSED, USAGE, NOT_FOUND, UNREACHABLE, CONFIG = 0, 1, 2, 3, 4, 5

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors stay one line, never wrapped

ConfigOption = typer.Option(
    None, "--config", "-c", envvar="IVGW_CONFIG",
    help="Gateway configuration (TOML). Default: $IVGW_CONFIG, else built-in defaults "
         "(data in ./ivgw-data).",
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


class CliError(Exception):
    def __init__(self, message: str, code: int = REFUSED):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = REFUSED) -> None:
    raise CliError(message, code)


def config(path: Path | None) -> Config:
    try:
        return load(path)
    except ConfigError as e:
        raise CliError(str(e), CONFIG) from None


F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn the errors a user can cause into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from gateway.db import DatabaseError

        try:
            return fn(*args, **kwargs)
        except CliError as e:
            err_console.print("[bold red]error:[/] %s" % e, highlight=False)
            raise typer.Exit(e.code) from None
        except ConfigError as e:
            code = UNREACHABLE if "not running" in str(e) else CONFIG
            err_console.print("[bold red]error:[/] %s" % e, highlight=False)
            raise typer.Exit(code) from None
        except DatabaseError as e:
            err_console.print("[bold red]error:[/] %s" % e, highlight=False)
            raise typer.Exit(CONFIG) from None
        except PermissionError as e:
            err_console.print("[bold red]error:[/] permission denied: %s" % (e.filename or e),
                              highlight=False)
            raise typer.Exit(CONFIG) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
