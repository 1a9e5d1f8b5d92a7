"""One ledger record: why a row failed (`ErrorKind`), the Parquet schema, and the record a part holds.

Shared by the driver (which builds records), the ledger (which stores them) and the report and status
(which read them), so the column set is defined once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import pyarrow as pa

from jobs.masking import mask_text, mask_uri
from nst_core.names import LOSS_TERMS, METRIC_NAMES
from nst_core.params import DEFAULT_PARAMS, STYLE_PARAM_FIELDS, StyleParams, format_field


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
        *((f"loss_{term}", pa.float64()) for term in LOSS_TERMS),
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
        *((f"metric_{name}", pa.float64()) for name in METRIC_NAMES),
        ("metrics", pa.string()),
        ("params", pa.string()),
        ("optimise_seconds", pa.float64()),
        ("metrics_error", pa.string()),
        ("style_weights", pa.list_(pa.float64())),
        ("content_mask_uri", pa.string()),
        ("style_mask_uri", pa.string()),
    ]
)
"""`metadata` holds the manifest row's user columns as a JSON object string (schema-stable across parts).
`params` holds the row's effective style parameters that differ from the library defaults (`StyleParams()`,
the same differences its row id is derived from) as a JSON object string, values in `StyleParams.to_dict`
form: `json_extract(params, '$.style_weight')` in duckdb. `optimise_seconds` is the row's share of its
batch's time on the device (waits for the device lock excluded); `seconds` runs from the batch's start
to the row's commit; `metrics_error` says why a done row has no metrics; `style_weights` is the β each
coarse-to-fine stage used (measured per image under `style_ratio`); `content_mask_uri`/`style_mask_uri` are
the row's region masks. Parts written before these columns existed read them as nulls.
The headline quality metrics (docs/metrics.md) have their own `metric_*` columns for sorting and filtering;
`metrics` holds all of them, per-layer Gram errors included, as a JSON object string."""


URI_COLUMNS = frozenset({"content_uri", "style_uri", "output_uri", "curve_uri", "content_mask_uri", "style_mask_uri"})
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
    metrics_error: str | None = None
    """Why a done row has no metrics: scoring failed after the image was made (`Type: message`)."""
    style_weights: list[float] | None = None
    """Done rows: the β of each coarse-to-fine stage."""
    content_mask_uri: str | None = None
    style_mask_uri: str | None = None

    def to_row(self, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name in LEDGER_SCHEMA.names:
            value: Any = (
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
                uris = (self.content_uri, self.style_uri, self.output_uri, self.content_mask_uri, self.style_mask_uri)
                value = mask_text(value, storage_options, tuple(u or "" for u in uris))
            if name in URI_COLUMNS and value is not None:
                value = mask_uri(value)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            if name == "style_weights" and value is not None:
                value = [float(v) if math.isfinite(v) else None for v in value]
            row[name] = value
        return row


def nondefault_params(params: StyleParams) -> dict[str, Any]:
    """The fields of `params` whose canonical text differs from `StyleParams()`'s, in JSON-safe form."""
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
