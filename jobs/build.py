"""Write a content × style × sweep manifest to Parquet; called by `nst manifest build` and the scale benchmark.

Rows are written in chunks (one Parquet row group each) from integer index arithmetic, so building a
million rows never holds more than one chunk of strings; parameter sets are validated once each.

No `row_id` column is written: a stored id could only hash the library defaults, while the run renders
with its own defaults merged in. The reader derives ids from the effective parameters instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import split_protocol

from jobs.coerce import coerce
from jobs.masking import mask_uri
from jobs.options import options_for
from jobs.schema import LIST_KINDS, PARAM_KINDS, Kind, arrow_type_for
from jobs.sources import list_sources
from nst_core.atomic import replaced_atomically
from nst_core.params import StyleParams, format_field

DEFAULT_ROW_GROUP_ROWS = 65536


@dataclass(frozen=True)
class BuildResult:
    uri: str
    rows: int
    contents: int
    styles: int
    parameter_sets: int
    columns: tuple[str, ...]


def _split_pair(text: str, flag: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"{flag} expects key=value, got {text!r}")
    name, value = text.split("=", 1)
    name = name.strip().replace("-", "_")
    if name not in PARAM_KINDS:
        raise ValueError(f"{flag}: unknown parameter {name!r}; known: {', '.join(PARAM_KINDS)}")
    return name, value


def parse_param_args(pairs: Sequence[str]) -> dict[str, str]:
    """`--param key=value` texts → {key: value text}."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, value = _split_pair(pair, "--param")
        if name in out:
            raise ValueError(f"--param {name} is given twice")
        out[name] = value
    return out


def parse_sweep_args(pairs: Sequence[str]) -> dict[str, list[str]]:
    """`--sweep key=v1,v2` texts → {key: [v1, v2]}.

    List-valued parameters (layers, layer weights, schedule) hold commas themselves, so their sweep
    values are separated by ';' instead: `--sweep "style_layers=relu1_1,relu2_1;relu3_1,relu4_1"`.
    """
    out: dict[str, list[str]] = {}
    for pair in pairs:
        name, value = _split_pair(pair, "--sweep")
        if name in out:
            raise ValueError(f"--sweep {name} is given twice")
        separator = ";" if PARAM_KINDS[name] in LIST_KINDS else ","
        values = [v.strip() for v in value.split(separator) if v.strip()]
        if not values:
            raise ValueError(f"--sweep {name} has no values")
        out[name] = values
    return out


def _cell(name: str, value: Any) -> Any:
    """An engine value as the Python value the column's native Arrow type stores."""
    if value is None:
        return None
    if PARAM_KINDS[name] is Kind.schedule:
        return format_field(name, value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def parameter_sets(
    params: Mapping[str, str], sweeps: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[dict[str, Any]], list[StyleParams]]:
    """(columns, per-set engine values, per-set StyleParams) for the product of the sweeps, each validated once."""
    both = sorted(set(params) & set(sweeps))
    if both:
        raise ValueError(f"parameter(s) {', '.join(both)} given both as --param and as --sweep")
    fixed = {name: coerce(name, text) for name, text in params.items()}
    axes: list[list[Any]] = []
    for name, texts in sweeps.items():
        values = [coerce(name, text) for text in texts]
        rendered = [format_field(name, v) for v in values]
        repeated = sorted({r for r in rendered if rendered.count(r) > 1})
        if repeated:
            raise ValueError(f"--sweep {name} lists {', '.join(repeated)} more than once")
        axes.append(values)
    columns = [*fixed, *sweeps]
    sets: list[dict[str, Any]] = []
    resolved: list[StyleParams] = []
    for combo in itertools.product(*axes):
        chosen = {**fixed, **dict(zip(sweeps, combo, strict=True))}
        try:
            resolved.append(StyleParams(**chosen))
        except ValueError as exc:
            shown = ", ".join(f"{k}={format_field(k, v)}" for k, v in chosen.items())
            raise ValueError(f"parameter set {{{shown}}}: {exc}") from None
        sets.append(chosen)
    return columns, sets, resolved


def write_manifest(
    *,
    contents: Sequence[str],
    styles: Sequence[str],
    params: Mapping[str, str] | None = None,
    sweeps: Mapping[str, Sequence[str]] | None = None,
    output: str,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> BuildResult:
    """Write the product of explicit URI lists; rows are style-major (a style's jobs are adjacent, so a
    worker that caches style targets reuses them), then content, then parameter set."""
    contents = sorted(set(contents))
    styles = sorted(set(styles))
    if not contents or not styles:
        raise ValueError("need at least one content and one style image")
    columns, sets, _ = parameter_sets(params or {}, sweeps or {})
    n_c, n_k = len(contents), len(sets)
    total = len(styles) * n_c * n_k
    schema = pa.schema(
        [("content_uri", pa.string()), ("style_uri", pa.string())] + [(c, arrow_type_for(c)) for c in columns]
    )
    content_arr = pa.array(contents, pa.string())
    style_arr = pa.array(styles, pa.string())
    param_arrs = {c: pa.array([_cell(c, s.get(c)) for s in sets], arrow_type_for(c)) for c in columns}

    fs, path = fsspec.core.url_to_fs(output, **options_for(output, storage_options))
    if not overwrite and fs.exists(path):
        raise ValueError(f"{mask_uri(output)} already exists; pass --overwrite to replace it")
    def write(handle: Any) -> None:
        with pq.ParquetWriter(handle, schema) as writer:
            for begin in range(0, max(total, 1), row_group_rows):
                rows = np.arange(begin, min(begin + row_group_rows, total), dtype=np.int64)
                s_idx, c_idx, k_idx = rows // (n_c * n_k), (rows // n_k) % n_c, rows % n_k
                k_take = pa.array(k_idx)
                batch = pa.record_batch(
                    [content_arr.take(pa.array(c_idx)), style_arr.take(pa.array(s_idx))]
                    + [param_arrs[c].take(k_take) for c in columns],
                    schema=schema,
                )
                writer.write_batch(batch, row_group_size=row_group_rows)

    if split_protocol(output)[0] in (None, "file", "local"):
        with replaced_atomically(path) as tmp, open(tmp, "wb") as handle:
            write(handle)
    else:  # an object store: one upload, visible only once complete
        with fs.open(path, "wb") as handle:
            write(handle)
    return BuildResult(
        uri=output,
        rows=total,
        contents=n_c,
        styles=len(styles),
        parameter_sets=n_k,
        columns=tuple(schema.names),
    )


def build_manifest(
    *,
    content: Sequence[str],
    style: Sequence[str],
    params: Mapping[str, str] | None = None,
    sweeps: Mapping[str, Sequence[str]] | None = None,
    output: str,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> BuildResult:
    """Expand the content and style sources (directories, globs, lists, files) and write their product."""
    contents = [
        u for src in content for u in list_sources(src, column="content_uri", storage_options=storage_options)
    ]
    styles = [
        u for src in style for u in list_sources(src, column="style_uri", storage_options=storage_options)
    ]
    return write_manifest(
        contents=contents,
        styles=styles,
        params=params,
        sweeps=sweeps,
        output=output,
        storage_options=storage_options,
        overwrite=overwrite,
    )
