"""Each row's style parameters as short text, holding only what differs from the run's defaults.

The page shows a row's parameters and labels sweep tiles by them, so they are compared as the text the
reader sees (1e7, not 10000000.0): two values that print the same are the same. Sources, best first: the
ledger's own `params` column of done rows, then the manifest (for rows the ledger has none for), against
run.json's `params` as the run-level defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from jobs import ManifestRow, iter_manifest
from nst_core.params import DEFAULT_PARAMS, STYLE_PARAM_FIELDS, StyleParams, enum_of, format_field


def params_from_dict(data: Mapping[str, Any] | None) -> StyleParams:
    """Rebuild run.json's `params` (StyleParams.to_dict) — the run-level defaults of every row."""
    if not data:
        return DEFAULT_PARAMS
    kwargs: dict[str, Any] = {}
    for f in STYLE_PARAM_FIELDS:
        if f.name not in data:
            continue
        value = data[f.name]
        enum_type = enum_of(f.name)
        if enum_type is not None and value is not None:
            value = enum_type(value)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[f.name] = value
    return StyleParams(**kwargs)


def params_text(params: StyleParams) -> dict[str, str]:
    return {f.name: compact_text(format_field(f.name, getattr(params, f.name))) for f in STYLE_PARAM_FIELDS}


def compact_number(value: float) -> str:
    """Short, exact-enough text for a label: 1e7 (not 10000000.0), 2.5e-4, 0.35, 300."""
    if value == 0 or not math.isfinite(value):
        return format(value, "g")
    mantissa, _, exponent = f"{value:.6e}".partition("e")
    power = int(exponent)
    if abs(power) >= 4:
        return f"{mantissa.rstrip('0').rstrip('.')}e{power}"
    return format(value, ".6g")


def compact_text(text: str) -> str:
    """Each number in a parameter's text (lists are comma-separated) in compact form; other text unchanged."""
    def one(part: str) -> str:
        try:
            value = float(part)
        except ValueError:
            return part
        return compact_number(value) if any(c in part for c in ".eE") else part  # integers stay as typed

    if ":" in text:  # schedules: size:steps pairs stay integers
        return text
    return ",".join(one(p) for p in text.split(","))


def ledger_params(raw: Any, defaults: StyleParams) -> dict[str, str] | None:
    """The ledger's `params` JSON (differences from the library defaults) as text differing from `defaults`;
    None for records written before the column existed."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        data = json.loads(raw)
        full = params_from_dict(DEFAULT_PARAMS.to_dict() | dict(data))
    except (ValueError, TypeError):
        return None
    base = params_text(defaults)
    return {k: v for k, v in params_text(full).items() if v != base[k]}


def manifest_params(
    manifest: str, defaults: StyleParams, storage_options: Mapping[str, Any] | None
) -> dict[str, dict[str, str]]:
    """row_id → parameters that differ from `defaults`, as text, for every runnable manifest row."""
    base = params_text(defaults)
    out: dict[str, dict[str, str]] = {}
    for item in iter_manifest(manifest, defaults=defaults, storage_options=dict(storage_options or {})):
        if isinstance(item, ManifestRow):
            text = params_text(item.params)
            out[item.row_id] = {k: v for k, v in text.items() if v != base[k]}
    return out


def params_from_ledger(table: pa.Table, defaults: StyleParams) -> dict[str, dict[str, str]]:
    """row_id → parameters differing from `defaults`, from the done records' `params` column (no manifest needed)."""
    if not table.num_rows or "params" not in table.column_names:
        return {}
    out: dict[str, dict[str, str]] = {}
    for row_id, status, raw in zip(
        table.column("row_id").to_pylist(), table.column("status").to_pylist(), table.column("params").to_pylist(),
        strict=True,
    ):
        if status == "done" and row_id not in out:
            parsed = ledger_params(raw, defaults)
            if parsed is not None:
                out[row_id] = parsed
    return out
