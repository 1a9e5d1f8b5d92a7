"""The `nst` command: a thin Typer root that registers each command group and turns errors into one line.

Entry point of the console script. Commands live in their own modules (stylize, manifest, run, report,
demo); this module only wires them and owns the top-level error handling. No command module imports
torch, torchvision or Ray at import time (each command imports them when it runs), so `nst --help`, every
usage error and every shell-completion TAB stay well under a second of start-up.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from pipeline.cli.demo import demo_command
from pipeline.cli.errors import DEBUG_ENV, print_error
from pipeline.cli.manifest import manifest_app
from pipeline.cli.report import report_command
from pipeline.cli.run import run_command, status_command
from pipeline.cli.stylize import stylize_command

CONTEXT = {"help_option_names": ["-h", "--help"]}
"""`-h` and `--help` on every command (sub-commands inherit the root's context settings)."""


app = typer.Typer(
    name="nst",
    help="Distributed batch neural style transfer (Gatys et al.) on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings=CONTEXT,
    epilog="Set NST_DEBUG=1 for full tracebacks. Docs: README.md and docs/.",
)


app.command("stylize", no_args_is_help=True)(stylize_command)


app.add_typer(manifest_app, name="manifest")


app.command("run", no_args_is_help=True)(run_command)


app.command("status", no_args_is_help=True)(status_command)


app.command("report", no_args_is_help=True)(report_command)


app.command("demo")(demo_command)


def version_text() -> str:
    from importlib import metadata

    try:
        return f"nst {metadata.version('nst-pipeline')}"
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "nst (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Distributed batch neural style transfer (Gatys et al.) on Ray."""


def main() -> None:
    """Run the CLI; unexpected errors become one line and exit code 1 (tracebacks behind NST_DEBUG=1)."""
    try:
        app()
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for the user
        if os.environ.get(DEBUG_ENV):
            raise
        print_error(exc)
        sys.exit(1)
