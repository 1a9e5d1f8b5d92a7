"""`nst run` and `nst status`: thin Typer commands over `run_manifest` and `collect_status`.

Registered on the root app by pipeline/cli/app.py (`app.command("run")(run_command)`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from nst_core.params import Arch, StyleParams
from pipeline.cli.options import (
    PROGRESS_INTERVAL_S,
    ArchOpt,
    CompileOpt,
    NoProgressOpt,
    ProgressIntervalOpt,
    QuietOpt,
    StorageOptionOpt,
    WeightsOpt,
    WeightsSha256Opt,
    with_style_params,
)
from pipeline.cli.progress import RunProgress, summary_table
from pipeline.cli.run_options import (
    AddressOpt,
    BatchSizeOpt,
    ForceOpt,
    JsonSummaryOpt,
    ManifestArg,
    MaxAttemptsOpt,
    MaxPixelsOpt,
    MaxRowsOpt,
    MaxWorkersOpt,
    OutOpt,
    ReadTimeoutOpt,
    RequestGpusOpt,
    RetryFailedOpt,
    StorageTimeoutOpt,
    WorkersOpt,
)
from pipeline.cli.status_view import render_status
from pipeline.cluster.process import exit_code, install_stop_handlers, stdout_to_stderr
from pipeline.cluster.tasks import DEFAULT_MAX_PIXELS, READ_TIMEOUT_S, STORAGE_TIMEOUT_S
from pipeline.run.manifest_run import run_manifest
from pipeline.run.options import DEFAULT_MAX_ROWS, RunOptions
from pipeline.run.status import collect_status
from pipeline.run.summary import RunSummary
from pipeline.store.fs import parse_storage_options

EXIT_ROWS_FAILED = 2
"""Exit code when the run finished but some rows are failed (their errors are in the ledger)."""


console = Console(stderr=True)


@with_style_params
def run_command(
    manifest: ManifestArg,
    out: OutOpt,
    address: AddressOpt = None,
    batch_size: BatchSizeOpt = "auto",
    max_attempts: MaxAttemptsOpt = 3,
    retry_failed: RetryFailedOpt = False,
    workers: WorkersOpt = None,
    max_workers: MaxWorkersOpt = None,
    request_gpus: RequestGpusOpt = False,
    weights: WeightsOpt = "imagenet",
    weights_sha256: WeightsSha256Opt = None,
    arch: ArchOpt = Arch.vgg19,
    storage_option: StorageOptionOpt = None,
    compile: CompileOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_rows: MaxRowsOpt = DEFAULT_MAX_ROWS,
    storage_timeout: StorageTimeoutOpt = STORAGE_TIMEOUT_S,
    read_timeout: ReadTimeoutOpt = READ_TIMEOUT_S,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    no_progress: NoProgressOpt = False,
    progress_interval: ProgressIntervalOpt = PROGRESS_INTERVAL_S,
    json_summary: JsonSummaryOpt = False,
    *,
    params: StyleParams,
) -> None:
    """Stylise every row of MANIFEST not yet done in --out, on Ray; re-run the same command to resume.

    Every engine option below is the run-level default; manifest columns override it per row.
    Exit codes: 0 all rows done, 2 some rows failed (see `nst status`), 1 error; stopped by a signal:
    128 + its number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP) after recording the results received so far.

    Example: nst run jobs.parquet --out s3://bucket/run1 --size 512 --steps 300
    """
    install_stop_handlers()
    given = dict(locals())  # the options named like RunOptions' fields are those fields
    options = RunOptions(
        **{k: v for k, v in given.items() if k in RunOptions.__dataclass_fields__},
        storage_options=parse_storage_options(storage_option),
        num_workers=workers,
    )
    display = RunProgress(enabled=not (quiet or no_progress), interval=progress_interval)
    summary = _guarded(options, display, json_only=json_summary)
    if json_summary:
        typer.echo(json.dumps(summary.to_dict(), default=str, sort_keys=True))
    else:
        print_summary(summary)
    raise typer.Exit(_exit_code(summary))


def _exit_code(summary: RunSummary) -> int:
    if summary.interrupted:
        return exit_code()
    if summary.aborted:
        console.print(f"[bold red]error:[/] run stopped: {escape(summary.aborted)}", highlight=False)
        return 1
    return EXIT_ROWS_FAILED if summary.failed or summary.not_retried else 0


def print_summary(summary: RunSummary) -> None:
    """The run's closing note and summary table (also printed by `nst demo`)."""
    if summary.note:
        console.print(f"[yellow]note:[/] {summary.note}")
    console.print(summary_table(summary))


def status_command(
    out: Annotated[str, typer.Argument(help="Output folder or URI of a run.")],
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    storage_option: StorageOptionOpt = None,
) -> None:
    """Counts by status, throughput and failures grouped by error kind (with example rows) for a run's --out.

    Example: nst status s3://bucket/run1 --json
    """
    report = collect_status(out, parse_storage_options(storage_option))
    if json_output:
        typer.echo(json.dumps(report, default=str, sort_keys=True))
    else:
        Console().print(render_status(report))


def _guarded(options: RunOptions, display: RunProgress, *, json_only: bool) -> RunSummary:
    """`run_manifest` with a stop signal outside the driver loop (planning, worker start-up) exiting
    128 + its number, and, for --json, everything else written to stdout sent to stderr."""
    try:
        with stdout_to_stderr(json_only):
            return run_manifest(options, on_event=display)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(exit_code()) from None
