"""`nst status OUT`: what a run's ledger says — counts by status, throughput, failures grouped by kind.

Called by `status_command`; reads only the ledger and run.json, so it works while a run is going and on
any storage the run wrote to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from pipeline.ledger import PERMANENT_KINDS, read_ledger, row_states
from pipeline.outputs import OutputLayout
from pipeline.run import read_run_json
from pipeline.storage import mask_uri

EXAMPLES_PER_KIND = 3


def collect_status(
    out: str, storage_options: Mapping[str, Any] | None = None, *, max_attempts: int | None = None
) -> dict[str, Any]:
    """JSON-safe status of the output folder `out`."""
    layout = OutputLayout(out)
    table = read_ledger(layout, storage_options)
    states = row_states(table)
    run = read_run_json(layout, storage_options) or {}
    limit = max_attempts if max_attempts is not None else int(run.get("max_attempts") or 3)
    done = [s for s in states.values() if s.done]
    failed = [s for s in states.values() if not s.done]
    permanent = [s for s in failed if s.permanent_failure]
    exhausted = [s for s in failed if not s.permanent_failure and s.attempt >= limit]
    retryable = [s for s in failed if not s.permanent_failure and s.attempt < limit]
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
    throughput = None
    finished = [
        s.done_record["finished_at"] for s in done if s.done_record and s.done_record.get("finished_at")
    ]
    started = [s.done_record["started_at"] for s in done if s.done_record and s.done_record.get("started_at")]
    seconds = float(sum(h.get("seconds") or 0.0 for h in run.get("history", [])))
    if done and seconds > 0:
        throughput = len(done) / seconds * 3600
    elif finished and started:
        span = (max(finished) - min(started)).total_seconds()
        throughput = len(done) / span * 3600 if span > 0 else None
    manifest_rows = (run.get("stats") or {}).get("manifest_rows")
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
        "not_started": (manifest_rows - len(states)) if isinstance(manifest_rows, int) else None,
        "records": table.num_rows,
        "duplicate_done_records": sum(max(0, s.done_records - 1) for s in states.values()),
        "images_per_hour": throughput,
        "run_seconds": seconds,
        "failures": by_kind,
    }


def render_status(report: Mapping[str, Any]) -> Group:
    counts = Table(title=f"{report['out']}", show_header=False, box=None)
    counts.add_column("what", style="bold")
    counts.add_column("value")
    counts.add_row("last run", f"{report['run_id'] or '–'} ({report['run_status'] or 'unknown'})")
    if report["manifest_rows"] is not None:
        counts.add_row("manifest rows", str(report["manifest_rows"]))
    counts.add_row("done", f"[green]{report['done']}[/]")
    counts.add_row("failed", f"[red]{report['failed']}[/]" if report["failed"] else "0")
    counts.add_row("  bad input (not retried)", str(report["failed_permanent"]))
    counts.add_row("  attempts exhausted", str(report["failed_exhausted"]))
    counts.add_row("  will retry on re-run", str(report["failed_will_retry"]))
    if report["not_started"] is not None:
        counts.add_row("not started", str(report["not_started"]))
    rate = report["images_per_hour"]
    counts.add_row("images/hour", f"{rate:,.0f}" if rate else "–")
    parts: list[Any] = [counts]
    if report["failures"]:
        failures = Table(title="failures by kind", header_style="bold")
        for column in ("kind", "rows", "retried", "example row", "message"):
            failures.add_column(column, overflow="fold")
        for kind, entry in sorted(report["failures"].items()):
            for i, example in enumerate(entry["examples"]):
                failures.add_row(
                    kind if i == 0 else "",
                    str(entry["rows"]) if i == 0 else "",
                    ("yes" if entry["retryable"] else "no") if i == 0 else "",
                    example["row_id"],
                    example["message"] or "",
                )
        parts.append(failures)
        parts.append(
            Text(
                "Re-run the same `nst run` to retry; add --retry-failed to retry every failed row.",
                style="dim",
            )
        )
    return Group(*parts)
