"""Messages between the run driver and its Ray workers: what to compute, and what happened to each row.

Plain picklable dataclasses with no torch inside, so the driver can plan and record without the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nst_core.params import StyleParams

DEFAULT_MAX_PIXELS = 89_478_485
"""nst_core.images.DEFAULT_MAX_PIXELS (PIL's own bomb limit), restated so this module stays torch-free;
tests/hardening checks that the two agree."""


READ_TIMEOUT_S = 60.0
"""`--read-timeout` default: wall-clock bound of one storage operation (pipeline.store.bounded.OPERATION_TIMEOUT_S)."""


STORAGE_TIMEOUT_S = 300.0
"""`--storage-timeout` default: how long storage may stay unreachable before a run stops."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything an actor needs to build its heavy state itself (the model is never shipped)."""

    weights: str = "imagenet"
    weights_sha256: str | None = None
    arch: str = "vgg19"
    storage_options: dict[str, Any] | None = None
    out: str = ""
    target_cache_size: int = 32
    style_image_cache_size: int = 16
    io_threads: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Largest image (width x height) a worker decodes; bigger ones fail their row (decompression bombs)."""
    compile: bool = False
    """torch.compile the step (execution setting: the image is the same either way)."""
    read_timeout: float = READ_TIMEOUT_S
    """Seconds one storage operation of the worker (input read, output write) may take."""


@dataclass(frozen=True)
class RowTask:
    row_id: str
    index: int
    content_uri: str
    style_uri: str
    params: StyleParams
    output_uri: str
    image_format: str = "png"
    metadata: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    outage_holds: int = 0
    """Times this row went back to the queue during a storage outage without spending an attempt."""
    held_since: float | None = None
    """Driver clock (time.monotonic) of the first hold for this row's own input store not answering."""
    content_mask_uri: str | None = None
    style_mask_uri: str | None = None
    """Region masks (a style mask only with a content mask); rows of one batch may differ in them."""
    deaths: int = 0
    """Worker deaths while this row was in flight. They spend no attempt (a preempted node is nobody's
    fault) but decide when the row is suspected of killing its worker and is run alone."""
    isolated_deaths: int = 0
    """Worker deaths while this row ran alone: each one is the row's own doing."""

    @property
    def input_uris(self) -> tuple[str, ...]:
        """Every file the row reads: images, then the masks it has."""
        masks = (self.content_mask_uri, self.style_mask_uri)
        return (self.content_uri, self.style_uri, *(u for u in masks if u is not None))


@dataclass(frozen=True)
class BatchSpec:
    """Rows sharing one style and one parameter set (hence one size class), optimised together."""

    batch_id: str
    rows: tuple[RowTask, ...]
    curve_uri: str
    alone: bool = False
    """An isolated row, run on a worker with nothing else in flight (see scheduler.after_death)."""

    @property
    def style_key(self) -> str:
        return style_key(self.rows[0].style_uri, self.rows[0].params)


def style_key(style_uri: str, params: StyleParams) -> str:
    """Affinity key: the rows whose style targets one cached entry can serve."""
    return (
        f"{style_uri}|{max(s for s, _ in params.stages())}|{params.style_scale}|{params.pooling.value}|{params.padding.value}|"
        + ",".join(params.style_layers)
        + f"|{params.style_normalization.value}|{params.precision.value}|{params.style_loss.value}"
    )


@dataclass
class RowOutcome:
    row_id: str
    ok: bool
    started_at: datetime
    finished_at: datetime
    error_kind: str | None = None
    error_message: str | None = None
    final: dict[str, float] | None = None
    steps_run: int | None = None
    output_uri: str | None = None
    curve_uri: str | None = None
    metrics: dict[str, float] | None = None
    metrics_error: str | None = None
    """Why the row has no metrics (scoring failed; the row itself is done)."""
    unreachable: bool = False
    """The failure was the store not answering (connection refused, reset, timed out)."""
    optimise_seconds: float | None = None
    """This row's share of its batch's time holding the device (optimisation and metrics; lock wait excluded)."""
    style_weights: tuple[float, ...] | None = None
    """The β each coarse-to-fine stage used (measured per image under `style_ratio`)."""


@dataclass
class BatchOutcome:
    batch_id: str
    rows: list[RowOutcome]
    worker: str
    node: str
    device: str
    cache_hits: int = 0
    cache_misses: int = 0
    oom: bool = False
    """The whole batch ran out of memory (only when it had more than one row): split it and retry."""
    message: str | None = None
