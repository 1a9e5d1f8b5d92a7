"""Stream a manifest as runnable rows or row problems; called by the run driver and by `jobs` tools.

Memory stays bounded by one record batch (plus one id per row when ids are derived, to catch jobs listed
twice): the file is read in row-group batches through fsspec, never loaded whole.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.masking import mask_text, mask_uri
from jobs.options import options_for
from jobs.scan import BatchScanner, Issue, Layout, ScannedBatch, layout_of
from jobs.schema import (
    CONTENT_MASK_COLUMN,
    OUTPUT_NAME_COLUMN,
    ROW_ID_COLUMN,
    STYLE_MASK_COLUMN,
    ManifestError,
    ManifestRow,
    RowProblem,
)
from nst_core.params import StyleParams

DEFAULT_BATCH_ROWS = 65536


@contextmanager
def open_parquet(uri: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[pq.ParquetFile]:
    """The manifest as a ParquetFile; every way of failing becomes one ManifestError naming the file."""
    try:
        handle = fsspec.open(uri, "rb", **options_for(uri, storage_options)).open()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {mask_uri(uri)}") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {mask_uri(uri)} is a directory; pass the Parquet file itself") from None
    except Exception as exc:  # backends raise their own types (botocore, gcsfs); all mean "cannot open"
        raise ManifestError(f"cannot open manifest {mask_uri(uri)}: " + mask_text(f"{type(exc).__name__}: {exc}", storage_options, (uri,))) from None
    try:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ManifestError(f"{mask_uri(uri)} is not a readable Parquet file ({mask_text(str(exc))})") from None
        yield parquet
    finally:
        handle.close()


def iter_batches(
    parquet: pq.ParquetFile, uri: str, batch_rows: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    try:
        yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"{mask_uri(uri)}: cannot read Parquet data ({mask_text(str(exc))})") from None


def scan_batches(
    parquet: pq.ParquetFile, uri: str, layout: Layout, defaults: StyleParams, batch_rows: int
) -> Iterator[ScannedBatch]:
    """The file's record batches in order, each checked by one BatchScanner (so its parsed values and
    parameter sets are shared across batches); `ScannedBatch.start` is the file row of its first row.
    One batch at a time: memory stays bounded by what the caller keeps."""
    scanner = BatchScanner(layout, defaults)
    start = 0
    for batch in iter_batches(parquet, uri, batch_rows):
        yield scanner.scan(batch, start)
        start += batch.num_rows


def repeated_values(arrays: list[pa.Array]) -> dict[str, int]:
    """Non-null values that occur more than once across the arrays, with their counts."""
    arrays = [a.cast(pa.large_string()) for a in arrays if len(a)]
    if not arrays:
        return {}
    counts = pc.value_counts(pa.chunked_array(arrays, pa.large_string()))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    return {
        value: count
        for value, count in zip(
            repeated.field("values").to_pylist(), repeated.field("counts").to_pylist(), strict=True
        )
        if value is not None
    }


def _explicit_duplicates(
    parquet: pq.ParquetFile, layout: Layout, uri: str, batch_rows: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Row ids and output names used more than once, found by a pre-pass over just those columns."""
    columns = [
        c
        for c, present in ((ROW_ID_COLUMN, layout.has_row_id), (OUTPUT_NAME_COLUMN, layout.has_output_name))
        if present
    ]
    if not columns:
        return {}, {}
    collected: dict[str, list[pa.Array]] = {c: [] for c in columns}
    for batch in iter_batches(parquet, uri, batch_rows, columns):
        for c in columns:
            arr = batch.column(c)
            if isinstance(arr, pa.DictionaryArray):
                arr = arr.dictionary_decode()
            if not pa.types.is_null(arr.type):
                collected[c].append(arr)
    return repeated_values(collected.get(ROW_ID_COLUMN, [])), repeated_values(
        collected.get(OUTPUT_NAME_COLUMN, [])
    )


def json_safe(value: Any) -> Any:
    """Metadata cells as values `json.dumps` accepts; NaN/inf become None (JSON has no NaN)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def _problem(index: int, row_id: str | None, issues: list[Issue]) -> RowProblem:
    return RowProblem(
        index=index, row_id=row_id, column=issues[0][0], message="; ".join(m for _, m in issues)
    )


def iter_manifest(
    uri: str,
    *,
    defaults: StyleParams = StyleParams(),  # noqa: B008 - frozen, so one shared default instance is safe
    storage_options: Mapping[str, Any] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[ManifestRow | RowProblem]:
    """One item per manifest row, in file order: a runnable ManifestRow or the RowProblem that stops it.

    File-level problems (unreadable, not Parquet, missing or mistyped columns) raise ManifestError before
    the first row. Explicit row ids or output names used twice make every such row a problem (which one
    was meant is unknowable); with derived ids, a job listed twice runs once and later copies are problems.
    """
    with open_parquet(uri, storage_options) as parquet:
        layout = layout_of(parquet.schema_arrow)
        repeated_ids, repeated_names = _explicit_duplicates(parquet, layout, uri, batch_rows)
        seen: set[str] = set()
        for scanned in scan_batches(parquet, uri, layout, defaults, batch_rows):
            batch, start = scanned.batch, scanned.start
            ids = scanned.row_ids.to_pylist()
            contents = scanned.content.to_pylist()
            styles = scanned.style.to_pylist()
            content_masks = scanned.mask_column(CONTENT_MASK_COLUMN)
            style_masks = scanned.mask_column(STYLE_MASK_COLUMN)
            same = "same content_uri, style_uri and parameters" + (" (and masks)" if layout.masks else "")
            names = (
                batch.column(OUTPUT_NAME_COLUMN).to_pylist() if layout.has_output_name else [None] * len(ids)
            )
            metadata = batch.select(list(layout.metadata)).to_pylist() if layout.metadata else [{}] * len(ids)
            for i, row_id in enumerate(ids):
                issues = list(scanned.issues.get(i, ()))
                if row_id in repeated_ids:
                    issues.append(
                        (
                            ROW_ID_COLUMN,
                            f"row_id {row_id!r} appears {repeated_ids[row_id]} times; ids must be unique",
                        )
                    )
                name = names[i]
                if name is not None and name in repeated_names:
                    issues.append(
                        (
                            OUTPUT_NAME_COLUMN,
                            f"output_name {name!r} is used by {repeated_names[name]} rows; their outputs would "
                            "overwrite each other",
                        )
                    )
                if not issues and not layout.has_row_id and row_id in seen:
                    issues.append(
                        (
                            None,
                            f"{same} as an earlier row (row_id {row_id})",
                        )
                    )
                if issues:
                    yield _problem(start + i, row_id, issues)
                    continue
                if not layout.has_row_id:
                    seen.add(row_id)
                yield ManifestRow(
                    index=start + i,
                    row_id=row_id,
                    content_uri=contents[i],
                    style_uri=styles[i],
                    params=scanned.combos[scanned.combo_of_row[i]],
                    output_name=name,
                    metadata={k: json_safe(v) for k, v in metadata[i].items()},
                    content_mask_uri=content_masks[i],
                    style_mask_uri=style_masks[i],
                )


def manifest_fingerprint(uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """sha256 of the manifest's bytes, recorded in run.json so a resumed run can tell the file changed."""
    digest = hashlib.sha256()
    try:
        with fsspec.open(uri, "rb", **options_for(uri, storage_options)) as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {mask_uri(uri)}") from None
    except (ImportError, ValueError, OSError) as exc:
        raise ManifestError(f"cannot read manifest {mask_uri(uri)}: " + mask_text(str(exc), storage_options, (uri,))) from None
    return digest.hexdigest()


def manifest_layout(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Layout, int]:
    """The column layout and row count, from the footer alone."""
    with open_parquet(uri, storage_options) as parquet:
        return layout_of(parquet.schema_arrow), parquet.metadata.num_rows
