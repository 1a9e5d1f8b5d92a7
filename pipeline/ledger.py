"""The run ledger: append-only Parquet parts under `_ledger/`, merged on read into each row's state.

Written only by the driver (one part per flush, each part one atomic write) and read by the driver at
start (what is done, what may be retried) and by `nst status`. Parts are never modified; a row's state is
derived from all its records, so a repeated or duplicated record changes nothing.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nst_core.params import StyleParams
from pipeline.outputs import TMP_PREFIX, OutputLayout, list_files
from pipeline.storage import bounded, filesystem, mask_text, mask_uri, write_bytes_atomic


class RowStatus(str, Enum):
    done = "done"
    failed = "failed"


class ErrorKind(str, Enum):
    """Why a row failed. The first group is the row's own fault and is never retried automatically."""

    bad_input = "bad_input"  # unreadable/corrupt/missing image
    bad_manifest_row = "bad_manifest_row"  # the manifest row itself is invalid
    invalid_params = "invalid_params"  # parameters the engine refuses
    bad_output_name = "bad_output_name"  # output_name escapes --out, collides or has a bad extension
    numerical = "numerical"  # non-finite losses or pixels, or a degenerate (uniform) image: never retried
    storage = "storage"  # I/O error talking to storage
    worker_lost = "worker_lost"  # the actor died or its node vanished while holding the row
    oom = "oom"  # out of memory even at batch size 1
    internal = "internal"  # anything unexpected: retried, and reported with its type

    @property
    def retryable(self) -> bool:
        return self not in PERMANENT_KINDS


PERMANENT_KINDS = frozenset(
    {
        ErrorKind.bad_input,
        ErrorKind.bad_manifest_row,
        ErrorKind.invalid_params,
        ErrorKind.bad_output_name,
        ErrorKind.numerical,
    }
)

LEDGER_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("run_id", pa.string()),
        ("row_id", pa.string()),
        ("manifest_index", pa.int64()),
        ("status", pa.string()),
        ("attempt", pa.int32()),
        ("error_kind", pa.string()),
        ("error_message", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("seconds", pa.float64()),
        ("loss_total", pa.float64()),
        ("loss_content", pa.float64()),
        ("loss_style", pa.float64()),
        ("loss_tv", pa.float64()),
        ("steps_run", pa.int32()),
        ("batch_id", pa.string()),
        ("batch_size", pa.int32()),
        ("worker", pa.string()),
        ("node", pa.string()),
        ("device", pa.string()),
        ("content_uri", pa.string()),
        ("style_uri", pa.string()),
        ("output_uri", pa.string()),
        ("curve_uri", pa.string()),
        ("metadata", pa.string()),
        *[
            (name, pa.float64())
            for name in (
                "metric_" + m
                for m in (
                    "content_dist",
                    "gram_err",
                    "ssim",
                    "colour_dist_style",
                    "colour_dist_content",
                    "clipped",
                )
            )
        ],
        ("metrics", pa.string()),
        ("params", pa.string()),
        ("optimise_seconds", pa.float64()),
    ]
)
"""`metadata` holds the manifest row's user columns as a JSON object string (schema-stable across parts).
`params` holds the row's effective style parameters that differ from the library defaults (`StyleParams()`,
the same differences its row id is derived from) as a JSON object string, values in `StyleParams.to_dict`
form: `json_extract(params, '$.style_weight')` in duckdb. `optimise_seconds` is the row's share of its
batch's time on the device (waits for the device lock excluded); `seconds` runs from the batch's start
to the row's commit. Parts written before these columns existed read them as nulls.
The headline quality metrics (docs/metrics.md) have their own `metric_*` columns for sorting and filtering;
`metrics` holds all of them, per-layer Gram errors included, as a JSON object string."""
URI_COLUMNS = frozenset({"content_uri", "style_uri", "output_uri", "curve_uri"})
"""Recorded with `user:password@` masked (the row id, not these, identifies the row)."""
METRIC_COLUMNS = tuple(name for name in LEDGER_SCHEMA.names if name.startswith("metric_"))


@dataclass
class LedgerRecord:
    record_id: str
    run_id: str
    row_id: str
    status: RowStatus
    attempt: int
    finished_at: datetime
    manifest_index: int | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    seconds: float | None = None
    loss_total: float | None = None
    loss_content: float | None = None
    loss_style: float | None = None
    loss_tv: float | None = None
    steps_run: int | None = None
    batch_id: str | None = None
    batch_size: int | None = None
    worker: str | None = None
    node: str | None = None
    device: str | None = None
    content_uri: str | None = None
    style_uri: str | None = None
    output_uri: str | None = None
    curve_uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    """Non-default effective parameters (see `nondefault_params`); None where unknown (planning failures)."""
    optimise_seconds: float | None = None

    def to_row(self, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name in LEDGER_SCHEMA.names:
            value = (
                self.metrics.get(name.removeprefix("metric_"))
                if name in METRIC_COLUMNS
                else getattr(self, name)
            )
            if isinstance(value, Enum):
                value = value.value
            if name == "metadata" or (name == "params" and value is not None):
                value = json.dumps(value, sort_keys=True, default=str)
            if name == "metrics":
                finite = {k: v for k, v in value.items() if math.isfinite(v)}
                value = json.dumps(finite, sort_keys=True) if finite else None
            if name == "error_message" and value is not None:
                value = mask_text(
                    value, storage_options, (self.content_uri or "", self.style_uri or "", self.output_uri or "")
                )
            if name in URI_COLUMNS and value is not None:
                value = mask_uri(value)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            row[name] = value
        return row


def nondefault_params(params: StyleParams) -> dict[str, Any]:
    """The fields of `params` whose canonical text differs from `StyleParams()`'s, in JSON-safe form."""
    from nst_core.params import DEFAULT_PARAMS, STYLE_PARAM_FIELDS, format_field

    values = params.to_dict()
    return {
        f.name: values[f.name]
        for f in STYLE_PARAM_FIELDS
        if format_field(f.name, getattr(params, f.name)) != format_field(f.name, getattr(DEFAULT_PARAMS, f.name))
    }


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def records_table(
    records: Sequence[LedgerRecord], storage_options: Mapping[str, Any] | None = None
) -> pa.Table:
    return pa.Table.from_pylist([r.to_row(storage_options) for r in records], schema=LEDGER_SCHEMA)


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
