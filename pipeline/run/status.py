"""`nst status OUT`: what a run's ledger says — counts by status, throughput, failures grouped by kind.

Called by `status_command`; reads only the ledger and run.json, so it works while a run is going and on
any storage the run wrote to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs import iter_manifest
from jobs.masking import mask_uri
from nst_core.params import StyleParams
from pipeline.run.record import read_run_json
from pipeline.store.errors import RunError, storage_errors
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import RowState, read_ledger, row_states
from pipeline.store.records import PERMANENT_KINDS

EXAMPLES_PER_KIND = 3


def collect_status(
    out: str, storage_options: Mapping[str, Any] | None = None, *, max_attempts: int | None = None
) -> dict[str, Any]:
    """JSON-safe status of the output folder `out`."""
    layout = OutputLayout(out)
    with storage_errors(f"reading {mask_uri(out)}", storage_options):
        table = read_ledger(layout, storage_options)
        run_record = read_run_json(layout, storage_options)
    if run_record is None and table.num_rows == 0:
        raise RunError(f"no run found at {mask_uri(out)} (no run.json and no ledger records); check the path")
    run = run_record or {}
    all_states = row_states(table)
    current = _manifest_row_ids(run, storage_options)
    states = all_states if current is None else {k: v for k, v in all_states.items() if k in current}
    outside = [] if current is None else [v for k, v in all_states.items() if k not in current]
    limit = max_attempts if max_attempts is not None else int(run.get("max_attempts") or 3)
    done = [s for s in states.values() if s.done]
    failed = [s for s in states.values() if not s.done]
    permanent = [s for s in failed if s.permanent_failure]
    exhausted = [s for s in failed if not s.permanent_failure and s.attempt >= limit]
    retryable = [s for s in failed if not s.permanent_failure and s.attempt < limit]
    by_kind = _failures_by_kind(failed)
    seconds = float(sum(h.get("seconds") or 0.0 for h in run.get("history", [])))
    throughput = _throughput(done, seconds)
    manifest_rows = len(current) if current is not None else (run.get("stats") or {}).get("manifest_rows")
    not_started = (manifest_rows - len(states)) if isinstance(manifest_rows, int) else None
    return {
        "out": mask_uri(out),
        "run_id": run.get("run_id"),
        "run_status": run.get("status"),
        "manifest_rows": manifest_rows,
        "rows": len(states),
        "done": len(done),
        "failed": len(failed),
        "failed_permanent": len(permanent),
        "failed_exhausted": len(exhausted),
        "failed_will_retry": len(retryable),
        "not_started": not_started if not_started is None or not_started >= 0 else None,
        "counted_against": "current manifest" if current is not None else "ledger",
        "not_in_manifest": None
        if current is None
        else {"rows": len(outside), "done": sum(1 for s in outside if s.done)},
        "records": table.num_rows,
        "duplicate_done_records": sum(max(0, s.done_records - 1) for s in states.values()),
        "images_per_hour": throughput,
        "run_seconds": seconds,
        "failures": by_kind,
    }


def _failures_by_kind(failed: list[RowState]) -> dict[str, dict[str, Any]]:
    """Failed rows grouped by error kind, each group with its first few rows as examples."""
    by_kind: dict[str, dict[str, Any]] = {}
    for state in sorted(failed, key=lambda s: s.row_id):
        kind = state.last_error_kind or "unknown"
        entry = by_kind.setdefault(
            kind, {"rows": 0, "retryable": kind not in {k.value for k in PERMANENT_KINDS}, "examples": []}
        )
        entry["rows"] += 1
        if len(entry["examples"]) < EXAMPLES_PER_KIND:
            entry["examples"].append(
                {"row_id": state.row_id, "attempt": state.attempt, "message": state.last_error_message}
            )
    return by_kind


def _throughput(done: list[RowState], seconds: float) -> float | None:
    """Images per hour: over the recorded run times, else over the span of the done records."""
    if done and seconds > 0:
        return len(done) / seconds * 3600
    finished = [s.done_record["finished_at"] for s in done if s.done_record and s.done_record.get("finished_at")]
    started = [s.done_record["started_at"] for s in done if s.done_record and s.done_record.get("started_at")]
    if finished and started:
        span = (max(finished) - min(started)).total_seconds()
        return len(done) / span * 3600 if span > 0 else None
    return None


def _manifest_row_ids(run: Mapping[str, Any], storage_options: Mapping[str, Any] | None) -> set[str] | None:
    """Row ids of the run's manifest as it is now (it may have changed since), or None when unreadable."""
    manifest = run.get("manifest")
    if not isinstance(manifest, str) or "***" in manifest:
        return None  # masked credentials: the recorded URI cannot be opened
    try:
        defaults = StyleParams(**(run.get("params") or {}))
        ids: set[str] = set()
        for item in iter_manifest(manifest, defaults=defaults, storage_options=dict(storage_options or {})):
            row_id = item.row_id or f"manifest-row-{item.index}"
            ids.add(row_id)
        return ids
    except Exception:  # noqa: BLE001 - moved, deleted or unreadable: count from the ledger alone
        return None
