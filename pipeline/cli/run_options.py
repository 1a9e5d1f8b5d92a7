"""The options of `nst run` that are not engine parameters, as reusable `Annotated` types.

Declared here so that `run_command`'s signature reads as a list of settings; defaults come from
`RunOptions` and the run's constants, never restated.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ManifestArg = Annotated[str, typer.Argument(help="Job manifest (Parquet): a path or any fsspec URI.")]
OutOpt = Annotated[str, typer.Option("--out", help="Output folder or URI (images, curves, ledger, run.json).")]
AddressOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        help="Ray cluster: 'auto', 'HOST:PORT' or 'ray://HOST:10001'; 'local' starts an embedded Ray. "
        "Default: $RAY_ADDRESS when set, else an embedded Ray on 127.0.0.1."
    ),
]
BatchSizeOpt = Annotated[
    str, typer.Option("--batch-size", help="Rows per batch on one device, or 'auto' (from free memory).")
]
MaxAttemptsOpt = Annotated[
    int, typer.Option("--max-attempts", min=1, help="Tries per row for transient errors, across re-runs.")
]
RetryFailedOpt = Annotated[
    bool, typer.Option("--retry-failed", help="Retry every failed row again, bad input included.")
]
WorkersOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--workers", min=1, help="Actors to start with: default one per GPU; on CPU-only clusters 1."),
]
MaxWorkersOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--max-workers",
        min=1,
        help="GPU clusters: start a worker on each GPU that joins while rows remain, up to this many "
        "(default: --workers if given, else no limit).",
    ),
]
RequestGpusOpt = Annotated[
    bool,
    typer.Option(
        "--request-gpus",
        help="Ask the Ray autoscaler for GPUs (one per worker, up to --max-workers) while rows wait; "
        "the request is cleared when the run ends.",
    ),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels", min=1, help="Largest input image (width x height) decoded; bigger ones fail their row."
    ),
]
MaxRowsOpt = Annotated[int, typer.Option("--max-rows", min=1, help="Refuse manifests with more rows than this.")]
StorageTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--storage-timeout",
        min=0.001,
        help="Seconds storage may stay unreachable (rows wait, keeping their attempts) before the run stops.",
    ),
]
ReadTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--read-timeout",
        min=0.001,
        help="Seconds one storage operation (an input read, a write, a listing) may take before it fails.",
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Take over the output from a run whose lease is stale (see docs/reliability.md)."),
]
JsonSummaryOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
