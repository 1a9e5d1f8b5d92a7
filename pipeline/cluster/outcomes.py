"""What the driver does with what comes back, without Ray: done rows to the ledger buffer, failed rows to a
retry or a final record, a dead worker's rows back to the queue; the figures it keeps on its workers.

A mixin of `driver.Driver`, which owns the state named below and the Ray calls; kept apart so that the
rules for outcomes read (and are tested) without a cluster.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from pipeline.cluster.events import DriverStats
from pipeline.cluster.ledger_buffer import LedgerBuffer, row_record
from pipeline.cluster.outage import OutagePolicy
from pipeline.cluster.scheduler import Scheduler, WorkerSlot, retry_delay
from pipeline.cluster.tasks import BatchOutcome, BatchSpec, RowOutcome, RowTask
from pipeline.store.records import ErrorKind


class Outcomes:
    run_id: str
    max_attempts: int
    storage_options: dict[str, Any] | None
    stats: DriverStats
    queue: Scheduler
    outage: OutagePolicy
    buffer: LedgerBuffer
    workers: list[WorkerSlot]

    def _handle_outcome(self, worker: WorkerSlot, spec: BatchSpec, outcome: BatchOutcome) -> None:
        worker.cache_hits, worker.cache_misses = outcome.cache_hits, outcome.cache_misses
        worker.device, worker.node = outcome.device, outcome.node
        if outcome.oom:
            self.stats.oom_splits += 1
            self.queue.split(spec)
            return
        by_id = {task.row_id: task for task in spec.rows}
        for row in outcome.rows:
            task = by_id[row.row_id]
            if row.ok:
                self.outage.over()
                self.stats.done += 1
                worker.rows_done += 1
                self.buffer.append(row_record(self.run_id, task, row, outcome, spec, self.storage_options))
            else:
                kind = ErrorKind(row.error_kind or "internal")
                self._fail_row(task, kind, row.error_message or "", row, outcome, spec)

    def _worker_died(self, worker: WorkerSlot, spec: BatchSpec, cause: str) -> None:
        self.stats.worker_losses += 1
        self.stats.rows_returned += len(spec.rows)
        self._worker_lost(worker)
        for task in self.queue.after_death(spec):
            self._fail_row(
                task,
                ErrorKind.worker_lost,
                f"its worker died {task.deaths} times while it was in flight, {task.isolated_deaths} of them "
                f"running it alone (last: worker {worker.name} {cause}): the row itself kills its worker "
                "(a crash or a memory kill of the process); not retried",
                None,
                None,
                spec,
                retry=False,
            )

    def _worker_lost(self, worker: WorkerSlot) -> None:
        if worker.alive:
            worker.restarts += 1
            worker.earlier_hits += worker.cache_hits
            worker.earlier_misses += worker.cache_misses
            worker.cache_hits = worker.cache_misses = 0
        worker.alive = False
        worker.left_at = time.time()
        worker.current = "restarting"
        worker.styles.clear()
        worker.next_ping = time.monotonic() + 0.5

    def worker_records(self) -> list[dict[str, Any]]:
        return [w.record() for w in self.workers]

    def _fail_batch(self, spec: BatchSpec, kind: ErrorKind, message: str) -> None:
        for task in spec.rows:
            self._fail_row(task, kind, message, None, None, spec)

    def _fail_row(
        self,
        task: RowTask,
        kind: ErrorKind,
        message: str,
        row: RowOutcome | None,
        outcome: BatchOutcome | None,
        spec: BatchSpec | None,
        *,
        retry: bool = True,
    ) -> None:
        if kind is ErrorKind.storage and self.outage.hold(
            task, message, reported_unreachable=row is not None and row.unreachable
        ):
            return
        record = row_record(
            self.run_id, task, row, outcome, spec, self.storage_options, kind=kind, message=message
        )
        self.buffer.append(record)
        self.stats.failures_by_kind[kind.value] = self.stats.failures_by_kind.get(kind.value, 0) + 1
        if retry and kind.retryable and task.attempt < self.max_attempts:
            self.stats.retried += 1
            self.queue.later(replace(task, attempt=task.attempt + 1), retry_delay(task.attempt))
        else:
            self.stats.failed += 1

    def cache_counts(self) -> tuple[int, int]:
        hits = sum(w.cache_hits + w.earlier_hits for w in self.workers)
        return hits, sum(w.cache_misses + w.earlier_misses for w in self.workers)
