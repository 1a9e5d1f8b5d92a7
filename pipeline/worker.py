"""The Ray actor that stylises batches: builds VGG itself, caches style targets, writes images and curves.

Created by the run driver (one per GPU, or `--workers N` on CPU) from a `WorkerConfig`; the driver calls
`run_batch` and gets one `RowOutcome` per row back. A bad row is an outcome, never an exception. The actor
is threaded (max_concurrency=2): while one call optimises on the device under `_device_lock`, the next
call reads and decodes its images, and the previous one encodes and uploads its results.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from nst_core.engine import ImageResult, Stylizer
from nst_core.images import (
    ImageError,
    decode_image,
    encode_image,
    max_file_bytes,
    resize_to,
    resized_shape,
)
from nst_core.metrics import row_metrics
from nst_core.params import Precision, StyleParams
from nst_core.precision import resolve_precision
from nst_core.targets import Style, needs_content
from pipeline.batching import device_free_bytes
from pipeline.curves import curves_table, parquet_bytes
from pipeline.ledger import ErrorKind, utcnow
from pipeline.outputs import OutputNameError, check_inside
from pipeline.storage import (
    InputMissing,
    InputRefused,
    StorageError,
    is_connection_error,
    is_storage_error,
    mask_text,
    read_bytes,
    set_operation_timeout,
    write_bytes_atomic,
)
from pipeline.tasks import BatchOutcome, BatchSpec, RowOutcome, RowTask, WorkerConfig


class LRUCache(OrderedDict[Hashable, Any]):
    """Bounded mapping that evicts the least recently used entry; the engine's style-target cache."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def __getitem__(self, key: Hashable) -> Any:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def classify_read_error(exc: BaseException) -> ErrorKind:
    """Bad input is the row's fault (not retried); an I/O failure may pass (retried)."""
    if isinstance(exc, (InputMissing, InputRefused, ImageError, OutputNameError)):
        return ErrorKind.bad_input
    if is_storage_error(exc):
        return ErrorKind.storage
    if isinstance(exc, ValueError) or _is_client_validation(exc):
        # A URI the storage client refuses to send (botocore's ParamValidationError for a bucket name like
        # "user:password@bucket"): the row's URI is at fault and retrying cannot help.
        return ErrorKind.bad_input
    return ErrorKind.internal


def _is_client_validation(exc: BaseException) -> bool:
    return any(c.__name__ in ("ParamValidationError", "InvalidBucketName") for c in type(exc).__mro__)


def numerical_problem(result: ImageResult, content: torch.Tensor) -> str | None:
    """Why a finished row must not be recorded done, or None: non-finite losses or pixels (NaN weights or
    an overflow give an all-black image that looks like a result), or a uniform image after optimising a
    non-uniform content (a collapsed optimisation). Such a row fails as `numerical` and is not retried:
    the same inputs and parameters fail the same way."""
    bad = sorted(k for k, v in result.final.items() if not math.isfinite(float(v)))
    if bad:
        return f"non-finite loss ({', '.join(f'{k}={result.final[k]}' for k in bad)}) after {result.steps_run} steps"
    image = result.image
    if not bool(torch.isfinite(image).all()):
        return f"the image has non-finite pixels after {result.steps_run} steps"
    if result.steps_run > 0 and _uniform(image) and not _uniform(content):
        value = [round(float(v), 4) for v in image[:, 0, 0]]
        return (
            f"degenerate image: every pixel is {value} after {result.steps_run} steps of a non-uniform content "
            "(check the weights and the loss weights)"
        )
    return None


def _uniform(image: torch.Tensor) -> bool:
    flat = image.detach().reshape(image.shape[0], -1).float()
    return bool((flat.amax(dim=1) - flat.amin(dim=1)).max() == 0)


_LAYER_BLOCK = re.compile(r"^(conv|relu|pool)(\d+)")


def min_side(params: StyleParams) -> int:
    """Smallest image side the VGG stack accepts for the layers in use: each 2x2 pooling halves it, so a
    layer after k poolings needs 2**k pixels (relu5_1, after four, needs 16)."""
    pools = 0
    for layer in (*params.content_layers, *params.style_layers):
        match = _LAYER_BLOCK.match(layer)
        if match:
            block = int(match.group(2))
            pools = max(pools, block if match.group(1) == "pool" else block - 1)
    return 2**pools


def check_shape(image: torch.Tensor, long_side: int, need: int, label: str) -> None:
    """Refuse, as bad input, an image so elongated that its resized short side is below `need` pixels.

    Without this the optimisation fails inside VGG's pooling with a RuntimeError, which looks transient
    and would be retried, and it would fail every other row optimised in the same batch.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    rh, rw = resized_shape(h, w, long_side)
    if min(rh, rw) < need:
        raise ImageError(
            f"{label}: {w}x{h} is too elongated: at a long side of {long_side} px its short side would be "
            f"{min(rh, rw)} px, below the {need} px the VGG layers in use need; crop it or raise --size"
        )


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return (
        text
        if isinstance(exc, (InputMissing, InputRefused, ImageError, StorageError))
        else f"{type(exc).__name__}: {text}"
    )


class StyleWorker:
    """One per device. Ray wraps it with `ray.remote(...)`; it also works as a plain object in-process."""

    def __init__(self, config: WorkerConfig, name: str = "worker") -> None:
        from pipeline.weights import load_model

        self.config = config
        self.name = name
        set_operation_timeout(config.read_timeout)
        self.gpu_ids = _ray_gpu_ids()
        # Ray restricts CUDA_VISIBLE_DEVICES to this actor's GPU, so it is local index 0.
        self.device = "cuda:0" if self.gpu_ids and torch.cuda.is_available() else "cpu"
        self.model = load_model(
            config.weights,
            sha256=config.weights_sha256,
            arch=config.arch,
            device=self.device,
            storage_options=config.storage_options,
        )
        self.stylizer = Stylizer(
            self.model,
            self.device,
            compile=config.compile,
            compile_mode="reduce-overhead" if config.compile and self.device.startswith("cuda") else None,
        )
        self.targets: LRUCache = LRUCache(config.target_cache_size)
        self.style_images: LRUCache = LRUCache(config.style_image_cache_size)
        self._device_lock = threading.Lock()
        self._style_lock = threading.Lock()
        self._io = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="nst-io")
        self.node = _node_address()
        self.batches_run = 0

    def info(self) -> dict[str, Any]:
        """Identity and capacity, for the driver's plan, the progress display and the tests."""
        return {
            "name": self.name,
            "node": self.node,
            "pid": os.getpid(),
            "gpu_ids": [str(g) for g in self.gpu_ids],
            "device": self.device,
            "free_bytes": device_free_bytes(self.device),
            "auto_precision": resolve_precision(Precision.auto, torch.device(self.device)).value,
            "cache_hits": self.stylizer.cache_hits,
            "cache_misses": self.stylizer.cache_misses,
            "weights_source": getattr(self.model, "weights_source", None),
            "weights_sha256": getattr(self.model, "weights_sha256", None),
        }

    # -- the batch call -------------------------------------------------------------------------------

    def run_batch(self, spec: BatchSpec) -> BatchOutcome:
        started = utcnow()
        outcomes: dict[str, RowOutcome] = {}

        def fail(task: RowTask, kind: ErrorKind, message: str, exc: BaseException | None = None) -> None:
            outcomes[task.row_id] = RowOutcome(
                unreachable=exc is not None and is_connection_error(exc),
                row_id=task.row_id,
                ok=False,
                started_at=started,
                finished_at=utcnow(),
                error_kind=kind.value,
                error_message=mask_text(
                    message, self.config.storage_options, (task.content_uri, task.style_uri, task.output_uri)
                ),
            )

        # 1. Read and decode (outside the device lock: overlaps the other call's optimisation).
        style_image: torch.Tensor | None = None
        try:
            style_image = self._style_image(spec.rows[0].style_uri, _style_side(spec.rows[0].params))
        except Exception as exc:  # noqa: BLE001 - every row of the batch shares this style
            for task in spec.rows:
                fail(task, classify_read_error(exc), f"style {describe(exc)}", exc)
        if style_image is not None:
            params = spec.rows[0].params
            try:
                smallest = min(side for side, _ in params.stages())
                check_shape(
                    style_image,
                    max(1, round(smallest * params.style_scale)),
                    min_side(params),
                    f"style {mask_text(spec.rows[0].style_uri)}",
                )
            except ImageError as exc:
                for task in spec.rows:
                    fail(task, ErrorKind.bad_input, str(exc))
                style_image = None
        contents: dict[str, torch.Tensor] = {}
        if style_image is not None:
            futures = {
                task.row_id: self._io.submit(self._read_image, task.content_uri, _content_side(task.params))
                for task in spec.rows
            }
            for task in spec.rows:
                try:
                    image = futures[task.row_id].result()
                    check_shape(
                        image,
                        min(side for side, _ in task.params.stages()),
                        min_side(task.params),
                        mask_text(task.content_uri),
                    )
                    contents[task.row_id] = image
                except Exception as exc:  # noqa: BLE001 - one bad row never stops the others
                    fail(task, classify_read_error(exc), f"content {describe(exc)}", exc)

        # 2. Optimise the rows that loaded, all at once.
        ready = [task for task in spec.rows if task.row_id in contents]
        results: dict[str, ImageResult] = {}
        metrics: dict[str, dict[str, float]] = {}
        device_share: float | None = None
        if ready and style_image is not None:
            style = Style(images=(style_image,), key=ready[0].style_uri)
            try:
                with self._device_lock:
                    on_device = time.monotonic()
                    out = self.stylizer.stylize(
                        [contents[t.row_id] for t in ready], style, ready[0].params, cache=self.targets
                    )
                    self.batches_run += 1
                    results = {t.row_id: r for t, r in zip(ready, out, strict=True)}
                    for task in ready:
                        problem = numerical_problem(results[task.row_id], contents[task.row_id])
                        if problem is not None:
                            del results[task.row_id]
                            fail(task, ErrorKind.numerical, problem)
                            continue
                        metrics[task.row_id] = self._metrics(
                            results[task.row_id].image, contents[task.row_id], style, style_image, task.params
                        )
                    device_share = (time.monotonic() - on_device) / len(ready)
            except Exception as exc:  # noqa: BLE001 - classified below, never raised per row
                if is_oom(exc):
                    self._release_memory()
                    if len(ready) > 1:
                        return self._outcome(spec, [], oom=True, message=describe(exc))
                    kind = ErrorKind.oom
                elif isinstance(exc, ValueError):
                    kind = ErrorKind.invalid_params
                else:
                    kind = ErrorKind.internal
                for task in ready:
                    fail(task, kind, describe(exc))
        contents.clear()

        # 3. Commit images (deterministic names, atomic, safe to repeat), then the batch's curve file.
        written: list[RowTask] = []
        for task in spec.rows:
            if task.row_id not in results:
                continue
            try:
                check_inside(self.config.out, task.output_uri)
                data = encode_image(results[task.row_id].image, task.image_format)
                write_bytes_atomic(task.output_uri, data, self.config.storage_options)
                written.append(task)
            except OutputNameError as exc:
                fail(task, ErrorKind.bad_output_name, str(exc))
            except Exception as exc:  # noqa: BLE001
                fail(task, ErrorKind.storage, f"writing {describe(exc)}", exc)
        if written:
            try:
                check_inside(self.config.out, spec.curve_uri)
                table = curves_table([t.row_id for t in written], [results[t.row_id].curve for t in written])
                write_bytes_atomic(spec.curve_uri, parquet_bytes(table), self.config.storage_options)
            except Exception as exc:  # noqa: BLE001 - images are kept; the rows are redone (idempotent)
                for task in written:
                    fail(task, ErrorKind.storage, f"writing curves {describe(exc)}", exc)
                written = []
        finished = utcnow()
        for task in written:
            result = results[task.row_id]
            outcomes[task.row_id] = RowOutcome(
                row_id=task.row_id,
                ok=True,
                started_at=started,
                finished_at=finished,
                final={k: float(v) for k, v in result.final.items()},
                steps_run=int(result.steps_run),
                output_uri=task.output_uri,
                curve_uri=spec.curve_uri,
                metrics=metrics.get(task.row_id),
                optimise_seconds=device_share,
            )
        return self._outcome(spec, [outcomes[t.row_id] for t in spec.rows])

    # -- helpers --------------------------------------------------------------------------------------

    def _outcome(
        self, spec: BatchSpec, rows: list[RowOutcome], *, oom: bool = False, message: str | None = None
    ) -> BatchOutcome:
        return BatchOutcome(
            batch_id=spec.batch_id,
            rows=rows,
            worker=self.name,
            node=self.node,
            device=self.device
            if not self.gpu_ids
            else f"{self.device} (gpu {','.join(map(str, self.gpu_ids))})",
            cache_hits=self.stylizer.cache_hits,
            cache_misses=self.stylizer.cache_misses,
            oom=oom,
            message=mask_text(message, self.config.storage_options) if message else None,
        )

    def _metrics(
        self,
        image: torch.Tensor,
        content: torch.Tensor,
        style: Style,
        style_image: torch.Tensor,
        params: StyleParams,
    ) -> dict[str, float]:
        """Quality metrics of one result (docs/metrics.md). A metric failure never fails the row: it is logged
        and the row is recorded without metrics. The style targets come from the cache the run just filled."""
        counters = (self.stylizer.cache_hits, self.stylizer.cache_misses)  # a re-read is not a cache use
        try:
            shape = (int(image.shape[-2]), int(image.shape[-1]))
            on_device = resize_to(content.to(self.device).float(), shape)
            targets = self.stylizer.style_targets(
                style, shape, params, cache=self.targets, content=on_device if needs_content(params) else None
            )
            return row_metrics(
                self.model, image.to(self.device), on_device, style_image.to(self.device), targets, params
            )
        except Exception as exc:  # noqa: BLE001
            print(f"[{self.name}] metrics skipped: {type(exc).__name__}: {exc}", flush=True)
            return {}
        finally:
            self.stylizer.cache_hits, self.stylizer.cache_misses = counters

    def _read_image(self, uri: str, long_side: int | None = None) -> torch.Tensor:
        """Read with the byte limit and timeout of the run; decode at reduced size when much larger than
        `long_side` (the size the engine resizes it to)."""
        data = read_bytes(
            uri,
            self.config.storage_options,
            max_bytes=max_file_bytes(self.config.max_pixels),
            timeout=self.config.read_timeout,
        )
        return decode_image(data, name=mask_text(uri), max_pixels=self.config.max_pixels, long_side=long_side)

    def _style_image(self, uri: str, long_side: int | None = None) -> torch.Tensor:
        key = (uri, long_side)
        with self._style_lock:
            if key in self.style_images:
                return self.style_images[key]  # type: ignore[no-any-return]
        image = self._read_image(uri, long_side)
        with self._style_lock:
            self.style_images[key] = image
        return image

    def _release_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        time.sleep(0)


def _content_side(params: StyleParams) -> int:
    return max(side for side, _ in params.stages())


def _style_side(params: StyleParams) -> int:
    return max(1, math.ceil(_content_side(params) * params.style_scale))


def _ray_gpu_ids() -> list[Any]:
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return []


def _node_address() -> str:
    try:
        import ray

        if ray.is_initialized():
            return str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001
        pass
    return socket.gethostname()
