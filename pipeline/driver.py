"""The scheduling loop of a run: batches rows by style, routes them to actors, records outcomes in the ledger.

Called by `run_manifest`. One loop over `ray.wait` (never ActorPool, which drops failed work): each actor
holds up to two calls (one optimising, one loading), a style's rows go to the actor that already holds its
targets, failed rows come back with backoff until `max_attempts`, a dead actor's rows are rescheduled and
the actor is probed until its restart completes, and an out-of-memory batch is split in half. A storage
failure while the store itself does not answer is an outage, not the row's fault: dispatching pauses, the
row keeps its attempt count, and the run stops once the outage outlasts `storage_timeout`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from nst_core.params import StyleParams
from pipeline.ledger import ErrorKind, LedgerRecord, RowStatus, write_part
from pipeline.outputs import OutputLayout, batch_id_for
from pipeline.storage import (
    describe_storage_error,
    filesystem,
    is_local,
    is_storage_error,
    mask_text,
    unreachable,
)
from pipeline.tasks import STORAGE_TIMEOUT_S, BatchOutcome, BatchSpec, RowOutcome, RowTask, style_key

SLOTS_PER_WORKER = 2
"""Calls in flight per actor: one optimising while the next one reads and decodes its images."""
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
PING_INTERVAL_S = 2.0
NO_WORKER_TIMEOUT_S = 600.0
"""Give up when no actor has answered for this long (e.g. every GPU node is gone)."""
OUTAGE_PAUSE_CAP_S = 10.0
MAX_OUTAGE_HOLDS = 20
"""A row held back this often without its store ever recovering for it spends attempts again (bounds a
single object that keeps refusing connections while the rest of the store answers)."""
PROBE_TTL_S = 1.0

GroupKey = tuple[str, StyleParams]


@dataclass
class WorkerSlot:
    actor: Any
    name: str
    alive: bool = True
    in_flight: int = 0
    styles: OrderedDict[str, None] = field(default_factory=OrderedDict)
    ping: Any = None
    next_ping: float = 0.0
    rows_done: int = 0
    current: str = ""
    device: str = ""
    node: str = ""
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


class Driver:
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
        on_event: Callable[[Driver], None] | None = None,
        storage_timeout: float = STORAGE_TIMEOUT_S,
    ) -> None:
        self.workers = [
            WorkerSlot(
                actor=a,
                name=str(info.get("name", f"w{i}")),
                device=str(info.get("device", "")),
                node=str(info.get("node", "")),
            )
            for i, (a, info) in enumerate(zip(actors, infos, strict=True))
        ]
        self.layout = layout
        self.run_id = run_id
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.storage_options = storage_options
        self.style_cache_size = style_cache_size
        self.on_event = on_event
        self.groups: OrderedDict[GroupKey, deque[RowTask]] = OrderedDict()
        self.group_cap: dict[GroupKey, int] = {}
        self.delayed: list[tuple[float, int, RowTask]] = []
        self._seq = itertools.count()
        self.in_flight: dict[Any, tuple[int, BatchSpec]] = {}
        self.buffer: list[LedgerRecord] = []
        self.stats = DriverStats()
        self.total = 0
        self.started = time.monotonic()
        self.parts_written = 0
        self.ledger_write_failures = 0
        self.storage_timeout = storage_timeout
        self.outage_since: float | None = None
        self.outage_error: str | None = None
        self.ledger_down_since: float | None = None
        self.pause_until = 0.0
        self._probes: dict[str, tuple[float, str | None]] = {}

    # -- queue ----------------------------------------------------------------------------------------

    def add(self, tasks: Sequence[RowTask]) -> None:
        for task in tasks:
            self._enqueue(task)
        self.total += len(tasks)

    def _enqueue(self, task: RowTask, *, front: bool = False) -> None:
        key: GroupKey = (task.style_uri, task.params)
        queue = self.groups.setdefault(key, deque())
        (queue.appendleft if front else queue.append)(task)

    def pending(self) -> int:
        return sum(len(q) for q in self.groups.values()) + len(self.delayed)

    def remaining(self) -> int:
        return self.pending() + sum(len(spec.rows) for _, spec in self.in_flight.values())

    # -- the loop -------------------------------------------------------------------------------------

    def run(self) -> DriverStats:
        last_answer = time.monotonic()
        try:
            while True:
                if self._storage_gave_up():
                    break
                self._release_delayed()
                self._probe_workers()
                self._fill_slots()
                if not self.in_flight and not self.pending():
                    break  # a probe of a restarting actor is only worth waiting for while work remains
                refs = list(self.in_flight) + [w.ping for w in self.workers if w.ping is not None]
                if not refs:
                    if self.delayed and any(w.alive for w in self.workers):
                        time.sleep(max(0.0, min(self.delayed[0][0] - time.monotonic(), 1.0)))
                        continue
                    time.sleep(0.2)
                    if time.monotonic() - last_answer > NO_WORKER_TIMEOUT_S:
                        self.stats.aborted = "no worker answered"
                        break
                    continue
                ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
                if ready:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                    last_answer = time.monotonic()
                elif (
                    not any(w.alive for w in self.workers)
                    and time.monotonic() - last_answer > NO_WORKER_TIMEOUT_S
                ):
                    self.stats.aborted = f"no worker answered for {NO_WORKER_TIMEOUT_S:.0f} s"
                    break
                for ref in ready:
                    self._handle(ref)
                self.flush()
                self._notify()
        except KeyboardInterrupt:
            self.stats.interrupted = True
        finally:
            self.flush(final=True)
        return self.stats

    def _notify(self) -> None:
        if self.on_event is not None:
            self.on_event(self)

    # -- scheduling -----------------------------------------------------------------------------------

    def _release_delayed(self) -> None:
        now = time.monotonic()
        while self.delayed and self.delayed[0][0] <= now:
            _, _, task = heapq.heappop(self.delayed)
            self._enqueue(task, front=True)

    def _fill_slots(self) -> None:
        if time.monotonic() < self.pause_until:
            return  # a storage outage: sending work now would only fail it again
        for index, worker in enumerate(self.workers):
            while worker.alive and worker.in_flight < SLOTS_PER_WORKER:
                spec = self._next_batch(worker)
                if spec is None:
                    return
                ref = worker.actor.run_batch.remote(spec)
                self.in_flight[ref] = (index, spec)
                worker.in_flight += 1
                worker.current = spec.rows[0].style_uri.rsplit("/", 1)[-1]
                worker.remember(spec.style_key, self.style_cache_size)

    def _next_batch(self, worker: WorkerSlot) -> BatchSpec | None:
        live = [(k, q) for k, q in self.groups.items() if q]
        if not live:
            return None
        others = set().union(*(w.styles for w in self.workers if w is not worker and w.alive))

        def affinity(item: tuple[GroupKey, deque[RowTask]]) -> tuple[int, int]:
            key = style_key(item[0][0], item[0][1])
            if key in worker.styles:  # targets already on this actor
                return (2, len(item[1]))
            if key not in others:  # nobody holds it: start it here
                return (1, len(item[1]))
            return (0, len(item[1]))

        key, queue = max(live, key=affinity)
        size = self._size_for(key, queue)
        rows = tuple(queue.popleft() for _ in range(min(size, len(queue))))
        return BatchSpec(
            batch_id=batch_id_for(r.row_id for r in rows),
            rows=rows,
            curve_uri=self.layout.curve_uri(batch_id_for(r.row_id for r in rows)),
        )

    def _size_for(self, key: GroupKey, queue: deque[RowTask]) -> int:
        size = self.group_cap.get(key) or self.batch_size(key[1])
        # Near the end, smaller batches keep every actor busy instead of one actor finishing alone.
        slots = SLOTS_PER_WORKER * max(1, sum(w.alive for w in self.workers))
        spread = math.ceil(self.pending() / slots)
        return max(1, min(size, spread))

    # -- outcomes -------------------------------------------------------------------------------------

    def _handle(self, ref: Any) -> None:
        for worker in self.workers:
            if worker.ping is not None and worker.ping == ref:
                self._handle_ping(worker, ref)
                return
        index, spec = self.in_flight.pop(ref)
        worker = self.workers[index]
        worker.in_flight -= 1
        try:
            outcome: BatchOutcome = ray.get(ref)
        except RayActorError as exc:
            self.stats.worker_losses += 1
            self._worker_lost(worker)
            self._fail_batch(spec, ErrorKind.worker_lost, f"worker {worker.name} lost: {type(exc).__name__}")
            return
        except ray.exceptions.OutOfMemoryError as exc:
            self._worker_lost(worker)
            self._fail_batch(spec, ErrorKind.oom, f"worker killed by Ray's memory monitor: {exc}")
            return
        except RayTaskError as exc:
            self._fail_batch(spec, ErrorKind.internal, f"{type(exc.cause).__name__}: {exc.cause}")
            return
        except RayError as exc:
            self._fail_batch(spec, ErrorKind.worker_lost, f"{type(exc).__name__}: {exc}")
            return
        worker.cache_hits, worker.cache_misses = outcome.cache_hits, outcome.cache_misses
        worker.device, worker.node = outcome.device, outcome.node
        if outcome.oom:
            self.stats.oom_splits += 1
            key: GroupKey = (spec.rows[0].style_uri, spec.rows[0].params)
            half = max(1, len(spec.rows) // 2)
            # min: a larger batch that was in flight may report its OOM after a smaller one did.
            self.group_cap[key] = min(self.group_cap.get(key, half), half)
            for task in reversed(spec.rows):
                self._enqueue(task, front=True)
            return
        by_id = {task.row_id: task for task in spec.rows}
        for row in outcome.rows:
            task = by_id[row.row_id]
            if row.ok:
                self._outage_over()
                self.stats.done += 1
                worker.rows_done += 1
                self.buffer.append(self._record(task, row, outcome, spec))
            else:
                self._fail_row(
                    task, ErrorKind(row.error_kind or "internal"), row.error_message or "", row, outcome, spec
                )

    def _handle_ping(self, worker: WorkerSlot, ref: Any) -> None:
        worker.ping = None
        try:
            info = ray.get(ref)
        except RayError:
            worker.next_ping = time.monotonic() + PING_INTERVAL_S
            return
        worker.alive = True
        worker.device, worker.node = str(info.get("device", "")), str(info.get("node", ""))
        worker.styles.clear()  # a restarted actor starts with an empty cache

    def _worker_lost(self, worker: WorkerSlot) -> None:
        if worker.alive:
            worker.restarts += 1
            worker.earlier_hits += worker.cache_hits
            worker.earlier_misses += worker.cache_misses
            worker.cache_hits = worker.cache_misses = 0
        worker.alive = False
        worker.current = "restarting"
        worker.styles.clear()
        worker.next_ping = time.monotonic() + 0.5

    def _probe_workers(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if not worker.alive and worker.ping is None and worker.in_flight == 0 and now >= worker.next_ping:
                worker.ping = worker.actor.info.remote()

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
    ) -> None:
        if kind is ErrorKind.storage and task.outage_holds < MAX_OUTAGE_HOLDS:
            # A failure to connect is an outage even when the store is back by the time the report arrives
            # (clients retry for seconds before giving up); otherwise ask the store now.
            reason = self._store_down(task)
            if reason is None and row is not None and row.unreachable:
                reason = message
            if reason is not None:
                self._hold_for_outage(task, reason)
                return
        record = self._record(task, row, outcome, spec, kind=kind, message=message)
        self.buffer.append(record)
        self.stats.failures_by_kind[kind.value] = self.stats.failures_by_kind.get(kind.value, 0) + 1
        if kind.retryable and task.attempt < self.max_attempts:
            self.stats.retried += 1
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (task.attempt - 1))
            retry = RowTask(**{**task.__dict__, "attempt": task.attempt + 1})
            heapq.heappush(self.delayed, (time.monotonic() + delay, next(self._seq), retry))
        else:
            self.stats.failed += 1

    # -- storage outages ------------------------------------------------------------------------------

    def _store_down(self, task: RowTask) -> str | None:
        """Why the store behind the output or this row's inputs does not answer; None if every one does.

        Local folders are never treated as down: a local I/O error (disk full, bad sector) counts an attempt.
        """
        now = time.monotonic()
        for uri in (self.layout.root, task.content_uri, task.style_uri):
            if is_local(uri):
                continue
            key = self._store_key(uri)
            cached = self._probes.get(key)
            if cached is None or now - cached[0] > PROBE_TTL_S:
                cached = (now, unreachable(uri, self.storage_options))
                self._probes[key] = cached
            if cached[1] is not None:
                return cached[1]
        self._outage_over()
        return None

    def _store_key(self, uri: str) -> str:
        try:
            fs, path = filesystem(uri, self.storage_options)
        except Exception:  # noqa: BLE001 - an unopenable URI is probed (and fails) on its own
            return uri
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        return f"{protocol}://{path.split('/', 1)[0]}"

    def _hold_for_outage(self, task: RowTask, reason: str) -> None:
        """Requeue the row with its attempt unchanged and pause dispatching; backoff grows with the outage."""
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
            self.stats.storage_outages += 1
        self.outage_error = reason
        self.stats.outage_requeues += 1
        pause = min(OUTAGE_PAUSE_CAP_S, max(BACKOFF_BASE_S, (now - self.outage_since) / 2))
        self.pause_until = max(self.pause_until, now + pause)
        held = RowTask(**{**task.__dict__, "outage_holds": task.outage_holds + 1})
        heapq.heappush(self.delayed, (now + pause, next(self._seq), held))

    def _outage_over(self) -> None:
        self.outage_since = None
        self.outage_error = None

    def _storage_gave_up(self) -> bool:
        now = time.monotonic()
        for since in (self.outage_since, self.ledger_down_since):
            if since is not None and now - since > self.storage_timeout:
                self.stats.aborted = (
                    f"storage unreachable for {now - since:.0f} s (--storage-timeout {self.storage_timeout:g}): "
                    f"{self.outage_error or 'no answer'}"
                )
                return True
        return False

    def _record(
        self,
        task: RowTask,
        row: RowOutcome | None,
        outcome: BatchOutcome | None,
        spec: BatchSpec | None,
        *,
        kind: ErrorKind | None = None,
        message: str | None = None,
    ) -> LedgerRecord:
        from pipeline.ledger import nondefault_params, utcnow

        now = utcnow()
        final = (row.final or {}) if row is not None and row.ok else {}
        started = row.started_at if row is not None else None
        finished = row.finished_at if row is not None else now
        return LedgerRecord(
            record_id=uuid.uuid4().hex,
            run_id=self.run_id,
            row_id=task.row_id,
            manifest_index=task.index,
            status=RowStatus.done if kind is None else RowStatus.failed,
            attempt=task.attempt,
            error_kind=kind,
            error_message=mask_text(
                message, self.storage_options, (task.content_uri, task.style_uri, task.output_uri)
            )
            if message
            else None,
            started_at=started,
            finished_at=finished,
            seconds=(finished - started).total_seconds() if started is not None else None,
            loss_total=final.get("total"),
            loss_content=final.get("content"),
            loss_style=final.get("style"),
            loss_tv=final.get("tv"),
            steps_run=row.steps_run if row is not None else None,
            batch_id=spec.batch_id if spec is not None else None,
            batch_size=len(spec.rows) if spec is not None else None,
            worker=outcome.worker if outcome is not None else None,
            node=outcome.node if outcome is not None else None,
            device=outcome.device if outcome is not None else None,
            content_uri=task.content_uri,
            style_uri=task.style_uri,
            output_uri=row.output_uri if row is not None and row.ok else None,
            curve_uri=row.curve_uri if row is not None and row.ok else None,
            metrics=(row.metrics or {}) if row is not None and row.ok else {},
            metadata=task.metadata,
            params=nondefault_params(task.params),
            optimise_seconds=row.optimise_seconds if row is not None and row.ok else None,
        )

    def flush(self, *, final: bool = False) -> None:
        """Commit buffered records as one ledger part: after the images and curves they describe exist.

        A failed write keeps the records for the next flush; only the final flush raises.
        """
        if not self.buffer:
            return
        if not final and self.ledger_down_since is not None and time.monotonic() < self.pause_until:
            return  # the ledger's store is down: retry after the pause instead of on every loop turn
        records, self.buffer = self.buffer, []
        try:
            write_part(self.layout, records, self.storage_options)
        except Exception as exc:
            self.buffer = records + self.buffer
            self.ledger_write_failures += 1
            if is_storage_error(exc):
                if self.ledger_down_since is None:
                    self.ledger_down_since = time.monotonic()
                self.outage_error = describe_storage_error(exc, self.storage_options)
                self.pause_until = max(self.pause_until, time.monotonic() + BACKOFF_BASE_S)
            if final:
                raise
            return
        self.ledger_down_since = None
        self.parts_written += 1

    # -- figures --------------------------------------------------------------------------------------

    def cache_counts(self) -> tuple[int, int]:
        hits = sum(w.cache_hits + w.earlier_hits for w in self.workers)
        return hits, sum(w.cache_misses + w.earlier_misses for w in self.workers)

    def rows_per_hour(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.stats.done / elapsed * 3600 if elapsed > 0 and self.stats.done else 0.0
