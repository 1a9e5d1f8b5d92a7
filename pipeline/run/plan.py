"""What a run has to do: the manifest's rows minus the ledger's done rows, each with its attempt number.

Planning happens before Ray starts, so a fully done output re-runs in seconds without a cluster; a bad
manifest row or output name becomes a failed record here, and the other rows go on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs import ManifestError, ManifestRow, RowProblem, iter_manifest
from jobs.masking import mask_text, mask_uri
from jobs.reader import manifest_layout
from pipeline.cluster.tasks import RowTask
from pipeline.run.options import RunOptions, absolute_uri
from pipeline.store.errors import RunError
from pipeline.store.fs import filesystem, join
from pipeline.store.layout import CURVES_DIR, OutputLayout, OutputNameError, image_format, list_files
from pipeline.store.ledger import RowState
from pipeline.store.ledger_states import done_column
from pipeline.store.records import ErrorKind, LedgerRecord, RowStatus, utcnow


@dataclass
class Plan:
    tasks: list[RowTask] = field(default_factory=list)
    records: list[LedgerRecord] = field(default_factory=list)
    """Failures decided while planning (bad manifest rows, bad output names): recorded before the run."""
    manifest_rows: int = 0
    already_done: int = 0
    not_retried: int = 0
    duplicates: int = 0


def plan_rows(options: RunOptions, states: Mapping[str, RowState], *, run_id: str) -> Plan:
    """Manifest rows minus done rows; failed rows only while attempts remain (or with --retry-failed)."""
    planner = _Planner(options, states, run_id)
    for item in iter_manifest(options.manifest, defaults=options.params, storage_options=dict(options.storage_options)):
        planner.plan.manifest_rows += 1
        if isinstance(item, ManifestRow):
            planner.row(item)
        else:
            planner.problem(item)
    return planner.plan


class _Planner:
    def __init__(self, options: RunOptions, states: Mapping[str, RowState], run_id: str) -> None:
        self.options = options
        self.states = states
        self.run_id = run_id
        self.layout = OutputLayout(options.out)
        self.plan = Plan()
        self.seen: set[str] = set()
        self.claimed: dict[str, str] = {}  # output URI -> row id
        for row_id, output_uri in zip(*done_column(states, "output_uri"), strict=True):
            if output_uri:
                self.claimed[absolute_uri(output_uri)] = row_id  # older runs: relative

    def _first(self, row_id: str) -> bool:
        """False for a row id seen before in this manifest (a duplicate row, counted and skipped)."""
        if row_id in self.seen:
            self.plan.duplicates += 1
            return False
        self.seen.add(row_id)
        return True

    def problem(self, item: RowProblem) -> None:
        row_id = item.row_id or f"manifest-row-{item.index}"
        if not self._first(row_id):
            return
        state = self.states.get(row_id)
        if state is not None and state.done:
            self.plan.already_done += 1
        elif state is not None and not self.options.retry_failed:
            self.plan.not_retried += 1
        else:
            where = f" column {item.column!r}" if item.column else ""
            message = f"manifest row {item.index}{where}: {item.message}"
            self._fail(row_id, item.index, ErrorKind.bad_manifest_row, message)

    def row(self, item: ManifestRow) -> None:
        if not self._first(item.row_id):
            return
        attempt = self._attempt(self.states.get(item.row_id))
        if attempt is None:
            return
        extra = {
            "content_uri": item.content_uri,
            "style_uri": item.style_uri,
            "content_mask_uri": item.content_mask_uri,
            "style_mask_uri": item.style_mask_uri,
            "metadata": dict(item.metadata),
        }
        try:
            output_uri = self.layout.image_uri(item.row_id, item.output_name)
            fmt = image_format(output_uri)
        except OutputNameError as exc:
            self._fail(item.row_id, item.index, ErrorKind.bad_output_name, f"row {item.index}: {exc}", **extra)
            return
        owner = self.claimed.setdefault(output_uri, item.row_id)
        if owner != item.row_id:
            message = f"row {item.index}: output {mask_uri(output_uri)} is already the output of row {owner}"
            self._fail(item.row_id, item.index, ErrorKind.bad_output_name, message, **extra)
            return
        self.plan.tasks.append(
            RowTask(
                row_id=item.row_id,
                index=item.index,
                content_uri=item.content_uri,
                style_uri=item.style_uri,
                params=item.params,
                output_uri=output_uri,
                image_format=fmt,
                metadata=dict(item.metadata),
                attempt=attempt,
                content_mask_uri=item.content_mask_uri,
                style_mask_uri=item.style_mask_uri,
            )
        )

    def _attempt(self, state: RowState | None) -> int | None:
        """This run's attempt number for a row, or None when it is done or may not be retried."""
        if state is not None and state.done:
            self.plan.already_done += 1
            return None
        if state is None or self.options.retry_failed:
            return 1
        if state.permanent_failure or state.attempt >= self.options.max_attempts:
            self.plan.not_retried += 1
            return None
        return state.attempt + 1

    def _fail(self, row_id: str, index: int, kind: ErrorKind, message: str, **extra: Any) -> None:
        self.plan.records.append(
            LedgerRecord(
                record_id=uuid.uuid4().hex,
                run_id=self.run_id,
                row_id=row_id,
                manifest_index=index,
                status=RowStatus.failed,
                attempt=1,
                error_kind=kind,
                error_message=mask_text(message, self.options.storage_options),
                finished_at=utcnow(),
                **extra,
            )
        )


def sweep_orphan_curves(
    layout: OutputLayout, referenced: set[str], storage_options: Mapping[str, Any] | None
) -> int:
    """Delete curve files no done record points to: leftovers of batches whose driver died before recording.

    Their rows are not done, so they are recomputed into a new curve file; keeping the old one would
    leave a second, unreferenced curve for the same row in the listing.
    """
    directory = join(layout.root, CURVES_DIR)
    fs, _ = filesystem(directory, storage_options)
    # By file name (a batch id): the ledger records URIs with any `user:password@` masked.
    refs = {u.rsplit("/", 1)[-1] for u in referenced}
    removed = 0
    for path in list_files(directory, storage_options):
        if path.endswith(".parquet") and path.rsplit("/", 1)[-1] not in refs:
            fs.rm_file(path)
            removed += 1
    return removed


def check_row_count(manifest: str, max_rows: int, options: Mapping[str, Any] | None) -> None:
    """Refuse a manifest larger than --max-rows from its footer alone, before reading any row."""
    try:
        _, rows = manifest_layout(manifest, options)
    except ManifestError:
        return  # unreadable: plan_rows reports it with its own message
    if rows > max_rows:
        raise RunError(
            f"manifest {mask_uri(manifest)} has {rows} rows, more than --max-rows {max_rows}; "
            "split it into several runs or raise --max-rows"
        )
