"""Everything `nst report` shows, gathered from a run's output folder: ledger, curves, run.json, manifest.

Called by `build_report`. Reads only what the run wrote (plus, when still readable, the manifest for each
row's parameters), so it works on any storage, during or after a run. Quality metrics are optional: any
`metric_*` ledger column (or a `metrics` JSON column) is shown, rows without them simply lack them.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nst_core.params import DEFAULT_PARAMS, STYLE_PARAM_FIELDS, StyleParams, enum_of, format_field
from pipeline.run.record import read_run_json
from pipeline.run.status import collect_status
from pipeline.store.fs import filesystem
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import RowState, read_ledger, row_states
from pipeline.store.masking import mask_uri

METRIC_PREFIX = "metric_"
METRICS_JSON_COLUMN = "metrics"
LOSS_COLUMNS = ("loss_total", "loss_content", "loss_style", "loss_tv")
CURVE_POINTS = 48
"""Loss-curve points kept per row (evenly spaced, first and last kept): bounds the report's size."""
CURVE_SERIES = ("total", "content", "style", "tv")
IO_THREADS = 8

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


@dataclass
class ReportData:
    """JSON-safe content of a report; `rows` are in manifest order, one per ledger row id."""

    out: str
    run: dict[str, Any]
    status: dict[str, Any]
    rows: list[dict[str, Any]]
    numeric: list[str]
    """Sortable value keys present in at least one row (metrics first), the keys of each row's `values`."""
    workers: list[dict[str, Any]]
    defaults: dict[str, str]
    """The run-level parameters as text; each row's `params` holds only what differs from them."""
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- ledger
def read_ledger_table(out: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Every ledger record, metric columns included (the ledger's own reader: one definition of a record)."""
    return read_ledger(OutputLayout(out), storage_options)


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
            metrics.update({str(k): float(v) for k, v in parsed.items() if _finite(v)})
    for key, value in record.items():
        if key.startswith(METRIC_PREFIX) and _finite(value):
            metrics[key[len(METRIC_PREFIX):]] = float(value)
    return metrics


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------------- parameters
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
    from jobs import ManifestRow, iter_manifest

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


# --------------------------------------------------------------------------------------------- curves
def downsample(n: int, keep: int = CURVE_POINTS) -> list[int]:
    """Indices of at most `keep` evenly spaced points of n, always including the first and the last."""
    if n <= keep:
        return list(range(n))
    return sorted({round(i * (n - 1) / (keep - 1)) for i in range(keep)})


def read_curves(
    uris: Sequence[str], row_ids: set[str], storage_options: Mapping[str, Any] | None
) -> dict[str, dict[str, list[float]]]:
    """row_id → {"step": [...], "total": [...], ...} from the referenced curve files, downsampled."""

    def read(uri: str) -> pa.Table | None:
        fs, path = filesystem(uri, storage_options)
        try:
            with fs.open(path, "rb") as fh:
                return pq.read_table(fh)
        except (OSError, pa.ArrowException):
            return None  # a curve file lost after its rows were recorded: the rows just lack a plot

    curves: dict[str, dict[str, list[float]]] = {}
    with ThreadPoolExecutor(IO_THREADS) as pool:
        tables = list(pool.map(read, sorted(set(uris))))
    for table in tables:
        if table is None or "row_id" not in table.column_names:
            continue
        columns = {name: table.column(name).to_pylist() for name in ("row_id", "step", *CURVE_SERIES)
                   if name in table.column_names}
        grouped: dict[str, list[int]] = {}
        for i, rid in enumerate(columns["row_id"]):
            if rid in row_ids:
                grouped.setdefault(rid, []).append(i)
        for rid, idx in grouped.items():
            idx.sort(key=lambda i: columns["step"][i])
            picked = [idx[j] for j in downsample(len(idx))]
            curve: dict[str, list[float]] = {"step": [int(columns["step"][i]) for i in picked]}
            for name in CURVE_SERIES:
                if name in columns:
                    curve[name] = [float(columns[name][i]) if columns[name][i] is not None else math.nan for i in picked]
            curves[rid] = curve
    return curves


# ------------------------------------------------------------------------------------------------ rows
def relative_to(root: str, uri: str | None, storage_options: Mapping[str, Any] | None) -> str | None:
    """`uri` as a '/'-separated path relative to `root`, or None when it is not below it."""
    if not uri:
        return None
    _, root_path = filesystem(root, storage_options)
    _, path = filesystem(uri, storage_options)
    root_path = root_path.rstrip("/")
    if path.startswith(root_path + "/"):
        return posixpath.normpath(path[len(root_path) + 1:])
    return None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value is not None else None)


def build_rows(
    out: str, states: Mapping[str, RowState], latest: Mapping[str, dict[str, Any]],
    params: Mapping[str, dict[str, str]], storage_options: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """One JSON-safe dict per row: the done record of done rows, the latest record of failed ones."""
    rows: list[dict[str, Any]] = []
    for state in states.values():
        rec = state.done_record if state.done and state.done_record else latest.get(state.row_id, {})
        values: dict[str, float] = {}
        for name in (*LOSS_COLUMNS, "optimise_seconds", "seconds", "steps_run"):
            if state.done and _finite(rec.get(name)):
                values[name] = float(rec[name])
        if state.done:
            values.update(record_metrics(rec))
        try:
            metadata = json.loads(rec.get("metadata") or "{}")
        except ValueError:
            metadata = {}
        rows.append(
            {
                "id": state.row_id,
                "status": "done" if state.done else "failed",
                "index": rec.get("manifest_index"),
                "attempt": state.attempt if not state.done else rec.get("attempt"),
                "error_kind": None if state.done else state.last_error_kind,
                "error": None if state.done else state.last_error_message,
                "content": mask_uri(rec["content_uri"]) if rec.get("content_uri") else None,
                "style": mask_uri(rec["style_uri"]) if rec.get("style_uri") else None,
                "content_uri": rec.get("content_uri"),
                "style_uri": rec.get("style_uri"),
                "output_uri": rec.get("output_uri") if state.done else None,
                "image": relative_to(out, rec.get("output_uri"), storage_options) if state.done else None,
                "curve_uri": rec.get("curve_uri") if state.done else None,
                "worker": rec.get("worker"),
                "node": rec.get("node"),
                "device": rec.get("device"),
                "finished_at": _iso(rec.get("finished_at")),
                "values": values,
                "params": params.get(state.row_id, {}),
                "metadata": metadata if isinstance(metadata, dict) else {},
            }
        )
    rows.sort(key=lambda r: (r["index"] is None, r["index"] if r["index"] is not None else 0, r["id"]))
    return rows


def worker_stats(rows: Sequence[Mapping[str, Any]], run_seconds: float) -> list[dict[str, Any]]:
    """Per-worker rows done, mean device seconds per row and rows per hour over the runs' wall time.

    Seconds per row are each row's share of its batch's time on the device (`optimise_seconds`), so they
    agree with rows per hour; rows recorded before that column existed count as unknown, never as their
    batch's wall time (which includes waiting for the device).
    """
    by: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        if row["status"] == "done":
            key = (str(row.get("worker") or "?"), str(row.get("node") or "?"), str(row.get("device") or "?"))
            by.setdefault(key, []).append(float(row["values"].get("optimise_seconds", math.nan)))
    stats = []
    for (worker, node, device), seconds in sorted(by.items()):
        known = [s for s in seconds if math.isfinite(s)]
        stats.append(
            {
                "worker": worker,
                "node": node,
                "device": device,
                "rows": len(seconds),
                "mean_seconds": sum(known) / len(known) if known else None,
                "rows_per_hour": len(seconds) / run_seconds * 3600 if run_seconds > 0 else None,
            }
        )
    return stats


# ---------------------------------------------------------------------------------------------- entry
def load_report_data(
    out: str, storage_options: Mapping[str, Any] | None = None, *, manifest: str | None = None
) -> ReportData:
    """Read a run's output folder. `manifest` overrides run.json's manifest (for each row's parameters)."""
    layout = OutputLayout(out)
    run = read_run_json(layout, storage_options) or {}
    table = read_ledger_table(out, storage_options)
    states = row_states(table)
    notes: list[str] = []
    try:
        defaults = params_from_dict(run.get("params"))
    except (TypeError, ValueError) as exc:
        notes.append(f"run.json parameters not understood ({exc}); showing library defaults")
        defaults = DEFAULT_PARAMS
    params = params_from_ledger(table, defaults)
    source = manifest or run.get("manifest")
    if source and (manifest or len(params) < len(states)):
        try:
            params = manifest_params(source, defaults, storage_options) | params
        except Exception as exc:  # noqa: BLE001 - parameters are extra detail; the report works without them
            missing = len(states) - len(params)
            notes.append(f"per-row parameters unavailable for {missing} row(s) the ledger has none for: manifest "
                         f"{mask_uri(source)} not readable ({type(exc).__name__}); pass --manifest")
    rows = build_rows(out, states, _latest_records(table), params, storage_options)
    done = {r["id"] for r in rows if r["status"] == "done"}
    curves = read_curves([r["curve_uri"] for r in rows if r["curve_uri"]], done, storage_options)
    for row in rows:
        row["curve"] = curves.get(row["id"])
    status = collect_status(out, storage_options)
    plain = (*LOSS_COLUMNS, "optimise_seconds", "seconds", "steps_run")
    metric_keys = sorted({k for r in rows for k in r["values"] if k not in plain}, key=_metric_order)
    numeric = metric_keys + [k for k in plain if any(k in r["values"] for r in rows)]
    return ReportData(
        out=mask_uri(out),
        run=_jsonable(run),
        status=_jsonable(status),
        rows=rows,
        numeric=numeric,
        workers=worker_stats(rows, float(status.get("run_seconds") or 0.0)),
        defaults=params_text(defaults),
        notes=notes,
    )


def _metric_order(key: str) -> tuple[int, str]:
    known = list(METRIC_HELP)
    return (known.index(key), key) if key in known else (len(known), key)


def _latest_records(table: pa.Table) -> dict[str, dict[str, Any]]:
    """row_id → its latest record, for failed rows' URIs and worker (RowState keeps only the error)."""
    if not table.num_rows:
        return {}
    return {rec["row_id"]: rec for rec in table.sort_by([("finished_at", "ascending")]).to_pylist()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
