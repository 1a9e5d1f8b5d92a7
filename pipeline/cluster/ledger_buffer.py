"""From a row's outcome to its ledger record, and the buffer that commits records as ledger parts (and,
after each, merges the newest parts in tiers so that a long run holds a bounded number of them).

The done record is written only after the image and curve it points to exist (the worker committed them
before reporting), and a failed ledger write keeps its records for the next flush: a crash loses at most
the compute of the rows not yet flushed, never a record of work that was not done.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from jobs.masking import mask_text
from nst_core.names import LOSS_TERMS
from pipeline.cluster.outage import OutagePolicy
from pipeline.cluster.tasks import BatchOutcome, BatchSpec, RowOutcome, RowTask
from pipeline.store import compaction
from pipeline.store.compaction import PartTiers
from pipeline.store.errors import is_storage_error
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import write_part
from pipeline.store.records import ErrorKind, LedgerRecord, RowStatus, nondefault_params, utcnow


def row_record(
    run_id: str,
    task: RowTask,
    row: RowOutcome | None,
    outcome: BatchOutcome | None,
    spec: BatchSpec | None,
    storage_options: Mapping[str, Any] | None,
    *,
    kind: ErrorKind | None = None,
    message: str | None = None,
) -> LedgerRecord:
    """The ledger record of one row: done (kind None) or failed with `kind` and `message`."""
    done = row is not None and row.ok
    final = (row.final or {}) if row is not None and done else {}
    started = row.started_at if row is not None else None
    finished = row.finished_at if row is not None else utcnow()
    uris = (*task.input_uris, task.output_uri)
    return LedgerRecord(
        record_id=uuid.uuid4().hex,
        run_id=run_id,
        row_id=task.row_id,
        manifest_index=task.index,
        status=RowStatus.done if kind is None else RowStatus.failed,
        attempt=task.attempt,
        error_kind=kind,
        error_message=mask_text(message, storage_options, uris) if message else None,
        started_at=started,
        finished_at=finished,
        seconds=(finished - started).total_seconds() if started is not None else None,
        steps_run=row.steps_run if row is not None else None,
        batch_id=spec.batch_id if spec is not None else None,
        batch_size=len(spec.rows) if spec is not None else None,
        worker=outcome.worker if outcome is not None else None,
        node=outcome.node if outcome is not None else None,
        device=outcome.device if outcome is not None else None,
        content_uri=task.content_uri,
        style_uri=task.style_uri,
        output_uri=row.output_uri if row is not None and done else None,
        curve_uri=row.curve_uri if row is not None and done else None,
        metrics=(row.metrics or {}) if row is not None and done else {},
        metadata=task.metadata,
        params=nondefault_params(task.params),
        optimise_seconds=row.optimise_seconds if row is not None and done else None,
        **{f"loss_{term}": final.get(term) for term in LOSS_TERMS},
        metrics_error=mask_text(row.metrics_error, storage_options, uris) if row is not None and row.metrics_error else None,
        style_weights=list(row.style_weights) if row is not None and done and row.style_weights is not None else None,
        content_mask_uri=task.content_mask_uri,
        style_mask_uri=task.style_mask_uri,
    )


class LedgerBuffer:
    """Records waiting to be committed as one ledger part (one atomic write per flush)."""

    def __init__(
        self, layout: OutputLayout, storage_options: Mapping[str, Any] | None, outage: OutagePolicy,
        *, fan_in: int | None = None,
    ) -> None:
        self.layout = layout
        self.storage_options = storage_options
        self.outage = outage
        self.records: list[LedgerRecord] = []
        self.parts_written = 0
        self.write_failures = 0
        self.tiers = PartTiers(layout, storage_options, fan_in=fan_in or compaction.FAN_IN)
        self.compaction_failures = 0

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: LedgerRecord) -> None:
        self.records.append(record)

    def flush(self, *, final: bool = False) -> None:
        """Commit the buffered records. A failed write keeps them for the next flush; only the final flush
        raises. While the ledger's store is down, flushes wait for the outage pause instead of every turn."""
        if not self.records:
            return
        if not final and self.outage.ledger_down_since is not None and time.monotonic() < self.outage.pause_until:
            return
        records, self.records = self.records, []
        try:
            uri = write_part(self.layout, records, self.storage_options)
        except Exception as exc:
            self.records = records + self.records
            self.write_failures += 1
            if is_storage_error(exc):
                self.outage.ledger_failed(exc)
            if final:
                raise
            return
        self.outage.ledger_down_since = None
        self.parts_written += 1
        if uri is not None:
            self._compact(uri)

    def _compact(self, uri: str) -> None:
        """Keep the number of parts bounded; the records are committed already, so a store that fails here
        costs only a later, larger merge (the end-of-run compaction at the latest)."""
        try:
            self.tiers.added(uri)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            self.compaction_failures += 1
