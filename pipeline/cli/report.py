"""`nst report OUT`: a thin Typer command over `pipeline.report.build_report`.

Registered on the root app by pipeline/cli/app.py (`app.command("report", no_args_is_help=True)(report_command)`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Optional

import typer
from rich.console import Console

from pipeline.cli.options import StorageOptionOpt
from pipeline.report import build_report
from pipeline.report.thumbs import DEFAULT_THUMB_SIZE
from pipeline.store.fs import parse_storage_options

__all__ = ["report_command"]


OutputOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--output", "-o", help="Where to write the HTML (a path or URI). Default: OUT/report.html."),
]
SheetOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--sheet", help="Also write a contact-sheet PNG of the content × style grid here."),
]
ManifestOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--manifest", help="Manifest for per-row parameters, if it moved since the run (default: run.json's)."),
]
EmbedOpt = Annotated[
    Optional[bool],  # noqa: UP045
    typer.Option(
        "--embed/--link",
        help="Embed thumbnails as data URIs (one portable file) or link images relatively. "
        "Default: link when the report can reach OUT by a relative URL, else embed.",
    ),
]
SheetCellOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--sheet-cell", min=8, help="Contact-sheet cell size in pixels (default: fit 8192 px)."),
]


def report_command(
    out: Annotated[str, typer.Argument(help="Output folder or URI of a run.")],
    output: OutputOpt = None,
    sheet: SheetOpt = None,
    manifest: ManifestOpt = None,
    embed: EmbedOpt = None,
    thumb_size: Annotated[int, typer.Option("--thumb-size", min=16, help="Thumbnail long side in pixels.")] = DEFAULT_THUMB_SIZE,
    sheet_cell: SheetCellOpt = None,
    storage_option: StorageOptionOpt = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print what was written (paths and row counts) as JSON on stdout.")
    ] = False,
) -> None:
    """A static HTML report of a run: summary, gallery with metrics, content × style grid, sweeps, failures.

    Thumbnails are made once under OUT/_report/thumbs/ and reused. Open the HTML from disk or from the
    bucket; nothing else is needed.

    OUT must hold a run (a run.json or a ledger); otherwise the command exits 1 and writes nothing.

    Example: nst report runs/night1 --sheet runs/night1/sheet.png
    """
    result = build_report(
        out=out,
        output=output,
        sheet=sheet,
        storage_options=parse_storage_options(storage_option),
        manifest=manifest,
        embed=embed,
        thumb_size=thumb_size,
        sheet_cell=sheet_cell,
    )
    if json_output:
        typer.echo(json.dumps(dataclasses.asdict(result), sort_keys=True))
        return
    console = Console(stderr=True)
    console.print(
        f"report: {result.report} ({result.rows} rows: {result.done} done, {result.failed} failed; "
        f"{'thumbnails embedded' if result.embedded else 'images linked'})",
        highlight=False, soft_wrap=True,
    )
    if result.sheet:
        console.print(f"sheet: {result.sheet}", highlight=False, soft_wrap=True)
