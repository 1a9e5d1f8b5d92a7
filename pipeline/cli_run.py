"""`nst run` and `nst status`: thin Typer commands over `run_manifest` and `collect_status`.

Registered on the root app by pipeline/cli.py (`app.command("run")(run_command)`); also runnable alone as
`python -m pipeline.cli_run run …` for scripts that must not depend on the console entry point.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from nst_core.params import Arch, StyleParams
from pipeline.options import (
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
from pipeline.progress import summary_table
from pipeline.run import DEFAULT_MAX_ROWS, RunError, RunSummary, run_manifest
from pipeline.status import collect_status, render_status
from pipeline.storage import parse_storage_options
from pipeline.tasks import DEFAULT_MAX_PIXELS, STORAGE_TIMEOUT_S

__all__ = ["EXIT_ROWS_FAILED", "RunError", "RunSummary", "run_command", "run_manifest", "status_command"]

EXIT_ROWS_FAILED = 2
"""Exit code when the run finished but some rows are failed (their errors are in the ledger)."""
EXIT_INTERRUPTED = 130

console = Console(stderr=True)


@with_style_params
def run_command(
    manifest: Annotated[str, typer.Argument(help="Job manifest (Parquet): a path or any fsspec URI.")],
    out: Annotated[
        str, typer.Option("--out", help="Output folder or URI (images, curves, ledger, run.json).")
    ],
    address: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Ray cluster: 'auto', 'HOST:PORT' or 'ray://HOST:10001'; 'local' starts an embedded Ray. "
            "Default: $RAY_ADDRESS when set, else an embedded Ray on 127.0.0.1."
        ),
    ] = None,
    batch_size: Annotated[
        str, typer.Option("--batch-size", help="Rows per batch on one device, or 'auto' (from free memory).")
    ] = "auto",
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, help="Tries per row for transient errors, across re-runs.")
    ] = 3,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry every failed row again, bad input included.")
    ] = False,
    workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--workers", min=1, help="Actors: default one per GPU; on CPU-only clusters 1."),
    ] = None,
    weights: WeightsOpt = "imagenet",
    weights_sha256: WeightsSha256Opt = None,
    arch: ArchOpt = Arch.vgg19,
    storage_option: StorageOptionOpt = None,
    compile: CompileOpt = False,
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels",
            min=1,
            help="Largest input image (width x height) decoded; bigger ones fail their row.",
        ),
    ] = DEFAULT_MAX_PIXELS,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Refuse manifests with more rows than this.")
    ] = DEFAULT_MAX_ROWS,
    storage_timeout: Annotated[
        float,
        typer.Option(
            "--storage-timeout",
            min=0.001,
            help="Seconds storage may stay unreachable (rows wait, keeping their attempts) before the run stops.",
        ),
    ] = STORAGE_TIMEOUT_S,
    quiet: QuietOpt = False,
    no_progress: NoProgressOpt = False,
    progress_interval: ProgressIntervalOpt = PROGRESS_INTERVAL_S,
    json_summary: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
    *,
    params: StyleParams,
) -> None:
    """Stylise every row of MANIFEST not yet done in --out, on Ray; re-run the same command to resume.

    Every engine option below is the run-level default; manifest columns override it per row.
    Exit codes: 0 all rows done, 2 some rows failed (see `nst status`), 130 interrupted, 1 error.

    Example: nst run jobs.parquet --out s3://bucket/run1 --size 512 --steps 300
    """
    _sigterm_as_interrupt()
    summary = run_manifest(
        manifest=manifest,
        out=out,
        params=params,
        address=address,
        weights=weights,
        weights_sha256=weights_sha256,
        arch=arch.value if isinstance(arch, Arch) else str(arch),
        batch_size=batch_size,
        max_attempts=max_attempts,
        retry_failed=retry_failed,
        storage_options=parse_storage_options(storage_option),
        num_workers=workers,
        progress=not (quiet or no_progress),
        progress_interval=progress_interval,
        max_pixels=max_pixels,
        max_rows=max_rows,
        storage_timeout=storage_timeout,
        compile=compile,
    )
    if json_summary:
        typer.echo(json.dumps(summary.to_dict(), default=str, sort_keys=True))
    else:
        print_summary(summary)
    if summary.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if summary.aborted:
        console.print(f"[bold red]error:[/] run stopped: {summary.aborted}")
        raise typer.Exit(1)
    if summary.failed or summary.not_retried:
        raise typer.Exit(EXIT_ROWS_FAILED)


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


def _sigterm_as_interrupt() -> None:
    """Treat SIGTERM (schedulers, `kill`) like Ctrl-C: stop scheduling, flush the ledger, exit."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. embedded in another app)
        pass


def _standalone() -> typer.Typer:
    app = typer.Typer(
        pretty_exceptions_enable=False, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]}
    )
    app.command("run")(run_command)
    app.command("status")(status_command)
    return app


if __name__ == "__main__":
    try:
        _standalone()()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
