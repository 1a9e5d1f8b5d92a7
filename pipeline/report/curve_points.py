"""Each row's loss curve, cut down to a few points per series for the page.

A curve file holds every logged step of a whole batch; the report keeps at most CURVE_POINTS evenly
spaced points per row (first and last kept), which bounds the page's size however long the runs were.
Reading the files is `pipeline.report.data.read_curves`'s part; this is the grouping and thinning.
"""

from __future__ import annotations

import math
from collections.abc import Set
from typing import Any

import pyarrow as pa

from nst_core.names import LOSS_TERMS

CURVE_POINTS = 48
"""Loss-curve points kept per row (evenly spaced, first and last kept): bounds the report's size."""
CURVE_SERIES = LOSS_TERMS


def downsample(n: int, keep: int = CURVE_POINTS) -> list[int]:
    """Indices of at most `keep` evenly spaced points of n, always including the first and the last."""
    if n <= keep:
        return list(range(n))
    return sorted({round(i * (n - 1) / (keep - 1)) for i in range(keep)})


def table_curves(table: pa.Table, row_ids: Set[str]) -> dict[str, dict[str, list[float]]]:
    """row_id → {"step": [...], "total": [...], ...} for the rows of `row_ids` in one curve table, in step
    order and downsampled; a missing loss value is NaN."""
    if "row_id" not in table.column_names:
        return {}
    columns = {name: table.column(name).to_pylist() for name in ("row_id", "step", *CURVE_SERIES)
               if name in table.column_names}
    grouped: dict[str, list[int]] = {}
    for i, rid in enumerate(columns["row_id"]):
        if rid in row_ids:
            grouped.setdefault(rid, []).append(i)
    curves: dict[str, dict[str, list[float]]] = {}
    for rid, idx in grouped.items():
        idx.sort(key=lambda i: columns["step"][i])
        curves[rid] = _picked(columns, [idx[j] for j in downsample(len(idx))])
    return curves


def _picked(columns: dict[str, list[Any]], picked: list[int]) -> dict[str, list[float]]:
    curve: dict[str, list[float]] = {"step": [int(columns["step"][i]) for i in picked]}
    for name in CURVE_SERIES:
        if name in columns:
            curve[name] = [float(columns[name][i]) if columns[name][i] is not None else math.nan for i in picked]
    return curve
