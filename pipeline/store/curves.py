"""Loss curves as Arrow tables: one schema for `nst stylize` sidecars and the run's `curves/` files."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from nst_core.names import LOSS_TERMS

if TYPE_CHECKING:
    from nst_core.engine import LossCurve

CURVE_SCHEMA = pa.schema(
    [("row_id", pa.string()), ("step", pa.int32()), *((term, pa.float64()) for term in LOSS_TERMS)]
)
"""Long format: one line per (row, logged step), one column per loss term."""


def curves_table(row_ids: Sequence[str], curves: Sequence[LossCurve]) -> pa.Table:
    """Long format: one line per (row, logged step)."""
    columns: dict[str, list[object]] = {name: [] for name in CURVE_SCHEMA.names}
    for row_id, curve in zip(row_ids, curves, strict=True):
        n = len(curve.step)
        columns["row_id"] += [row_id] * n
        columns["step"] += list(curve.step)
        for name in LOSS_TERMS:
            columns[name] += [float(v) for v in getattr(curve, name)]
    return pa.table(columns, schema=CURVE_SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    """Serialise in memory so the file can be committed with one atomic write."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
