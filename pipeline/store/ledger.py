"""The run ledger: append-only Parquet parts under `_ledger/`, merged on read into each row's state.

Written only by the driver (one part per flush, each part one atomic write) and read by the driver at
start (what is done, what may be retried) and by `nst status`. Parts are never modified; a row's state is
derived from all its records, so a repeated or duplicated record changes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nst_core.atomic import TMP_PREFIX
from pipeline.store.bounded import bounded
from pipeline.store.fs import filesystem
from pipeline.store.layout import OutputLayout, list_files
from pipeline.store.ledger_states import RowState, RowStates, row_states
from pipeline.store.records import LEDGER_SCHEMA, LedgerRecord, RowStatus, records_table
from pipeline.store.transfer import write_bytes_atomic

__all__ = [
    "FULL_TIER", "RowState", "RowStates", "compact", "part_paths", "read_ledger", "read_parts", "referenced_curves",
    "replace_parts", "row_states", "unique_records", "write_part",
]


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


READ_THREADS = 16
"""Parts read at once: on an object store each read is a round trip of tens of milliseconds, so a ledger of
hundreds of parts read one by one spends most of its time waiting; decoding also runs outside the GIL."""


def _read_part(fs: Any, path: str) -> pa.Table:
    return _conform(pq.read_table(io.BytesIO(bounded(fs, "cat_file", path, uri=path))))


def read_parts(fs: Any, paths: Sequence[str]) -> pa.Table:
    """The parts' records concatenated in the order of `paths`, read `READ_THREADS` at a time."""
    if len(paths) <= 1:
        return pa.concat_tables([_read_part(fs, p) for p in paths]) if paths else LEDGER_SCHEMA.empty_table()
    with ThreadPoolExecutor(min(READ_THREADS, len(paths)), thread_name_prefix="nst-ledger-read") as pool:
        return pa.concat_tables(list(pool.map(lambda p: _read_part(fs, p), paths)))


def unique_records(merged: pa.Table) -> pa.Table:
    """Each record once (the first copy, order kept): copies are what a compaction killed between writing
    its merged part and deleting the old ones leaves behind."""
    ids = merged.column("record_id")
    if pc.count_distinct(ids, mode="all").as_py() == merged.num_rows:
        return merged
    numbered = pa.table({"record_id": ids, "i": pa.array(np.arange(merged.num_rows))})
    first = numbered.group_by("record_id", use_threads=False).aggregate([("i", "min")]).column("i_min")
    return merged.take(pa.array(np.sort(first.to_numpy())))


def _read_all(layout: OutputLayout, storage_options: Mapping[str, Any] | None) -> tuple[list[str], pa.Table]:
    """(parts, every record in part order, duplicates included), consistent despite a concurrent compaction."""
    fs, _ = filesystem(layout.ledger_dir(), storage_options)
    for attempt in range(READ_ATTEMPTS):
        paths = part_paths(layout, storage_options)
        if not paths:
            return [], LEDGER_SCHEMA.empty_table()
        try:
            return paths, read_parts(fs, paths)
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def read_ledger(layout: OutputLayout, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Every record of every part (duplicates by record_id removed), in part order; empty table if none."""
    _, merged = _read_all(layout, storage_options)
    return unique_records(merged) if merged.num_rows else merged


def referenced_curves(table: pa.Table) -> set[str]:
    """Curve file URIs referenced by done records (others are leftovers of interrupted batches)."""
    if not table.num_rows:
        return set()
    done = table.filter(pc.equal(table.column("status"), RowStatus.done.value))
    return {u for u in done.column("curve_uri").to_pylist() if u}


FULL_TIER = 99
"""The tier of the one part a whole-ledger compaction leaves: never merged again during a run."""


def replace_parts(
    layout: OutputLayout, paths: Sequence[str], records: pa.Table, storage_options: Mapping[str, Any] | None,
    *, tier: int,
) -> str:
    """Write `records` (the parts' records, each once) as one part, then delete `paths`; returns its URI.

    In this order a crash at any instant leaves every record readable: before the write, the old parts;
    after it, both copies, which `read_ledger` drops by record_id until the next compaction removes them.
    """
    sink = io.BytesIO()
    pq.write_table(records, sink, compression="zstd")
    uri = layout.new_ledger_part_uri(tier)
    write_bytes_atomic(uri, sink.getvalue(), storage_options)
    fs, _ = filesystem(layout.ledger_dir(), storage_options)
    for path in paths:
        try:
            bounded(fs, "rm_file", path, uri=path)
        except FileNotFoundError:
            pass
    return uri


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
    unique = unique_records(merged)
    if len(paths) < min_parts and unique.num_rows == merged.num_rows:
        return 0
    replace_parts(layout, paths, unique, storage_options, tier=FULL_TIER)
    return len(paths)
