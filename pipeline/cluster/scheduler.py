"""Which rows go next, to which worker, in batches of what size: the driver's queue, without Ray.

Rows are grouped by style and parameters (one batch shares one style's targets); a worker gets the group
whose targets it already holds, else one nobody holds; batches shrink near the end so every worker stays
busy, and after an out-of-memory split a group never grows back. Retries wait in a heap ordered by the
time they are due.

A worker's death (a lost node, a preemption, a crash) returns its rows without spending their attempts,
to the back of their groups, so that the rows of one unlucky batch are not the first in flight again at
the next death. A row present at several deaths is isolated: it runs alone, on a worker running nothing
else, where a death can only be its own; after a few of those it fails for good.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from nst_core.params import StyleParams
from pipeline.cluster.events import WorkerView
from pipeline.cluster.tasks import BatchSpec, RowTask, style_key
from pipeline.store.layout import OutputLayout, batch_id_for

SLOTS_PER_WORKER = 2
"""Calls in flight per actor: one optimising while the next one reads and decodes its images."""
DEATHS_BEFORE_ISOLATION = 2
"""A row in flight at this many worker deaths is run alone from then on: alone, a death is its own."""
ISOLATED_DEATHS = 2
"""Deaths of a worker running the row alone after which the row fails for good (`worker_lost`)."""
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0

GroupKey = tuple[str, StyleParams]


@dataclass
class WorkerSlot:
    """The driver's view of one actor: what it holds, what it runs, what it did."""

    actor: Any
    name: str
    alive: bool = True
    in_flight: int = 0
    styles: OrderedDict[str, None] = field(default_factory=OrderedDict)
    ping: Any = None
    next_ping: float = 0.0
    alone: bool = False
    """Running an isolated row: no other call is sent until it returns."""
    joined_at: float = field(default_factory=time.time)
    left_at: float | None = None
    """Wall clock of the last loss when the worker never came back (None while it serves)."""
    rows_done: int = 0
    current: str = ""
    device: str = ""
    node: str = ""
    gpu_ids: tuple[int, ...] = ()
    restarts: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    earlier_hits: int = 0
    """Counts of previous incarnations of a restarted actor (its counters restart at zero)."""
    earlier_misses: int = 0

    def remember(self, key: str, capacity: int) -> None:
        self.styles[key] = None
        self.styles.move_to_end(key)
        while len(self.styles) > capacity:
            self.styles.popitem(last=False)

    def record(self) -> dict[str, Any]:
        """What run.json keeps of this worker: where it ran, when it served, what it did."""
        return {
            "name": self.name,
            "node": self.node,
            "device": self.device,
            "gpu_ids": list(self.gpu_ids),
            "joined_at": _iso(self.joined_at),
            "left_at": _iso(self.left_at),
            "rows_done": self.rows_done,
            "restarts": self.restarts,
        }

    def view(self) -> WorkerView:
        return WorkerView(
            name=self.name,
            device=self.device,
            node=self.node,
            alive=self.alive,
            in_flight=self.in_flight,
            current=self.current,
            rows_done=self.rows_done,
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
        )


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def retry_delay(attempt: int) -> float:
    """Seconds before attempt `attempt + 1` of a row: doubling from 1 s, at most 30 s."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


class Scheduler:
    def __init__(
        self, layout: OutputLayout, batch_size: Callable[[StyleParams], int], style_cache_size: int
    ) -> None:
        self.layout = layout
        self.batch_size = batch_size
        self.style_cache_size = style_cache_size
        self.groups: OrderedDict[GroupKey, deque[RowTask]] = OrderedDict()
        self.group_cap: dict[GroupKey, int] = {}
        self.delayed: list[tuple[float, int, RowTask]] = []
        self.isolated: deque[RowTask] = deque()
        self._seq = itertools.count()
        self.total = 0

    def add(self, tasks: Sequence[RowTask]) -> None:
        for task in tasks:
            self.enqueue(task)
        self.total += len(tasks)

    def enqueue(self, task: RowTask, *, front: bool = False) -> None:
        queue = self.groups.setdefault((task.style_uri, task.params), deque())
        (queue.appendleft if front else queue.append)(task)

    def requeue(self, tasks: Iterable[RowTask]) -> None:
        """Back to the front of their groups, in their order (rows that were in flight go first)."""
        for task in reversed(list(tasks)):
            self.enqueue(task, front=True)

    def later(self, task: RowTask, delay: float) -> None:
        heapq.heappush(self.delayed, (time.monotonic() + delay, next(self._seq), task))

    def release_delayed(self) -> None:
        now = time.monotonic()
        while self.delayed and self.delayed[0][0] <= now:
            _, _, task = heapq.heappop(self.delayed)
            self.enqueue(task, front=True)

    def next_due(self) -> float | None:
        """Seconds until the first delayed row is due, or None when none waits."""
        return self.delayed[0][0] - time.monotonic() if self.delayed else None

    def pending(self) -> int:
        return sum(len(q) for q in self.groups.values()) + len(self.delayed) + len(self.isolated)

    def after_death(self, spec: BatchSpec) -> list[RowTask]:
        """Return a dead worker's batch to the queue, attempts unspent; the rows that must fail for good
        (they killed their worker every time they ran alone) are returned instead."""
        poison: list[RowTask] = []
        for task in spec.rows:
            task = replace(task, deaths=task.deaths + 1, isolated_deaths=task.isolated_deaths + spec.alone)
            if task.isolated_deaths >= ISOLATED_DEATHS:
                poison.append(task)
            elif task.deaths >= DEATHS_BEFORE_ISOLATION:
                self.isolated.append(task)
            else:
                self.enqueue(task)
        return poison

    def next_isolated(self) -> BatchSpec | None:
        """A batch of one suspected row, for a worker that runs nothing else meanwhile."""
        if not self.isolated:
            return None
        task = self.isolated.popleft()
        batch_id = batch_id_for([task.row_id])
        return BatchSpec(batch_id=batch_id, rows=(task,), curve_uri=self.layout.curve_uri(batch_id), alone=True)

    def split(self, spec: BatchSpec) -> None:
        """An out-of-memory batch: its group is capped at half its size and its rows go back first."""
        key: GroupKey = (spec.rows[0].style_uri, spec.rows[0].params)
        half = max(1, len(spec.rows) // 2)
        # min: a larger batch that was in flight may report its OOM after a smaller one did.
        self.group_cap[key] = min(self.group_cap.get(key, half), half)
        self.requeue(spec.rows)

    def next_batch(self, worker: WorkerSlot, workers: Sequence[WorkerSlot]) -> BatchSpec | None:
        live = [(k, q) for k, q in self.groups.items() if q]
        if not live:
            return None
        others = set().union(*(w.styles for w in workers if w is not worker and w.alive))

        def affinity(item: tuple[GroupKey, deque[RowTask]]) -> tuple[int, int]:
            key = style_key(item[0][0], item[0][1])
            if key in worker.styles:  # targets already on this actor
                return (2, len(item[1]))
            if key not in others:  # nobody holds it: start it here
                return (1, len(item[1]))
            return (0, len(item[1]))

        key, queue = max(live, key=affinity)
        size = self._size_for(key, sum(w.alive for w in workers))
        rows = tuple(queue.popleft() for _ in range(min(size, len(queue))))
        batch_id = batch_id_for(r.row_id for r in rows)
        return BatchSpec(batch_id=batch_id, rows=rows, curve_uri=self.layout.curve_uri(batch_id))

    def _size_for(self, key: GroupKey, alive: int) -> int:
        size = self.group_cap.get(key) or self.batch_size(key[1])
        # Near the end, smaller batches keep every actor busy instead of one actor finishing alone.
        spread = math.ceil(self.pending() / (SLOTS_PER_WORKER * max(1, alive)))
        return max(1, min(size, spread))
