"""Check a whole manifest and report every problem at once; called by `nst manifest validate`.

One pass over record batches through the vectorised scanner, then file-wide checks that need every row
(duplicate ids and output names), then optionally a parallel open-and-decode of every distinct input file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.files import DEFAULT_WORKERS, check_images
from jobs.reader import DEFAULT_BATCH_ROWS, iter_batches, open_parquet, repeated_values, scan_batches
from jobs.scan import column_warnings, layout_of
from jobs.schema import MASK_COLUMNS, OUTPUT_NAME_COLUMN, REQUIRED_COLUMNS, RowProblem
from nst_core.params import StyleParams

DEFAULT_MAX_PROBLEMS = 1000


@dataclass
class ValidationReport:
    """Everything found; `problems` keeps the first `max_problems` (by row) while the counts cover all."""

    uri: str
    rows: int
    problems: list[RowProblem] = field(default_factory=list)
    problem_count: int = 0
    bad_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    files_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


def _rows_text(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(map(str, rows[:limit]))
    return f"rows {shown}" + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


class _Collector:
    def __init__(self, rows: int, max_problems: int) -> None:
        self.problems: list[RowProblem] = []
        self.count = 0
        self.bad = np.zeros(rows, dtype=bool)
        self.max_problems = max_problems

    def add(self, problem: RowProblem) -> None:
        self.count += 1
        self.bad[problem.index] = True
        if len(self.problems) < self.max_problems:
            self.problems.append(problem)


def _group(values: pa.ChunkedArray, wanted: dict[str, int]) -> dict[str, list[int]]:
    """Row numbers of each wanted value, in file order."""
    mask = pc.is_in(values, value_set=pa.array(list(wanted), pa.large_string()))
    rows = np.flatnonzero(np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool))
    hits = values.take(pa.array(rows)).to_pylist()
    grouped: dict[str, list[int]] = {}
    for row, value in zip(rows.tolist(), hits, strict=True):
        grouped.setdefault(value, []).append(row)
    return grouped


def validate_manifest(
    uri: str,
    *,
    defaults: StyleParams = StyleParams(),  # noqa: B008 - frozen, so one shared default instance is safe
    storage_options: Mapping[str, Any] | None = None,
    check_files: bool = False,
    workers: int = DEFAULT_WORKERS,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> ValidationReport:
    """Every problem of the manifest. File-level problems raise ManifestError (nothing else can be judged)."""
    with open_parquet(uri, storage_options) as parquet:
        layout = layout_of(parquet.schema_arrow)
        total = parquet.metadata.num_rows
        report = ValidationReport(uri=uri, rows=total, warnings=column_warnings(layout))
        if total == 0:
            report.warnings.append("the manifest has no rows")
        collector = _Collector(total, max_problems)
        ids: list[pa.Array] = []
        names: list[pa.Array] = []
        inputs: dict[str, list[pa.Array]] = {c: [] for c in (*REQUIRED_COLUMNS, *layout.masks)}
        for scanned in scan_batches(parquet, uri, layout, defaults, batch_rows):
            batch, start = scanned.batch, scanned.start
            row_ids = scanned.row_ids
            for i in sorted(scanned.issues):
                issues = scanned.issues[i]
                row_id = row_ids[i].as_py()
                for column, message in issues:
                    collector.add(RowProblem(index=start + i, row_id=row_id, column=column, message=message))
            ids.append(row_ids.cast(pa.large_string()))
            if layout.has_output_name:
                arr = batch.column(OUTPUT_NAME_COLUMN)
                names.append(
                    (arr.dictionary_decode() if isinstance(arr, pa.DictionaryArray) else arr).cast(
                        pa.large_string()
                    )
                )
            if check_files:
                columns = (("content_uri", scanned.content), ("style_uri", scanned.style), *scanned.masks.items())
                for column, arr in columns:
                    usable = arr.filter(pa.array(~scanned.bad_uri[column])).drop_null()
                    inputs[column].append(pc.unique(usable).cast(pa.large_string()))

        all_ids = pa.chunked_array(ids, pa.large_string())
        repeated = repeated_values(ids)
        if repeated:
            for row_id, rows in _group(all_ids, repeated).items():
                later = rows if layout.has_row_id else rows[1:]
                for row in later:
                    message = (
                        f"row_id {row_id!r} appears {len(rows)} times ({_rows_text(rows)}); ids must be unique"
                        if layout.has_row_id
                        else f"same content_uri, style_uri{', masks' if layout.masks else ''} and parameters as row "
                        f"{rows[0]} (the job is listed twice)"
                    )
                    collector.add(
                        RowProblem(
                            index=row,
                            row_id=row_id,
                            column="row_id" if layout.has_row_id else None,
                            message=message,
                        )
                    )
        repeated_names = repeated_values(names)
        if repeated_names:
            for name, rows in _group(pa.chunked_array(names, pa.large_string()), repeated_names).items():
                for row in rows:
                    collector.add(
                        RowProblem(
                            index=row,
                            row_id=all_ids[row].as_py(),
                            column=OUTPUT_NAME_COLUMN,
                            message=f"output_name {name!r} is used by {len(rows)} rows ({_rows_text(rows)}); "
                            "their outputs would overwrite each other",
                        )
                    )

        if check_files:
            failures, report.files_checked = _check_files(inputs, storage_options, workers)
            for column in (*REQUIRED_COLUMNS, *layout.masks):
                if failures[column]:
                    failing = {u: 1 for u in failures[column]}
                    refs: list[pa.Array] = []
                    for batch in iter_batches(parquet, uri, batch_rows, [column]):
                        arr = batch.column(column)
                        refs.append(
                            (arr.dictionary_decode() if isinstance(arr, pa.DictionaryArray) else arr).cast(
                                pa.large_string()
                            )
                        )
                    for file_uri, rows in _group(pa.chunked_array(refs, pa.large_string()), failing).items():
                        for row in rows:
                            collector.add(
                                RowProblem(
                                    index=row,
                                    row_id=all_ids[row].as_py(),
                                    column=column,
                                    message=f"{column} {file_uri!r}: {failures[column][file_uri]}",
                                )
                            )

    collector.problems.sort(key=lambda p: p.index)
    report.problems = collector.problems
    report.problem_count = collector.count
    report.bad_rows = int(collector.bad.sum())
    return report


def _check_files(
    inputs: dict[str, list[pa.Array]], storage_options: Mapping[str, Any] | None, workers: int
) -> tuple[dict[str, dict[str, str]], int]:
    """Per URI column, its failing files with their reasons; and how many distinct files were opened.

    Images and masks are checked apart: a mask is decoded as a label map, whose own limits (colour count)
    an image does not have; a file used both ways is checked both ways."""

    def distinct(columns: tuple[str, ...]) -> list[str]:
        values = (
            pc.unique(pa.chunked_array(inputs[c], pa.large_string())).to_pylist()
            for c in columns
            if inputs.get(c)
        )
        return list(dict.fromkeys(u for v in values for u in v))

    images, masks = distinct(REQUIRED_COLUMNS), distinct(MASK_COLUMNS)
    image_failures = check_images(images, storage_options=storage_options, workers=workers)
    mask_failures = check_images(masks, storage_options=storage_options, workers=workers, as_masks=True) if masks else {}
    failures = {c: image_failures for c in REQUIRED_COLUMNS} | {c: mask_failures for c in MASK_COLUMNS}
    return failures, len(images) + len(masks)
