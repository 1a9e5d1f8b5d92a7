"""`run_manifest`: stylise every row of a manifest not yet done in an output folder; safe to re-run.

Called by `nst run`, `nst demo` and library users. Orchestration only, in this order: validate (one
`RunOptions`), check before the lease, plan (manifest minus the ledger's done set, before Ray starts, so a
fully done output re-runs in seconds without a cluster), record (run.json), execute (on Ray), finish.
"""

from __future__ import annotations

import time
from typing import Any

from jobs.masking import mask_uri
from pipeline.cluster.events import Execution, OnEvent
from pipeline.run.options import RunOptions
from pipeline.run.plan import Plan, check_row_count, plan_rows, sweep_orphan_curves
from pipeline.run.preflight import check_before_lease
from pipeline.run.record import RunRecord, manifest_sha256, read_run_json
from pipeline.run.summary import RunSummary
from pipeline.store.compaction import MAX_PARTS
from pipeline.store.errors import RunError, is_storage_error, storage_errors
from pipeline.store.layout import OutputLayout, check_layout_inside, sweep_temporary
from pipeline.store.lease import LeaseHeld, output_lease
from pipeline.store.ledger import compact, part_paths, read_ledger, referenced_curves, row_states, write_part
from pipeline.store.provenance import package_versions
from pipeline.store.records import utcnow


def run_manifest(
    options: RunOptions | None = None, /, *, on_event: OnEvent | None = None, **fields: Any
) -> RunSummary:
    """Stylise every row of `options.manifest` not yet done in `options.out` (or give RunOptions' fields
    as keywords). `on_event` receives the run's progress events (the CLI's display).

    One run per output: a second run on the same `out` refuses while the first holds its lease; `force`
    takes over a lease whose heartbeat is stale (pipeline/store/lease.py). The weights are checked before
    the lease is taken.
    """
    if options is None:
        options = RunOptions(**fields)
    elif fields:
        raise TypeError("run_manifest takes RunOptions or its fields as keywords, not both")
    check_before_lease(options)
    try:
        with output_lease(options.out, options.storage_options, force=options.force) as run_id:
            return _run(options, run_id, on_event)
    except LeaseHeld as exc:
        raise RunError(str(exc)) from None


def _run(options: RunOptions, run_id: str, on_event: OnEvent | None) -> RunSummary:
    started = time.time()
    started_at = utcnow()
    layout, storage = OutputLayout(options.out), options.storage_options
    check_layout_inside(options.out)  # before any sweep or write could follow a symlink out of --out
    check_row_count(options.manifest, options.max_rows, storage)
    with storage_errors(f"reading {mask_uri(options.out)}", storage):
        sweep_temporary(options.out)
        table = read_ledger(layout, storage)
        states = row_states(table)
    plan = plan_rows(options, states, run_id=run_id)
    with storage_errors(f"writing {mask_uri(options.out)}", storage):
        write_part(layout, plan.records, storage)
        if len(part_paths(layout, storage)) > MAX_PARTS:  # left by a version that compacted only at the end
            compact(layout, storage)
        sweep_orphan_curves(layout, referenced_curves(table), storage)
        previous = read_run_json(layout, storage) or {}
    header = options.record() | {
        "run_id": run_id,
        "started_at": started_at.isoformat(),
        "manifest_sha256": manifest_sha256(options.manifest, storage),
        "versions": package_versions(),
    }
    record = RunRecord(layout, storage, header, list(previous.get("history", [])))
    summary = RunSummary.from_plan(run_id, options.out, plan)
    if plan.tasks:
        record.write()
        with record.ending_recorded():
            summary.add(_execute(options, plan, run_id, record, on_event))
        _sweep_leftovers(options, summary)
    summary.seconds = time.time() - started
    summary.rows_per_hour = summary.done / summary.seconds * 3600 if summary.seconds > 0 else 0.0
    record.close(summary)
    return summary


def _sweep_leftovers(options: RunOptions, summary: RunSummary) -> None:
    """Files of work that was redone, removed once no worker writes rather than at the next run's start.

    A worker killed in the middle of a local write leaves its temporary file; a batch whose rows were held
    back by an outage, or lost with their worker, may have written its curve file before the rows were
    recomputed elsewhere. Both are garbage. A store that refuses the clean-up does not fail the run (the
    next start sweeps again), as with the compaction that follows.
    """
    layout, storage = OutputLayout(options.out), options.storage_options
    sweep_temporary(options.out)
    if not (summary.storage_outages or summary.worker_losses):
        return
    try:
        sweep_orphan_curves(layout, referenced_curves(read_ledger(layout, storage)), storage)
    except Exception as exc:  # noqa: BLE001 - only storage errors are expected here; others are bugs
        if not is_storage_error(exc):
            raise



def _execute(
    options: RunOptions, plan: Plan, run_id: str, record: RunRecord, on_event: OnEvent | None
) -> Execution:
    # Ray and torch load here, when there is work, not when the CLI starts or a done output re-runs.
    from pipeline.cluster.execute import Settings, execute

    settings = Settings(
        address=options.address,
        num_workers=options.num_workers,
        max_workers=options.worker_limit,
        request_gpus=options.request_gpus,
        fixed_batch=options.fixed_batch,
        max_attempts=options.max_attempts,
        storage_timeout=options.storage_timeout,
        already_done=plan.already_done,
        manifest_rows=plan.manifest_rows,
    )
    return execute(
        plan.tasks,
        run_id=run_id,
        config=options.worker_config(),
        settings=settings,
        on_workers=record.set_workers,
        on_event=on_event,
    )
