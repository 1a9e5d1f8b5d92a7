"""`nst stylize`: one content image, one or more styles, one output — the engine without Ray.

Registered on the root app by pipeline/cli/app.py. Writes the image, its loss curve (Parquet) and a JSON of
parameters, weights and versions beside it, each with one atomic write.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from jobs.masking import mask_uri
from jobs.names import IMAGE_FORMATS
from nst_core.params import Arch, StyleParams
from pipeline.cli.options import (
    ArchOpt,
    CompileOpt,
    DeviceOpt,
    StorageOptionOpt,
    WeightsOpt,
    WeightsSha256Opt,
    with_style_params,
)
from pipeline.store.fs import parse_storage_options

if TYPE_CHECKING:
    from pipeline.run.stylize import StylizeJob

console = Console(stderr=True)


def sidecar_paths(output: str) -> tuple[str, str, str]:
    """(image format, curve URI, JSON URI) for an output image URI; rejects unknown extensions."""
    suffix = PurePosixPath(output).suffix.lower()
    if suffix.removeprefix(".") not in IMAGE_FORMATS:
        choices = ", ".join(f".{ext}" for ext in IMAGE_FORMATS)
        raise typer.BadParameter(f"output {output!r} must end in one of {choices}", param_hint="--output")
    stem = output[: -len(suffix)]
    return IMAGE_FORMATS[suffix.removeprefix(".")], f"{stem}.curve.parquet", f"{stem}.json"


def parse_blend(text: str | None, count: int) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint="--style-blend"
        ) from None
    if len(weights) != count:
        raise typer.BadParameter(
            f"{len(weights)} weights for {count} style images", param_hint="--style-blend"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise typer.BadParameter("weights must be >= 0 with a positive sum", param_hint="--style-blend")
    return weights


def parse_style_masks(masks: list[str] | None, count: int, content_mask: str | None) -> tuple[str | None, ...]:
    """One --style-mask per style image, in order; `-` or an empty string for a style image without a mask."""
    if not masks:
        return ()
    if len(masks) != count:
        raise typer.BadParameter(
            f"{len(masks)} style masks for {count} style images: give one per style image, in order "
            "('-' for a style image without a mask)",
            param_hint="--style-mask",
        )
    parsed = tuple(None if m in ("", "-") else m for m in masks)
    if content_mask is None and any(m is not None for m in parsed):
        raise typer.BadParameter(
            "a style mask needs --content-mask: regions are matched by colour between the two", param_hint="--style-mask"
        )
    return parsed


StyleBlendOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Comma-separated weights for several style images (default: equal)."),
]
InitImageOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Start from this image instead of --init (resized to the output size)."),
]
ContentMaskOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        help="Region mask of the content (PNG in flat colours, the content's aspect ratio): each colour is a region."
    ),
]
StyleMaskOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        help="Region mask of a style image, one per STYLE in order ('-' for none); its colours style the content "
        "regions of the same colours."
    ),
]


@with_style_params
def stylize_command(
    content: Annotated[str, typer.Argument(help="Content image: a path or any fsspec URI.")],
    style: Annotated[list[str], typer.Argument(help="One or more style images (blended when several).")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output image (.png, .jpg, .webp); path or URI.")
    ],
    style_blend: StyleBlendOpt = None,
    init_image: InitImageOpt = None,
    content_mask: ContentMaskOpt = None,
    style_mask: StyleMaskOpt = None,
    weights: WeightsOpt = "imagenet",
    weights_sha256: WeightsSha256Opt = None,
    arch: ArchOpt = Arch.vgg19,
    device: DeviceOpt = "auto",
    compile: CompileOpt = False,
    storage_option: StorageOptionOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    params: StyleParams,
) -> None:
    """Stylise one CONTENT image with one or more STYLE images (Gatys et al.).

    Writes OUTPUT, OUTPUT's stem + .curve.parquet (loss curve) and + .json (parameters, weights, versions).

    Example: nst stylize photo.jpg starry.jpg -o out.png --size 512 --steps 300

    Regions: nst stylize photo.jpg sky.jpg -o out.png --content-mask photo-mask.png --style-mask sky-mask.png
    """
    # torch and the engine load here, not at import: `nst --help` and completion stay fast.
    from pipeline.run.stylize import StylizeJob

    image_format, curve_uri, json_uri = sidecar_paths(output)
    job = StylizeJob(
        content=content,
        styles=tuple(style),
        output=output,
        image_format=image_format,
        curve_uri=curve_uri,
        json_uri=json_uri,
        params=params,
        blend=parse_blend(style_blend, len(style)),
        init_image=init_image,
        weights=weights,
        weights_sha256=weights_sha256,
        arch=arch.value if isinstance(arch, Arch) else str(arch),
        device=device,
        compile=compile,
        storage_options=parse_storage_options(storage_option),
        content_mask=content_mask,
        style_masks=parse_style_masks(style_mask, len(style), content_mask),
    )
    _run(job, quiet)


def _run(job: StylizeJob, quiet: bool) -> None:
    """The job under a progress bar, then its one summary line."""
    from pipeline.run.stylize import stylize_job

    columns = (TextColumn("[bold]stylize"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("steps", total=sum(steps for _, steps in job.params.stages()))
        record, (width, height) = stylize_job(job, on_step=lambda done, total: bar.update(task, completed=done))
    losses = record["final_losses"]
    console.print(
        f"wrote {mask_uri(job.output)} ({width}×{height}, {record['steps_run']} steps, loss {losses['total']:.4g}, "
        f"{record['seconds']:.1f}s)"
    )
