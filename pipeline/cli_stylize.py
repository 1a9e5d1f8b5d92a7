"""`nst stylize`: one content image, one or more styles, one output — the engine without Ray.

Registered on the root app by pipeline/cli.py. Writes the image, its loss curve (Parquet) and a JSON of
parameters, weights and versions beside it, each with one atomic write.
"""

from __future__ import annotations

import json
import time
from pathlib import PurePosixPath
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nst_core.params import Arch, StyleParams
from pipeline.options import (
    ArchOpt,
    CompileOpt,
    DeviceOpt,
    StorageOptionOpt,
    WeightsOpt,
    WeightsSha256Opt,
    with_style_params,
)
from pipeline.storage import mask_uri, parse_storage_options, read_bytes, write_bytes_atomic

IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}

console = Console(stderr=True)


def sidecar_paths(output: str) -> tuple[str, str, str]:
    """(image format, curve URI, JSON URI) for an output image URI; rejects unknown extensions."""
    suffix = PurePosixPath(output).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise typer.BadParameter(
            f"output {output!r} must end in one of {', '.join(IMAGE_FORMATS)}", param_hint="--output"
        )
    stem = output[: -len(suffix)]
    return IMAGE_FORMATS[suffix], f"{stem}.curve.parquet", f"{stem}.json"


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


@with_style_params
def stylize_command(
    content: Annotated[str, typer.Argument(help="Content image: a path or any fsspec URI.")],
    style: Annotated[list[str], typer.Argument(help="One or more style images (blended when several).")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output image (.png, .jpg, .webp); path or URI.")
    ],
    style_blend: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Comma-separated weights for several style images (default: equal)."),
    ] = None,
    init_image: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Start from this image instead of --init (resized to the output size)."),
    ] = None,
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
    """
    # torch and the engine load here, not at import: `nst --help` and completion stay fast.
    from nst_core.engine import StepReport, Stylizer
    from nst_core.images import decode_image, encode_image
    from nst_core.targets import Style
    from pipeline.curves import curves_table, parquet_bytes
    from pipeline.provenance import provenance
    from pipeline.weights import check_weights, load_model, resolve_device

    storage_options = parse_storage_options(storage_option)
    fmt, curve_uri, json_uri = sidecar_paths(output)
    blend = parse_blend(style_blend, len(style))
    check_weights(weights, sha256=weights_sha256, arch=arch, storage_options=storage_options)
    torch_device = resolve_device(device)
    started = time.time()

    content_image = decode_image(read_bytes(content, storage_options), name=content)
    style_images = tuple(decode_image(read_bytes(uri, storage_options), name=uri) for uri in style)
    init = None
    if init_image is not None:
        init = [decode_image(read_bytes(init_image, storage_options), name=init_image)]
    model = load_model(
        weights, sha256=weights_sha256, arch=arch, device=torch_device, storage_options=storage_options
    )
    stylizer = Stylizer(
        model,
        torch_device,
        compile=compile,
        compile_mode="reduce-overhead" if compile and torch_device.type == "cuda" else None,
    )

    total_steps = sum(steps for _, steps in params.stages())
    with Progress(
        TextColumn("[bold]stylize"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=True,
    ) as bar:
        task = bar.add_task("steps", total=total_steps)
        stage_offsets = [sum(s for _, s in params.stages()[:i]) for i in range(len(params.stages()))]

        def on_step(report: StepReport) -> None:
            bar.update(task, completed=stage_offsets[report.stage] + report.step)

        result = stylizer.stylize(
            [content_image],
            Style(images=style_images, weights=blend, key=""),
            params,
            init_images=init,
            callback=on_step,
        )[0]

    write_bytes_atomic(output, encode_image(result.image, fmt), storage_options)
    write_bytes_atomic(curve_uri, parquet_bytes(curves_table(["stylize"], [result.curve])), storage_options)
    record = {
        "content": mask_uri(content),
        "style": [mask_uri(uri) for uri in style],
        "style_blend": list(blend) if blend is not None else None,
        "init_image": mask_uri(init_image) if init_image else None,
        "output": mask_uri(output),
        "params": params.to_dict(),
        "final_losses": result.final,
        "style_weights": list(result.style_weights),
        "steps_run": result.steps_run,
        "seconds": round(time.time() - started, 3),
        **provenance(torch_device, model),
    }
    write_bytes_atomic(json_uri, json.dumps(record, indent=2).encode(), storage_options)
    console.print(
        f"wrote {mask_uri(output)} ({result.image.shape[-1]}×{result.image.shape[-2]}, "
        f"{result.steps_run} steps, loss {result.final['total']:.4g}, {time.time() - started:.1f}s)"
    )
