"""One content image, one or more styles, one output: the engine without Ray, for `nst stylize`.

Writes the image, its loss curve (Parquet) and a JSON of parameters, weights and versions beside it, each
with one atomic write. The CLI parses and displays; this module does the work, so a library user gets
the same three files from one call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nst_core.engine as engine
from jobs.masking import mask_uri
from nst_core.images import decode_image, encode_image
from nst_core.masks import check_masks, decode_mask
from nst_core.params import StyleParams
from nst_core.targets import Style
from pipeline.store.curves import curves_table, parquet_bytes
from pipeline.store.provenance import provenance
from pipeline.store.transfer import read_bytes, write_bytes_atomic
from pipeline.store.weights import check_weights, load_model, resolve_device


@dataclass(frozen=True)
class StylizeJob:
    content: str
    styles: tuple[str, ...]
    output: str
    image_format: str
    curve_uri: str
    json_uri: str
    params: StyleParams
    blend: tuple[float, ...] | None = None
    init_image: str | None = None
    weights: str = "imagenet"
    weights_sha256: str | None = None
    arch: str = "vgg19"
    device: str = "auto"
    compile: bool = False
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    content_mask: str | None = None
    style_masks: tuple[str | None, ...] = ()
    """One per style image (None: that image serves every region), or () for none; region masks match
    regions by colour between the content mask and the style masks (Gatys et al. 2017)."""


def stylize_job(
    job: StylizeJob, on_step: Callable[[int, int], None] | None = None
) -> tuple[dict[str, Any], tuple[int, int]]:
    """Stylise and write the three files; returns the JSON record and the image's (width, height).
    `on_step(done, total)` follows the optimisation steps."""
    options = job.storage_options
    check_weights(job.weights, sha256=job.weights_sha256, arch=job.arch, storage_options=options)
    device = resolve_device(job.device)
    started = time.time()

    def read(uri: str) -> Any:
        return decode_image(read_bytes(uri, options), name=uri)

    content, styles = read(job.content), tuple(read(uri) for uri in job.styles)
    style, content_mask = _masked_style(job, content, styles)
    init = [read(job.init_image)] if job.init_image is not None else None
    model = load_model(job.weights, sha256=job.weights_sha256, arch=job.arch, device=device, storage_options=options)
    compile_mode = "reduce-overhead" if job.compile and device.type == "cuda" else None
    stylizer = engine.Stylizer(model, device, compile=job.compile, compile_mode=compile_mode)
    stages = job.params.stages()
    offsets = [sum(s for _, s in stages[:i]) for i in range(len(stages))]
    total = sum(steps for _, steps in stages)

    def report(step: engine.StepReport) -> None:
        if on_step is not None:
            on_step(offsets[step.stage] + step.step, total)

    result = stylizer.stylize(
        [content], style, job.params, content_masks=[content_mask], init_images=init, callback=report
    )[0]
    write_bytes_atomic(job.output, encode_image(result.image, job.image_format), options)
    write_bytes_atomic(job.curve_uri, parquet_bytes(curves_table(["stylize"], [result.curve])), options)
    record = {
        "content": mask_uri(job.content),
        "style": [mask_uri(uri) for uri in job.styles],
        "style_blend": list(job.blend) if job.blend is not None else None,
        "init_image": mask_uri(job.init_image) if job.init_image else None,
        "content_mask": mask_uri(job.content_mask) if job.content_mask else None,
        "style_masks": [mask_uri(u) if u else None for u in job.style_masks] or None,
        "output": mask_uri(job.output),
        "params": job.params.to_dict(),
        "final_losses": result.final,
        "style_weights": list(result.style_weights),
        "steps_run": result.steps_run,
        "seconds": round(time.time() - started, 3),
        **provenance(device, model),
    }
    write_bytes_atomic(job.json_uri, json.dumps(record, indent=2).encode(), options)
    return record, (int(result.image.shape[-1]), int(result.image.shape[-2]))


def _masked_style(job: StylizeJob, content: Any, styles: tuple[Any, ...]) -> tuple[Style, Any]:
    """The Style with its masks and the content mask (None without one), checked first so a bad mask fails
    in one line before the model loads."""
    if job.style_masks and len(job.style_masks) != len(job.styles):
        raise ValueError(f"{len(job.style_masks)} style masks for {len(job.styles)} style images (one per style; '-' for none)")

    def read(uri: str | None) -> Any:
        return decode_mask(read_bytes(uri, job.storage_options), name=uri) if uri else None

    content_mask = read(job.content_mask)
    masks = tuple(read(uri) for uri in job.style_masks) or None
    style = Style(images=styles, weights=job.blend, key="", masks=masks)
    names = (job.content_mask or "", *(u or "" for u in job.style_masks))
    check_masks((int(content.shape[-2]), int(content.shape[-1])), content_mask, style, names=names)
    return style, content_mask
