"""What the cluster tells the rest of the run: events for a display, the driver's counters, the result.

Plain dataclasses without Ray, so the CLI can render a run and `run/` can fold its result into the summary
without importing Ray; the driver builds them from its own state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkerView:
    name: str
    device: str
    node: str
    alive: bool
    in_flight: int
    current: str
    """The style file of the batch it works on, or `restarting`."""
    rows_done: int
    cache_hits: int
    cache_misses: int


@dataclass(frozen=True)
class RunStarted:
    """The workers are up and rows are about to be sent; `total` rows are to do."""

    total: int
    already_done: int
    manifest_rows: int
    note: str | None = None


@dataclass(frozen=True)
class RunProgressed:
    done: int
    failed: int
    remaining: int
    workers: tuple[WorkerView, ...]


@dataclass(frozen=True)
class RunEnded:
    """The driver loop ended (finished, stopped or failed); sent exactly once after RunStarted."""


RunEvent = RunStarted | RunProgressed | RunEnded
OnEvent = Callable[[RunEvent], None]


@dataclass
class DriverStats:
    done: int = 0
    failed: int = 0
    retried: int = 0
    oom_splits: int = 0
    worker_losses: int = 0
    interrupted: bool = False
    aborted: str | None = None
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    storage_outages: int = 0
    """Episodes in which a storage failure came with a store that did not answer."""
    outage_requeues: int = 0
    """Rows sent back to the queue during an outage without spending an attempt."""
    rows_returned: int = 0
    """Rows sent back to the queue by a worker's death, without spending an attempt."""


@dataclass
class Execution:
    """What the workers did for one run: the driver's counters and what was left when it stopped."""

    stats: DriverStats
    remaining: int
    cache_hits: int = 0
    cache_misses: int = 0
    workers: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
