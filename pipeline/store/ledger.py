"""The run ledger: append-only Parquet parts under `_ledger/`, merged on read into each row's state.

Written only by the driver (one part per flush, each part one atomic write) and read by the driver at
start (what is done, what may be retried) and by `nst status`. Parts are never modified; a row's state is
derived from all its records, so a repeated or duplicated record changes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nst_core.atomic import TMP_PREFIX
from pipeline.store.bounded import bounded
from pipeline.store.fs import filesystem
from pipeline.store.layout import OutputLayout, list_files
from pipeline.store.records import LEDGER_SCHEMA, PERMANENT_KINDS, LedgerRecord, RowStatus, records_table
from pipeline.store.transfer import write_bytes_atomic


def write_part(
    layout: OutputLayout, records: Sequence[LedgerRecord], storage_options: Mapping[str, Any] | None = None
) -> str | None:
    """Commit records as one new part (one atomic write); returns its URI, or None when there is nothing."""
    if not records:
        return None
    sink = io.BytesIO()
    pq.write_table(records_table(records, storage_options), sink, compression="zstd")
    uri = layout.new_ledger_part_uri()
    write_bytes_atomic(uri, sink.getvalue(), storage_options)
    return uri


def part_paths(layout: OutputLayout, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    return [
        p
        for p in list_files(layout.ledger_dir(), storage_options)
        if p.rsplit("/", 1)[-1].startswith("part-")
        and p.endswith(".parquet")
        and not p.rsplit("/", 1)[-1].startswith(TMP_PREFIX)
    ]


def _conform(table: pa.Table) -> pa.Table:
    """A part in the current schema: columns a part written by an older version lacks become nulls."""
    for name in LEDGER_SCHEMA.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, LEDGER_SCHEMA.field(name).type))
    return table.select(LEDGER_SCHEMA.names).cast(LEDGER_SCHEMA)


READ_ATTEMPTS = 5
"""A part can vanish between the listing and its read (a concurrent compaction deleting merged parts, whose
records are already in the new part): the whole ledger is then re-listed and read again."""


def _read_parts(fs: Any, paths: Sequence[str]) -> pa.Table:
    tables = []
    for path in paths:
        data = bounded(fs, "cat_file", path, uri=path)
        tables.append(_conform(pq.read_table(io.BytesIO(data))))
    return pa.concat_tables(tables)


def _unique_records(merged: pa.Table) -> pa.Table:
    seen: set[str] = set()
    keep = []
    for i, rid in enumerate(merged.column("record_id").to_pylist()):
        if rid not in seen:
            seen.add(rid)
            keep.append(i)
    return merged.take(pa.array(keep, type=pa.int64())) if len(keep) != merged.num_rows else merged


def _read_all(layout: OutputLayout, storage_options: Mapping[str, Any] | None) -> tuple[list[str], pa.Table]:
    """(parts, every record in part order, duplicates included), consistent despite a concurrent compaction."""
    fs, _ = filesystem(layout.ledger_dir(), storage_options)
    for attempt in range(READ_ATTEMPTS):
        paths = part_paths(layout, storage_options)
        if not paths:
            return [], LEDGER_SCHEMA.empty_table()
        try:
            return paths, _read_parts(fs, paths)
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def read_ledger(layout: OutputLayout, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Every record of every part (duplicates by record_id removed), in part order; empty table if none."""
    _, merged = _read_all(layout, storage_options)
    return _unique_records(merged) if merged.num_rows else merged


@dataclass
class RowState:
    """A row's state merged from its records: done wins over everything; otherwise the latest failure."""

    row_id: str
    done: bool = False
    done_record: dict[str, Any] | None = None
    attempt: int = 0
    """Attempt number of the latest record (restarts at 1 after --retry-failed)."""
    last_error_kind: str | None = None
    last_error_message: str | None = None
    done_records: int = 0

    @property
    def permanent_failure(self) -> bool:
        return not self.done and self.last_error_kind in {k.value for k in PERMANENT_KINDS}


def row_states(table: pa.Table) -> dict[str, RowState]:
    states: dict[str, RowState] = {}
    rows = table.sort_by([("finished_at", "ascending")]).to_pylist() if table.num_rows else []
    for rec in rows:
        state = states.setdefault(rec["row_id"], RowState(rec["row_id"]))
        if rec["status"] == RowStatus.done.value:
            state.done_records += 1
            if not state.done:
                state.done = True
                state.done_record = rec
        if not state.done:
            state.attempt = int(rec["attempt"] or 0)
            state.last_error_kind = rec["error_kind"]
            state.last_error_message = rec["error_message"]
    return states


def referenced_curves(table: pa.Table) -> set[str]:
    """Curve file URIs referenced by done records (others are leftovers of interrupted batches)."""
    if not table.num_rows:
        return set()
    done = table.filter(pc.equal(table.column("status"), RowStatus.done.value))
    return {u for u in done.column("curve_uri").to_pylist() if u}


def compact(
    layout: OutputLayout, storage_options: Mapping[str, Any] | None = None, *, min_parts: int = 64
) -> int:
    """Merge the parts into one, each record once: write the merged part first, then delete the old ones.

    Runs when there are `min_parts` parts or more, and whenever two parts hold the same record (what a
    crash between the write and the deletes leaves; `read_ledger` drops those by record_id meanwhile, so
    the ledger stays consistent at every instant). Returns the number of parts removed.
    """
    paths = part_paths(layout, storage_options)
    if len(paths) < 2:
        return 0
    paths, merged = _read_all(layout, storage_options)
    unique = _unique_records(merged)
    if len(paths) < min_parts and unique.num_rows == merged.num_rows:
        return 0
    fs, _ = filesystem(layout.ledger_dir(), storage_options)
    sink = io.BytesIO()
    pq.write_table(unique, sink, compression="zstd")
    write_bytes_atomic(layout.new_ledger_part_uri(), sink.getvalue(), storage_options)
    for path in paths:
        try:
            bounded(fs, "rm_file", path, uri=path)
        except FileNotFoundError:
            pass
    return len(paths)
