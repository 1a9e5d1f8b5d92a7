"""The scheduling loop of a run: sends batches to actors, collects outcomes, records them in the ledger.

Called by `execute`. One loop over `ray.wait` (never ActorPool, which drops failed work): each actor holds
up to two calls (one optimising, one loading); which rows go where is the scheduler's decision, what a
storage failure means is the outage policy's, how outcomes become records is the ledger buffer's. Here:
failed rows come back with backoff until `max_attempts`; a dead actor's rows go back to the queue without
spending attempts (the scheduler isolates a row that keeps dying with its worker) and the actor is probed
until its restart completes; an out-of-memory batch is split in half.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from nst_core.params import StyleParams
from pipeline.cluster.events import DriverStats, OnEvent, RunProgressed
from pipeline.cluster.ledger_buffer import LedgerBuffer
from pipeline.cluster.outage import OutagePolicy
from pipeline.cluster.outcomes import Outcomes
from pipeline.cluster.scheduler import SLOTS_PER_WORKER, Scheduler, WorkerSlot
from pipeline.cluster.tasks import STORAGE_TIMEOUT_S, BatchOutcome, BatchSpec, RowTask
from pipeline.store.layout import OutputLayout
from pipeline.store.lease import lost_reason
from pipeline.store.records import ErrorKind

PING_INTERVAL_S = 2.0
GROW_INTERVAL_S = 2.0
"""How often the driver looks for GPUs that joined the cluster (and renews its autoscaler request)."""
NO_WORKER_TIMEOUT_S = 600.0
"""Give up when no actor has answered for this long (e.g. every GPU node is gone)."""


class Driver(Outcomes):
    def __init__(
        self,
        *,
        actors: Sequence[Any],
        infos: Sequence[dict[str, Any]],
        layout: OutputLayout,
        run_id: str,
        batch_size: Callable[[StyleParams], int],
        max_attempts: int,
        storage_options: dict[str, Any] | None,
        style_cache_size: int,
        on_event: OnEvent | None = None,
        storage_timeout: float = STORAGE_TIMEOUT_S,
        pool: Any = None,
    ) -> None:
        self.workers = [
            WorkerSlot(
                actor=a,
                name=str(info.get("name", f"w{i}")),
                device=str(info.get("device", "")),
                node=str(info.get("node", "")),
                gpu_ids=tuple(info.get("gpu_ids") or ()),
            )
            for i, (a, info) in enumerate(zip(actors, infos, strict=True))
        ]
        self.run_id = run_id
        self.max_attempts = max_attempts
        self.storage_options = storage_options
        self.style_cache_size = style_cache_size
        self.on_event = on_event
        self.stats = DriverStats()
        self.queue = Scheduler(layout, batch_size, style_cache_size)
        self.outage = OutagePolicy(layout.root, storage_options, storage_timeout, self.stats, self.queue.later)
        self.buffer = LedgerBuffer(layout, storage_options, self.outage)
        self.in_flight: dict[Any, tuple[int, BatchSpec]] = {}
        self.started = time.monotonic()
        self.pool = pool
        """runtime.WorkerPool (grow, request) or None for a fixed set of actors."""
        self._next_grow = 0.0

    @property
    def total(self) -> int:
        return self.queue.total

    def add(self, tasks: Sequence[RowTask]) -> None:
        self.queue.add(tasks)

    def pending(self) -> int:
        return self.queue.pending()

    def remaining(self) -> int:
        return self.pending() + sum(len(spec.rows) for _, spec in self.in_flight.values())

    # -- the loop -------------------------------------------------------------------------------------

    def run(self) -> DriverStats:
        self._last_answer = time.monotonic()
        try:
            while not self._must_stop():
                self.queue.release_delayed()
                self._grow()
                self._probe_workers()
                self._fill_slots()
                if not self.in_flight and not self.pending():
                    break  # a probe of a restarting actor is only worth waiting for while work remains
                if not self._wait_and_handle():
                    break
                self.buffer.flush()
                self._notify()
        except KeyboardInterrupt:
            self.stats.interrupted = True
        finally:
            self.buffer.flush(final=True)
        return self.stats

    def _must_stop(self) -> bool:
        reason = self.outage.gave_up() or lost_reason()
        if reason is not None:
            self.stats.aborted = reason
        return reason is not None

    def _wait_and_handle(self) -> bool:
        """Wait up to a second for results and handle them; False when the run must give up."""
        refs = list(self.in_flight) + [w.ping for w in self.workers if w.ping is not None]
        if not refs:
            due = self.queue.next_due()
            if due is not None and any(w.alive for w in self.workers):
                time.sleep(max(0.0, min(due, 1.0)))
                return True
            time.sleep(0.2)
            return not self._nobody_answers("no worker answered")
        ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            self._last_answer = time.monotonic()
        elif not any(w.alive for w in self.workers) and self._nobody_answers(
            f"no worker answered for {NO_WORKER_TIMEOUT_S:.0f} s"
        ):
            return False
        for ref in ready:
            self._handle(ref)
        return True

    def _nobody_answers(self, reason: str) -> bool:
        if time.monotonic() - self._last_answer > NO_WORKER_TIMEOUT_S:
            self.stats.aborted = reason
            return True
        return False

    def _notify(self) -> None:
        if self.on_event is not None:
            self.on_event(
                RunProgressed(
                    done=self.stats.done,
                    failed=self.stats.failed,
                    remaining=self.remaining(),
                    workers=tuple(w.view() for w in self.workers),
                )
            )

    def _fill_slots(self) -> None:
        if self.outage.paused():
            return  # a storage outage: sending work now would only fail it again
        for index, worker in enumerate(self.workers):
            if worker.alive and worker.in_flight == 0 and self.queue.isolated:
                spec = self.queue.next_isolated()
                assert spec is not None
                self._send(index, worker, spec)
                worker.alone = True
            while worker.alive and not worker.alone and worker.in_flight < SLOTS_PER_WORKER:
                spec = self.queue.next_batch(worker, self.workers)
                if spec is None:
                    break
                self._send(index, worker, spec)

    def _send(self, index: int, worker: WorkerSlot, spec: BatchSpec) -> None:
        ref = worker.actor.run_batch.remote(spec)
        self.in_flight[ref] = (index, spec)
        worker.in_flight += 1
        worker.current = spec.rows[0].style_uri.rsplit("/", 1)[-1]
        worker.remember(spec.style_key, self.style_cache_size)

    # -- outcomes -------------------------------------------------------------------------------------

    def _handle(self, ref: Any) -> None:
        for worker in self.workers:
            if worker.ping is not None and worker.ping == ref:
                self._handle_ping(worker, ref)
                return
        index, spec = self.in_flight.pop(ref)
        worker = self.workers[index]
        worker.in_flight -= 1
        worker.alone = False  # however the call ended, an isolated row no longer holds the worker
        try:
            outcome: BatchOutcome = ray.get(ref)
        except RayTaskError as exc:
            self._fail_batch(spec, ErrorKind.internal, f"{type(exc.cause).__name__}: {exc.cause}")
            return
        except RayError as exc:
            # The actor died, its node went away, or Ray's memory monitor killed it: nothing says which row,
            # if any, was at fault, so no attempt is spent (the scheduler isolates repeat suspects).
            memory = isinstance(exc, ray.exceptions.OutOfMemoryError)
            self._worker_died(worker, spec, "killed by Ray's memory monitor" if memory else type(exc).__name__)
            return
        self._handle_outcome(worker, spec, outcome)

    def _handle_ping(self, worker: WorkerSlot, ref: Any) -> None:
        worker.ping = None
        try:
            info = ray.get(ref)
        except RayError:
            worker.next_ping = time.monotonic() + PING_INTERVAL_S
            return
        worker.alive = True
        worker.left_at = None
        worker.current = ""
        worker.device, worker.node = str(info.get("device", "")), str(info.get("node", ""))
        worker.gpu_ids = tuple(info.get("gpu_ids") or ())
        worker.styles.clear()  # a restarted actor starts with an empty cache

    def _grow(self) -> None:
        """New GPUs get a worker while rows remain; the autoscaler is asked for one GPU per row waiting
        (up to the pool's limit) and told nothing more is needed once the queue is empty."""
        now = time.monotonic()
        if self.pool is None or now < self._next_grow:
            return
        self._next_grow = now + GROW_INTERVAL_S
        pending = self.pending()
        self.pool.request(min(pending, self.pool.limit or pending))
        if not pending:
            return
        for actor, name in self.pool.grow():
            self.workers.append(WorkerSlot(actor=actor, name=name, alive=False, current="starting", ping=actor.info.remote()))

    def _probe_workers(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if not worker.alive and worker.ping is None and worker.in_flight == 0 and now >= worker.next_ping:
                worker.ping = worker.actor.info.remote()

    
