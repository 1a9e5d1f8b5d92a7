"""The Ray actor that stylises batches: builds VGG itself, caches style targets, writes images and curves.

Created by the run driver (one per GPU, or `--workers N` on CPU) from a `WorkerConfig`; the driver calls
`run_batch` and gets one `RowOutcome` per row back. A bad row is an outcome, never an exception. The actor
is threaded (max_concurrency=2): while one call optimises on the device under `device_lock`, the next
call reads and decodes its images, and the previous one encodes and uploads its results.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
import torch

from jobs.masking import mask_text
from nst_core.engine import Stylizer
from nst_core.images import decode_image, max_file_bytes
from nst_core.masks import decode_mask
from nst_core.params import Precision
from nst_core.precision import resolve_precision
from pipeline.cluster.batch_run import BatchOOM, BatchRun
from pipeline.cluster.batching import device_free_bytes
from pipeline.cluster.tasks import BatchOutcome, BatchSpec, RowOutcome, WorkerConfig
from pipeline.store.bounded import set_operation_timeout
from pipeline.store.transfer import read_bytes
from pipeline.store.weights import load_model

CHAOS_EXIT_ENV = "NST_CHAOS_EXIT_ON"
"""Fault injection for the reliability tests (docs/reliability.md): a worker process whose environment
sets it exits at once, before loading, when a batch holds a row whose content URI contains this text."""
CHAOS_EXIT_CODE = 70


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


class StyleWorker:
    """One per device. Ray wraps it with `ray.remote(...)`; it also works as a plain object in-process."""

    def __init__(self, config: WorkerConfig, name: str = "worker") -> None:

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
        self.style_masks: LRUCache = LRUCache(config.style_image_cache_size)
        self.device_lock = threading.Lock()
        self._style_lock = threading.Lock()
        self.io = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="nst-io")
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
        """Load, optimise and score, commit (pipeline/cluster/batch_run.py); one outcome per row."""
        crash_on = os.environ.get(CHAOS_EXIT_ENV)
        if crash_on and any(crash_on in task.content_uri for task in spec.rows):
            os._exit(CHAOS_EXIT_CODE)  # fault injection for the reliability tests: a row that kills its worker
        batch = BatchRun(self, spec)
        style_image = batch.load()
        if style_image is not None:
            try:
                batch.optimise(style_image)
            except BatchOOM as exc:
                return self._outcome(spec, [], oom=True, message=str(exc))
        return self._outcome(spec, batch.commit())

    def _outcome(
        self, spec: BatchSpec, rows: list[RowOutcome], *, oom: bool = False, message: str | None = None
    ) -> BatchOutcome:
        return BatchOutcome(
            batch_id=spec.batch_id,
            rows=rows,
            worker=self.name,
            node=self.node,
            device=self.device if not self.gpu_ids else f"{self.device} (gpu {','.join(map(str, self.gpu_ids))})",
            cache_hits=self.stylizer.cache_hits,
            cache_misses=self.stylizer.cache_misses,
            oom=oom,
            message=mask_text(message, self.config.storage_options) if message else None,
        )

    # -- helpers of the batch steps ---------------------------------------------------------------------

    def read_image(self, uri: str, long_side: int | None = None) -> torch.Tensor:
        """Read with the byte limit and timeout of the run; decode at reduced size when much larger than
        `long_side` (the size the engine resizes it to)."""
        data = read_bytes(
            uri,
            self.config.storage_options,
            max_bytes=max_file_bytes(self.config.max_pixels),
            timeout=self.config.read_timeout,
        )
        return decode_image(data, name=mask_text(uri), max_pixels=self.config.max_pixels, long_side=long_side)

    def read_mask(self, uri: str) -> torch.Tensor:
        """A region mask as [H, W] labels, read like an image; decoded at full size, since a reduced decode
        would blend the colours of neighbouring regions into new ones."""
        data = read_bytes(
            uri,
            self.config.storage_options,
            max_bytes=max_file_bytes(self.config.max_pixels),
            timeout=self.config.read_timeout,
        )
        return decode_mask(data, name=mask_text(uri), max_pixels=self.config.max_pixels)

    def style_mask(self, uri: str) -> torch.Tensor:
        """Style masks are shared by many rows, like their style images: read once per worker."""
        with self._style_lock:
            if uri in self.style_masks:
                return self.style_masks[uri]  # type: ignore[no-any-return]
        mask = self.read_mask(uri)
        with self._style_lock:
            self.style_masks[uri] = mask
        return mask

    def style_image(self, uri: str, long_side: int | None = None) -> torch.Tensor:
        key = (uri, long_side)
        with self._style_lock:
            if key in self.style_images:
                return self.style_images[key]  # type: ignore[no-any-return]
        image = self.read_image(uri, long_side)
        with self._style_lock:
            self.style_images[key] = image
        return image

    def release_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        time.sleep(0)


def _ray_gpu_ids() -> list[Any]:
    try:
        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return []


def _node_address() -> str:
    try:
        if ray.is_initialized():
            return str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001
        pass
    return socket.gethostname()
