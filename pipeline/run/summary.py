"""`RunSummary`: what one run did, as `nst run` prints it and run.json records it under `stats`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from jobs.masking import mask_uri
from pipeline.cluster.events import DriverStats, Execution
from pipeline.run.plan import Plan
from pipeline.store.records import LedgerRecord


@dataclass
class RunSummary:
    run_id: str
    out: str
    manifest_rows: int
    already_done: int
    planned: int
    done: int
    failed: int
    retried: int
    not_retried: int
    """Rows left failed from earlier runs (bad input, or attempts exhausted): see --retry-failed."""
    remaining: int
    """Rows neither done nor failed for good when the run stopped (interrupted, aborted)."""
    duplicates: int
    seconds: float
    rows_per_hour: float
    cache_hits: int
    cache_misses: int
    workers: list[dict[str, Any]] = field(default_factory=list)
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    aborted: str | None = None
    oom_splits: int = 0
    worker_losses: int = 0
    rows_returned: int = 0
    """Rows a worker's death sent back to the queue without spending an attempt."""
    storage_outages: int = 0
    """Episodes in which storage did not answer; their rows were held back without spending attempts."""
    note: str | None = None

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else None

    @property
    def complete(self) -> bool:
        return self.remaining == 0 and not self.interrupted and self.aborted is None

    @classmethod
    def from_plan(cls, run_id: str, out: str, plan: Plan) -> RunSummary:
        """The summary before any row runs: what planning found and the failures it recorded."""
        return cls(
            run_id=run_id,
            out=mask_uri(out),
            manifest_rows=plan.manifest_rows,
            already_done=plan.already_done,
            planned=len(plan.tasks),
            done=0,
            failed=len(plan.records),
            retried=0,
            not_retried=plan.not_retried,
            remaining=len(plan.tasks),
            duplicates=plan.duplicates,
            seconds=0.0,
            rows_per_hour=0.0,
            cache_hits=0,
            cache_misses=0,
            failures_by_kind=count_kinds(plan.records),
        )

    def add(self, result: Execution) -> None:
        """Fold in what the workers did: counters the driver keeps under the same names are copied, the
        failures add to those planning recorded."""
        stats = result.stats
        for name in _FROM_STATS:
            setattr(self, name, getattr(stats, name))
        self.failed += stats.failed
        for kind, n in stats.failures_by_kind.items():
            self.failures_by_kind[kind] = self.failures_by_kind.get(kind, 0) + n
        self.remaining = result.remaining
        self.cache_hits, self.cache_misses = result.cache_hits, result.cache_misses
        self.workers = result.workers
        self.note = result.note

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cache_hit_rate"] = self.cache_hit_rate
        return data


_FROM_STATS = tuple(
    f.name for f in fields(DriverStats) if f.name in RunSummary.__dataclass_fields__ and f.name not in ("failed", "failures_by_kind")
)
"""Driver counters the summary takes as they are (done, retried, interrupted, aborted, …)."""


def count_kinds(records: list[LedgerRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        key = r.error_kind.value if r.error_kind is not None else "unknown"
        counts[key] = counts.get(key, 0) + 1
    return counts
