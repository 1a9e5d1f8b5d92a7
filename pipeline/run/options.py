"""`RunOptions`: every run-level setting of `nst run`, validated once, in one frozen object.

The CLI, `nst demo` and library callers build one; `run_manifest` plans, records and executes from it. Its
`record()` is the header of run.json and its `worker_config()` is what every actor is built from, so a new
setting is added here and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fsspec.core import split_protocol

from jobs.masking import mask_options, mask_uri
from nst_core.params import DEFAULT_PARAMS, Arch, StyleParams
from pipeline.cluster.runtime import resolve_address
from pipeline.cluster.tasks import DEFAULT_MAX_PIXELS, READ_TIMEOUT_S, STORAGE_TIMEOUT_S, WorkerConfig
from pipeline.store.fs import known_protocol, protocol_of

DEFAULT_MAX_ROWS = 10_000_000
"""`--max-rows`: the driver keeps one small task per planned row in memory (~1 KB each), so a manifest
far beyond this is more likely a mistake (a cross join) than a run; split it or raise the limit."""


@dataclass(frozen=True)
class RunOptions:
    manifest: str
    out: str
    params: StyleParams = DEFAULT_PARAMS
    address: str | None = None
    weights: str = "imagenet"
    weights_sha256: str | None = None
    arch: str = "vgg19"
    batch_size: int | str = "auto"
    max_attempts: int = 3
    retry_failed: bool = False
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    num_workers: int | None = None
    max_workers: int | None = None
    """GPU clusters: the pool grows onto GPUs that join, up to this many workers (None: `num_workers` if
    given, else no limit)."""
    request_gpus: bool = False
    """Ask the Ray autoscaler for one GPU per wanted worker while rows wait."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_rows: int = DEFAULT_MAX_ROWS
    storage_timeout: float = STORAGE_TIMEOUT_S
    read_timeout: float = READ_TIMEOUT_S
    compile: bool = False
    force: bool = False
    """Take over the output from a run whose lease is stale."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"--max-attempts must be >= 1, got {self.max_attempts}")
        if self.max_pixels < 1 or self.max_rows < 1:
            raise ValueError(
                f"--max-pixels and --max-rows must be >= 1, got {self.max_pixels} and {self.max_rows}"
            )
        if not self.storage_timeout > 0:
            raise ValueError(f"--storage-timeout must be > 0 seconds, got {self.storage_timeout}")
        if not self.read_timeout > 0:
            raise ValueError(f"--read-timeout must be > 0 seconds, got {self.read_timeout}")
        if self.num_workers is not None and self.num_workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.num_workers}")
        if self.max_workers is not None and self.max_workers < (self.num_workers or 1):
            raise ValueError(f"--max-workers must be >= --workers and >= 1, got {self.max_workers}")
        parse_batch_size(self.batch_size)
        for uri, what in ((self.manifest, "manifest"), (self.out, "--out"), (self.weights, "--weights")):
            if not known_protocol(uri):
                raise ValueError(f"{what} {mask_uri(uri)}: unknown storage scheme {protocol_of(uri)!r}")
        arch = self.arch.value if isinstance(self.arch, Arch) else str(self.arch)
        object.__setattr__(self, "arch", arch)  # an unknown name is refused by the weights check, with the choices
        object.__setattr__(self, "manifest", absolute_uri(self.manifest))
        object.__setattr__(self, "out", absolute_uri(self.out))
        object.__setattr__(self, "storage_options", dict(self.storage_options or {}))

    @property
    def fixed_batch(self) -> int | None:
        """The batch size asked for, or None for `auto` (sized from the workers' free memory)."""
        return parse_batch_size(self.batch_size)

    @property
    def worker_limit(self) -> int | None:
        """How many workers the pool may grow to on a GPU cluster; None = one per GPU, however many join."""
        return self.max_workers if self.max_workers is not None else self.num_workers

    @property
    def operation_timeout(self) -> float:
        """Every storage operation fails after --read-timeout, and never outlasts --storage-timeout."""
        return min(self.read_timeout, self.storage_timeout)

    def record(self) -> dict[str, Any]:
        """The settings as run.json records them: URIs and storage options masked."""
        target = resolve_address(self.address)
        return {
            "manifest": mask_uri(self.manifest),
            "out": mask_uri(self.out),
            "address": mask_uri(target) if target else None,
            "params": self.params.to_dict(),
            "weights": {"source": mask_uri(self.weights), "sha256": self.weights_sha256, "arch": self.arch},
            "batch_size": self.batch_size,
            "max_attempts": self.max_attempts,
            "retry_failed": self.retry_failed,
            "max_pixels": self.max_pixels,
            "max_rows": self.max_rows,
            "storage_timeout": self.storage_timeout,
            "compile": self.compile,
            "max_workers": self.worker_limit,
            "request_gpus": self.request_gpus,
            "storage_options": mask_options(self.storage_options),
        }

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(
            weights=self.weights,
            weights_sha256=self.weights_sha256,
            arch=self.arch,
            storage_options=dict(self.storage_options),
            out=self.out,
            max_pixels=self.max_pixels,
            compile=self.compile,
            read_timeout=self.operation_timeout,
        )


def parse_batch_size(batch_size: int | str) -> int | None:
    if isinstance(batch_size, int) and not isinstance(batch_size, bool):
        value = batch_size
    elif isinstance(batch_size, str) and batch_size.strip().lower() == "auto":
        return None
    else:
        try:
            value = int(str(batch_size))
        except ValueError:
            raise ValueError(f"--batch-size must be a positive integer or 'auto', got {batch_size!r}") from None
    if value < 1:
        raise ValueError(f"--batch-size must be a positive integer or 'auto', got {batch_size!r}")
    return value


def absolute_uri(uri: str) -> str:
    """A plain local path made absolute, so run.json and the ledger mean the same file from any directory."""
    if split_protocol(uri)[0] is None:
        return os.path.abspath(os.path.expanduser(uri))
    return uri
