"""Everything `nst report` shows, gathered from a run's output folder: ledger, curves, run.json, manifest.

Called by `build_report`. This module is the report's reading side: it reads only what the run wrote
(plus, when still readable, the manifest for each row's parameters), so it works on any storage, during
or after a run, and assembles one JSON-safe dict per row. What a row's values, parameters and curve points
are is decided by `values`, `row_params` and `curve_points`, which never touch storage.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.masking import mask_uri
from nst_core.params import DEFAULT_PARAMS
from pipeline.report.curve_points import table_curves
from pipeline.report.row_params import manifest_params, params_from_dict, params_from_ledger, params_text
from pipeline.report.values import done_values, numeric_keys
from pipeline.run.record import read_run_json
from pipeline.run.status import collect_status
from pipeline.store.fs import filesystem
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import RowState, read_ledger, row_states
from pipeline.store.ledger_states import done_records

IO_THREADS = 8


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


# --------------------------------------------------------------------------------------------- curves
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
        if table is not None:
            curves.update(table_curves(table, row_ids))
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
    done = done_records(states)
    for state in states.values():
        rec = (done.get(state.row_id) or {}) if state.done else latest.get(state.row_id, {})
        values = done_values(rec) if state.done else {}
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


def worker_stats(
    rows: Sequence[Mapping[str, Any]], run_seconds: float, lifetimes: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Per-worker rows done, mean device seconds per row and rows per hour over the runs' wall time, and
    from the last run's run.json (`lifetimes`) when each worker joined and, if it did, left the pool.

    Seconds per row are each row's share of its batch's time on the device (`optimise_seconds`), so they
    agree with rows per hour; rows recorded before that column existed count as unknown, never as their
    batch's wall time (which includes waiting for the device).
    """
    by: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        if row["status"] == "done":
            key = (str(row.get("worker") or "?"), str(row.get("node") or "?"), str(row.get("device") or "?"))
            by.setdefault(key, []).append(float(row["values"].get("optimise_seconds", math.nan)))
    served = {str(w.get("name")): w for w in lifetimes}
    stats = []
    for (worker, node, device), seconds in sorted(by.items()):
        known = [s for s in seconds if math.isfinite(s)]
        life = served.get(worker, {})
        stats.append(
            {
                "worker": worker,
                "node": node,
                "device": device,
                "rows": len(seconds),
                "mean_seconds": sum(known) / len(known) if known else None,
                "rows_per_hour": len(seconds) / run_seconds * 3600 if run_seconds > 0 else None,
                "joined_at": life.get("joined_at"),
                "left_at": life.get("left_at"),
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
    rows = build_rows(out, states, _latest_records(table, states), params, storage_options)
    done = {r["id"] for r in rows if r["status"] == "done"}
    curves = read_curves([r["curve_uri"] for r in rows if r["curve_uri"]], done, storage_options)
    for row in rows:
        row["curve"] = curves.get(row["id"])
    status = collect_status(out, storage_options)
    return ReportData(
        out=mask_uri(out),
        run=_jsonable(run),
        status=_jsonable(status),
        rows=rows,
        numeric=numeric_keys(rows),
        workers=worker_stats(rows, float(status.get("run_seconds") or 0.0), run.get("workers") or ()),
        defaults=params_text(defaults),
        notes=notes,
    )


def _latest_records(table: pa.Table, states: Mapping[str, RowState]) -> dict[str, dict[str, Any]]:
    """row_id → its latest record, for failed rows' URIs and worker (RowState keeps only the error); only
    the records of rows not done are converted, since a done row shows its done record."""
    failed = [row_id for row_id, state in states.items() if not state.done]
    if not table.num_rows or not failed:
        return {}
    table = table.filter(pc.is_in(table.column("row_id"), pa.array(failed, pa.string())))
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
