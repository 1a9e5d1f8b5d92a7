"""`nst manifest build|validate|show`: thin Typer commands over `jobs`; wired into the root app by pipeline/cli/app.py."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from jobs import ManifestRow, iter_manifest
from jobs.build import build_manifest, parse_param_args, parse_sweep_args
from jobs.files import DEFAULT_WORKERS
from jobs.masking import mask_text
from jobs.summary import DEFAULT_THROUGHPUT, REFERENCE_SIDE, summarise_manifest
from jobs.validate import validate_manifest
from nst_core.params import StyleParams, parse_field
from pipeline.cli.errors import user_errors
from pipeline.store.fs import parse_storage_options

manifest_app = typer.Typer(
    name="manifest",
    help="Build, check and inspect content × style job manifests (Parquet).",
    no_args_is_help=True,
    add_completion=False,
)


StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        help="fsspec storage option key=value (repeatable; dotted keys nest: client_kwargs.endpoint_url=…).",
    ),
]


ManifestArg = Annotated[str, typer.Argument(help="Manifest Parquet file: a local path or fsspec URI.")]


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _options(pairs: list[str] | None) -> dict[str, Any]:
    with user_errors():
        return parse_storage_options(pairs)


@manifest_app.command(
    epilog=(
        "Examples:\n\n"
        "  nst manifest build --content photos/ --style 'styles/*.jpg' -o night.parquet\n\n"
        "  nst manifest build --content s3://bucket/photos/*.jpg --style styles.txt "
        "--param size=768 --sweep style_weight=1e5,1e6 -o s3://bucket/night.parquet"
    )
)
def build(
    content: Annotated[
        list[str], typer.Option("--content", "-c", help="Directory, glob, image, or .txt/.csv list.")
    ],
    style: Annotated[
        list[str], typer.Option("--style", "-s", help="Directory, glob, image, or .txt/.csv list.")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="Manifest to write (.parquet).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="key=value for every row (repeatable).")
    ] = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option("--sweep", help="key=v1,v2 (';' between values of list parameters); rows multiply."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing manifest.")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Write the product content × style × parameter sweeps as a Parquet manifest (ids are derived per run)."""
    options = _options(storage_option)
    with user_errors(options):
        result = build_manifest(
            content=content,
            style=style,
            params=parse_param_args(param or []),
            sweeps=parse_sweep_args(sweep or []),
            output=output,
            storage_options=options,
            overwrite=overwrite,
        )
    typer.echo(
        f"wrote {result.rows} rows = {result.contents} contents × {result.styles} styles × "
        f"{result.parameter_sets} parameter sets to {mask_text(result.uri, options)}"
    )


@manifest_app.command()
def validate(
    manifest: ManifestArg,
    check_files: Annotated[bool, typer.Option(help="Open and decode every referenced image.")] = False,
    workers: Annotated[int, typer.Option(help="Parallel file checks.")] = DEFAULT_WORKERS,
    max_lines: Annotated[int, typer.Option(help="Problems to print before summarising the rest.")] = 50,
    storage_option: StorageOptions = None,
    json_output: JsonOpt = False,
) -> None:
    """Check schema, types, ranges, ids, output names and URI schemes; list every problem, exit 1 if any."""
    options = _options(storage_option)
    with user_errors(options):
        report = validate_manifest(
            manifest, storage_options=options, check_files=check_files, workers=workers
        )
    if json_output:
        typer.echo(json.dumps(_validation_json(report, options, max_lines), sort_keys=True))
        if not report.ok:
            raise typer.Exit(1)
        return
    for warning in report.warnings:
        typer.echo(f"warning: {mask_text(warning, options)}")
    for problem in report.problems[:max_lines]:
        typer.echo(mask_text(str(problem), options))
    hidden = report.problem_count - min(len(report.problems), max_lines)
    if hidden > 0:
        typer.echo(f"… and {hidden} more problems")
    checked = f", {report.files_checked} files opened" if check_files else ""
    if report.ok:
        typer.echo(f"ok: {report.rows} rows, no problems{checked}")
        return
    typer.echo(f"{report.problem_count} problems in {report.bad_rows} of {report.rows} rows{checked}")
    raise typer.Exit(1)


@manifest_app.command()
def show(
    manifest: ManifestArg,
    throughput: Annotated[
        float,
        typer.Option(
            help=f"Optimisation steps per second on one {REFERENCE_SIDE}×{REFERENCE_SIDE} image per GPU "
            "(default: an H100 estimate; measure yours).",
        ),
    ] = DEFAULT_THROUGHPUT,
    ids: Annotated[
        bool,
        typer.Option(
            "--ids",
            help="List every row's index and row id (the ledger's row_id) instead of the summary; "
            "pass the run's own options with --param when the run set any (ids depend on them).",
        ),
    ] = False,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="With --ids: a run-level key=value the run used (repeatable)."),
    ] = None,
    storage_option: StorageOptions = None,
    json_output: JsonOpt = False,
) -> None:
    """Rows, distinct inputs, parameter spread, and an upper-bound work and GPU-hour estimate.

    With --ids: one line per row, `index  row_id  content_uri  style_uri` (JSON lines with --json, which
    also hold the mask URIs), so the ledger (keyed by row_id) can be joined to the manifest's rows.
    """
    options = _options(storage_option)
    if ids:
        with user_errors(options):
            _print_ids(manifest, param or [], options, json_output)
        return
    if param:
        raise typer.BadParameter("--param only applies with --ids", param_hint="--param")
    with user_errors(options):
        summary = summarise_manifest(manifest, storage_options=options, throughput=throughput)
    if json_output:
        typer.echo(json.dumps(_summary_json(summary, options), sort_keys=True))
        return
    _print_summary(summary, options)


def _summary_json(summary: Any, options: dict[str, Any]) -> dict[str, Any]:
    data = dataclasses.asdict(summary)
    data["uri"] = mask_text(summary.uri, options)
    data["parameters"] = {name: dict(counter.most_common()) for name, counter in summary.parameters.items()}
    data["gpu_hours"] = summary.gpu_hours
    return data


def _validation_json(report: Any, options: dict[str, Any], max_lines: int) -> dict[str, Any]:
    return {
        "uri": mask_text(report.uri, options),
        "ok": report.ok,
        "rows": report.rows,
        "problem_count": report.problem_count,
        "bad_rows": report.bad_rows,
        "files_checked": report.files_checked,
        "warnings": [mask_text(w, options) for w in report.warnings],
        "problems": [
            {
                "index": p.index,
                "row_id": p.row_id,
                "column": p.column,
                "message": mask_text(p.message, options),
            }
            for p in report.problems[:max_lines]
        ],
    }


def _print_ids(manifest: str, pairs: list[str], options: dict[str, Any], as_json: bool) -> None:
    """Index and row id of every row, with ids derived exactly as `nst run` with these options derives them."""
    defaults = dataclasses.replace(
        StyleParams(), **{name: parse_field(name, text) for name, text in parse_param_args(pairs).items()}
    )
    if not as_json:
        typer.echo("index\trow_id\tcontent_uri\tstyle_uri")
    for item in iter_manifest(manifest, defaults=defaults, storage_options=options):
        if isinstance(item, ManifestRow):
            entry = {"index": item.index, "row_id": item.row_id, "content_uri": item.content_uri,
                     "style_uri": item.style_uri, "content_mask_uri": item.content_mask_uri,
                     "style_mask_uri": item.style_mask_uri, "output_name": item.output_name, "problem": None}  # fmt: skip
        else:
            entry = {"index": item.index, "row_id": item.row_id, "content_uri": None, "style_uri": None,
                     "content_mask_uri": None, "style_mask_uri": None,
                     "output_name": None, "problem": mask_text(str(item), options)}  # fmt: skip
        if as_json:
            typer.echo(json.dumps(entry, sort_keys=True))
        else:
            cells = (entry["index"], entry["row_id"] or "-", entry["content_uri"] or "-", entry["style_uri"] or "-")
            typer.echo("\t".join(mask_text(str(c), options) for c in cells))


def _print_summary(summary: Any, options: dict[str, Any]) -> None:
    """`nst manifest show` on a terminal: the overview, the parameter spread, the work estimate."""
    console = Console(soft_wrap=True)
    overview = Table(title=mask_text(summary.uri, options), show_header=False)
    overview.add_row("rows", f"{summary.rows:,}")
    overview.add_row("rows with problems", f"{summary.problem_rows:,}")
    overview.add_row("distinct contents", f"{summary.distinct_contents:,}")
    overview.add_row("distinct styles", f"{summary.distinct_styles:,}")
    console.print(overview)
    if summary.parameters:
        params = Table(title="parameter columns (rows per effective value)")
        params.add_column("parameter")
        params.add_column("distinct", justify="right")
        params.add_column("values")
        for name, counter in summary.parameters.items():
            shown = ", ".join(f"{value} ({count:,})" for value, count in counter.most_common(8))
            more = f", … {len(counter) - 8} more" if len(counter) > 8 else ""
            params.add_row(name, str(len(counter)), shown + more)
        console.print(params)
    else:
        console.print("no parameter columns: every row uses the run defaults")
    console.print(
        f"work: {summary.pixel_iterations:.3e} pixel-iterations (upper bound: images taken as square)"
    )
    console.print(
        f"estimate: {summary.gpu_hours:.3g} GPU-hours at {summary.throughput:g} steps/s "
        f"on a {REFERENCE_SIDE}² image"
    )
