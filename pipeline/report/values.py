"""The numbers a report shows for each row: final losses, timings and quality metrics.

Kept apart from reading the run so the page's sortable columns have one definition: which record
fields count as values, how metrics are found in a ledger record, their help texts and their order.
Quality metrics are optional: any `metric_*` ledger column (or a `metrics` JSON column) is shown, rows
without them simply lack them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from nst_core.names import LOSS_TERMS

METRIC_PREFIX = "metric_"
METRICS_JSON_COLUMN = "metrics"
LOSS_COLUMNS = tuple(f"loss_{term}" for term in LOSS_TERMS)
RECORD_VALUES = (*LOSS_COLUMNS, "optimise_seconds", "seconds", "steps_run")
"""Ledger columns every done row may show besides its metrics, in the order the page lists them."""

METRIC_HELP: dict[str, str] = {
    "content_dist": "VGG content-feature distance to the content, ‖F−P‖/‖P‖ (0 = same features)",
    "gram_err": "Gram error against the style, ‖G−A‖/‖A‖, weighted mean over style layers (0 = same)",
    "ssim": "SSIM of luminance against the content (1 = same structure)",
    "colour_dist_style": "Colour distance to the style, Fréchet distance of Lab Gaussians in ΔE units",
    "colour_dist_content": "Colour distance to the content (colour-preserving runs), ΔE units",
    "clipped": "Share of channel values at 0 or 1 (within 1/255)",
    "loss_total": "Final weighted total loss",
    "loss_content": "Final α·L_content",
    "loss_style": "Final β·L_style",
    "loss_tv": "Final tv·L_tv",
    "optimise_seconds": "The row's share of its batch's time on the device (waits for the device excluded)",
    "seconds": "Seconds from its batch's start to the row's commit (the batch's wall time, waits included)",
    "steps_run": "Optimisation steps applied",
}


def record_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one ledger record: `metric_<name>` columns and/or a `metrics` JSON object."""
    metrics: dict[str, float] = {}
    raw = record.get(METRICS_JSON_COLUMN)
    if isinstance(raw, str) and raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {}
        if isinstance(parsed, dict):
            metrics.update({str(k): float(v) for k, v in parsed.items() if is_finite(v)})
    for key, value in record.items():
        if key.startswith(METRIC_PREFIX) and is_finite(value):
            metrics[key[len(METRIC_PREFIX):]] = float(value)
    return metrics


def done_values(record: Mapping[str, Any]) -> dict[str, float]:
    """The values of a done row's record: its finite `RECORD_VALUES`, then its metrics."""
    values = {name: float(record[name]) for name in RECORD_VALUES if is_finite(record.get(name))}
    values.update(record_metrics(record))
    return values


def numeric_keys(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every value key some row has: metrics first (known ones in METRIC_HELP order), then RECORD_VALUES."""
    present = {k for r in rows for k in r["values"]}
    metric_keys = sorted((k for k in present if k not in RECORD_VALUES), key=_metric_order)
    return metric_keys + [k for k in RECORD_VALUES if k in present]


def is_finite(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metric_order(key: str) -> tuple[int, str]:
    known = list(METRIC_HELP)
    return (known.index(key), key) if key in known else (len(known), key)
