"""The `nst` command line: Typer commands, their options and the terminal display; no run logic, no Ray.

`main` is the console script's entry point (`pipeline.cli:main`); `python -m pipeline.cli` runs the same.
"""

from pipeline.cli.app import main

__all__ = ["main"]
