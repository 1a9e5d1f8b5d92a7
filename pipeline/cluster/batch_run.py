"""One `run_batch` call of a worker, in its three steps: load, optimise (and score), commit.

A bad row is recorded as a failed outcome at the step where it fails and drops out of the later steps;
the other rows go on. Loading runs outside the device lock (it overlaps the other call's optimisation),
optimising and scoring hold it, committing (encode, upload) runs after it is released.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Hashable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

import torch

from jobs.masking import mask_text
from nst_core.engine import ImageResult, Stylizer
from nst_core.images import ImageError, encode_image, resize_to
from nst_core.metrics import feature_metrics_per_image, image_metrics
from nst_core.targets import Style, needs_content
from nst_core.vgg import VGGFeatures
from pipeline.cluster.row_checks import (
    check_shape,
    classify_read_error,
    content_side,
    describe,
    is_oom,
    min_side,
    numerical_problem,
    style_side,
)
from pipeline.cluster.row_masks import MaskFailure, RowMasks
from pipeline.cluster.tasks import BatchSpec, RowOutcome, RowTask, WorkerConfig
from pipeline.store.curves import curves_table, parquet_bytes
from pipeline.store.errors import is_connection_error
from pipeline.store.layout import OutputNameError, check_inside
from pipeline.store.records import ErrorKind, utcnow
from pipeline.store.transfer import write_bytes_atomic


class BatchHost(Protocol):
    """What a batch needs from its worker (`StyleWorker` is one): the engine, its caches and locks, and
    the worker's bounded reads."""

    config: WorkerConfig
    stylizer: Stylizer
    model: VGGFeatures
    device: str
    device_lock: threading.Lock
    io: ThreadPoolExecutor
    batches_run: int

    @property
    def targets(self) -> MutableMapping[Hashable, Any]: ...

    def style_image(self, uri: str, long_side: int | None = None) -> torch.Tensor: ...

    def read_image(self, uri: str, long_side: int | None = None) -> torch.Tensor: ...

    def read_mask(self, uri: str) -> torch.Tensor: ...

    def style_mask(self, uri: str) -> torch.Tensor: ...

    def release_memory(self) -> None: ...


class BatchOOM(Exception):
    """The whole batch (more than one row) ran out of device memory: the driver splits it."""


class BatchRun:
    def __init__(self, worker: BatchHost, spec: BatchSpec) -> None:
        self.worker = worker
        self.spec = spec
        self.params = spec.rows[0].params
        self.started = utcnow()
        self.outcomes: dict[str, RowOutcome] = {}
        self.contents: dict[str, torch.Tensor] = {}
        self.content_masks: dict[str, torch.Tensor | None] = {}
        self.styles: dict[str, Style] = {}
        """Each loaded row's Style: the batch's style image, with the row's style mask when it has one."""
        self.plain: Style | None = None
        """The style image without masks: rows without a style mask, and every row's metrics."""
        self.results: dict[str, ImageResult] = {}
        self.metrics: dict[str, dict[str, float]] = {}
        self.metrics_errors: dict[str, str] = {}
        self.device_share: float | None = None

    def fail(self, task: RowTask, kind: ErrorKind, message: str, exc: BaseException | None = None) -> None:
        self.results.pop(task.row_id, None)
        self.outcomes[task.row_id] = RowOutcome(
            unreachable=exc is not None and is_connection_error(exc),
            row_id=task.row_id,
            ok=False,
            started_at=self.started,
            finished_at=utcnow(),
            error_kind=kind.value,
            error_message=mask_text(
                message, self.worker.config.storage_options, (*task.input_uris, task.output_uri)
            ),
        )

    # -- 1. load ------------------------------------------------------------------------------------

    def load(self) -> torch.Tensor | None:
        """The style image and every readable content image; None when the style itself fails."""
        style_uri = self.spec.rows[0].style_uri
        try:
            style_image = self.worker.style_image(style_uri, style_side(self.params))
        except Exception as exc:  # noqa: BLE001 - every row of the batch shares this style
            for task in self.spec.rows:
                self.fail(task, classify_read_error(exc), f"style {describe(exc)}", exc)
            return None
        try:
            smallest = min(side for side, _ in self.params.stages())
            long_side = max(1, round(smallest * self.params.style_scale))
            check_shape(style_image, long_side, min_side(self.params), f"style {mask_text(style_uri)}")
        except ImageError as exc:
            for task in self.spec.rows:
                self.fail(task, ErrorKind.bad_input, str(exc))
            return None
        io = self.worker.io
        futures = {t.row_id: io.submit(self.worker.read_image, t.content_uri, content_side(t.params)) for t in self.spec.rows}
        masks = RowMasks(self.worker, self.spec.rows, Style(images=(style_image,), key=style_uri))
        self.plain = masks.plain
        for task in self.spec.rows:
            try:
                image = futures[task.row_id].result()
                need = min_side(task.params)
                check_shape(image, min(side for side, _ in task.params.stages()), need, mask_text(task.content_uri))
                self.content_masks[task.row_id], self.styles[task.row_id] = masks.for_row(task, image)
                self.contents[task.row_id] = image
            except MaskFailure as exc:  # checked before the row joins the batch: only this row fails
                self.fail(task, classify_read_error(exc.cause), str(exc), exc.cause)
            except Exception as exc:  # noqa: BLE001 - one bad row never stops the others
                self.fail(task, classify_read_error(exc), f"content {describe(exc)}", exc)
        return style_image

    # -- 2. optimise and score ----------------------------------------------------------------------

    def optimise(self, style_image: torch.Tensor) -> None:
        """Optimise the rows that loaded, all at once, then score them; raises BatchOOM for a batch of
        several rows that does not fit."""
        ready = [task for task in self.spec.rows if task.row_id in self.contents]
        if not ready:
            return
        worker = self.worker
        style = self.plain if self.plain is not None else Style(images=(style_image,), key=ready[0].style_uri)
        styles = [self.styles.get(t.row_id, style) for t in ready]
        content_masks = [self.content_masks.get(t.row_id) for t in ready]
        try:
            with worker.device_lock:
                on_device = time.monotonic()
                out = worker.stylizer.stylize(
                    [self.contents[t.row_id] for t in ready],
                    styles if any(s is not style for s in styles) else style,  # one Style unless masks differ
                    self.params,
                    content_masks=content_masks,
                    cache=worker.targets,
                )
                worker.batches_run += 1
                self.results = {t.row_id: r for t, r in zip(ready, out, strict=True)}
                for task in ready:
                    problem = numerical_problem(self.results[task.row_id], self.contents[task.row_id])
                    if problem is not None:
                        self.fail(task, ErrorKind.numerical, problem)
                self.score(style, style_image)
                self.device_share = (time.monotonic() - on_device) / len(ready)
        except Exception as exc:  # noqa: BLE001 - classified here, never raised per row
            if is_oom(exc):
                worker.release_memory()
                if len(ready) > 1:
                    raise BatchOOM(describe(exc)) from None
                kind = ErrorKind.oom
            else:
                kind = ErrorKind.invalid_params if isinstance(exc, ValueError) else ErrorKind.internal
            for task in ready:
                self.fail(task, kind, describe(exc))
        finally:
            self.contents.clear()
            self.content_masks.clear()

    def score(self, style: Style, style_image: torch.Tensor) -> None:
        """Quality metrics (docs/metrics.md), one feature pass per output shape of the batch. A metric
        failure never fails a row: the row is recorded without metrics and with the reason. The style
        targets come from the cache the run just filled, and re-reading them is not counted as a cache use."""
        worker = self.worker
        counters = (worker.stylizer.cache_hits, worker.stylizer.cache_misses)
        by_shape: dict[tuple[int, int], list[str]] = defaultdict(list)
        for row_id, result in self.results.items():
            by_shape[(int(result.image.shape[-2]), int(result.image.shape[-1]))].append(row_id)
        try:
            for shape, ids in by_shape.items():
                groups = [[i] for i in ids] if needs_content(self.params) else [ids]
                for group in groups:
                    try:
                        self._score_group(shape, group, style, style_image)
                    except Exception as exc:  # noqa: BLE001
                        for row_id in group:
                            self.metrics_errors[row_id] = f"{type(exc).__name__}: {exc}"
        finally:
            worker.stylizer.cache_hits, worker.stylizer.cache_misses = counters

    def _score_group(self, shape: tuple[int, int], ids: list[str], style: Style, style_image: torch.Tensor) -> None:
        worker = self.worker
        device = worker.device
        outputs = torch.stack([self.results[i].image for i in ids]).to(device)
        contents = torch.stack([resize_to(self.contents[i].to(device).float(), shape) for i in ids])
        content = contents[0] if needs_content(self.params) else None
        targets = worker.stylizer.style_targets(style, shape, self.params, cache=worker.targets, content=content)
        features = feature_metrics_per_image(worker.model, outputs, contents, targets, self.params)
        style_on_device = style_image.to(device)
        for b, row_id in enumerate(ids):
            pixels = image_metrics(outputs[b], contents[b], style_on_device, self.params.preserve_color)
            self.metrics[row_id] = {**features[b], **pixels}

    # -- 3. commit ----------------------------------------------------------------------------------

    def commit(self) -> list[RowOutcome]:
        """Images (deterministic names, atomic, safe to repeat), then the batch's curve file; one outcome
        per row, in the batch's order."""
        options = self.worker.config.storage_options
        written: list[RowTask] = []
        for task in self.spec.rows:
            if task.row_id not in self.results:
                continue
            try:
                check_inside(self.worker.config.out, task.output_uri)
                data = encode_image(self.results[task.row_id].image, task.image_format)
                write_bytes_atomic(task.output_uri, data, options)
                written.append(task)
            except OutputNameError as exc:
                self.fail(task, ErrorKind.bad_output_name, str(exc))
            except Exception as exc:  # noqa: BLE001
                self.fail(task, ErrorKind.storage, f"writing {describe(exc)}", exc)
        if written:
            try:
                check_inside(self.worker.config.out, self.spec.curve_uri)
                table = curves_table([t.row_id for t in written], [self.results[t.row_id].curve for t in written])
                write_bytes_atomic(self.spec.curve_uri, parquet_bytes(table), options)
            except Exception as exc:  # noqa: BLE001 - images are kept; the rows are redone (idempotent)
                for task in written:
                    self.fail(task, ErrorKind.storage, f"writing curves {describe(exc)}", exc)
                written = []
        finished = utcnow()
        for task in written:
            self.outcomes[task.row_id] = self._done(task, finished)
        return [self.outcomes[t.row_id] for t in self.spec.rows]

    def _done(self, task: RowTask, finished: datetime) -> RowOutcome:
        result = self.results[task.row_id]
        return RowOutcome(
            row_id=task.row_id,
            ok=True,
            started_at=self.started,
            finished_at=finished,
            final={k: float(v) for k, v in result.final.items()},
            steps_run=int(result.steps_run),
            output_uri=task.output_uri,
            curve_uri=self.spec.curve_uri,
            metrics=self.metrics.get(task.row_id),
            metrics_error=self.metrics_errors.get(task.row_id),
            optimise_seconds=self.device_share,
            style_weights=tuple(float(w) for w in result.style_weights),
        )
