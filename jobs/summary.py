"""What a manifest asks for and roughly what it costs; called by `nst manifest show`.

The work estimate counts pixel-iterations: Σ over rows and coarse-to-fine stages of (long side)² × steps.
Image sizes are not read, so every image is taken as square: an upper bound, exact for square inputs and
about 1.33–1.78× high for 4:3 or 16:9 photos.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.reader import DEFAULT_BATCH_ROWS, open_parquet, scan_batches
from jobs.scan import layout_of
from nst_core.params import StyleParams, format_field

REFERENCE_SIDE = 512
DEFAULT_THROUGHPUT = 50.0
"""Optimisation steps per second on one 512×512 image on one H100 (an assumption, not a measurement).

Derivation, in docs/manifest.md: VGG19 up to relu5_1 costs ≈190 GFLOP forward at 512² and about the same
again for the gradient with respect to the pixels, ≈380 GFLOP per step; at ≈19 TFLOP/s sustained (under a
third of the H100's FP32 peak) that is ≈50 steps/s. Measure your own and pass --throughput.
"""


@dataclass
class ManifestSummary:
    uri: str
    rows: int
    usable_rows: int
    problem_rows: int
    distinct_contents: int
    distinct_styles: int
    overridden: tuple[str, ...]
    parameters: dict[str, Counter[str]] = field(default_factory=dict)
    """Per parameter column present in the file: rows per effective value (text form)."""
    pixel_iterations: float = 0.0
    throughput: float = DEFAULT_THROUGHPUT

    @property
    def gpu_hours(self) -> float:
        return self.pixel_iterations / (self.throughput * REFERENCE_SIDE**2) / 3600.0


def pixel_iterations(params: StyleParams) -> int:
    """Upper bound on one job's work: Σ over stages of side² × steps (square image)."""
    return sum(side * side * steps for side, steps in params.stages())


def _distinct(chunks: list[pa.Array]) -> int:
    if not chunks:
        return 0
    return len(pc.unique(pa.chunked_array(chunks, pa.large_string())).drop_null())


def summarise_manifest(
    uri: str,
    *,
    defaults: StyleParams = StyleParams(),  # noqa: B008 - frozen, so one shared default instance is safe
    storage_options: Mapping[str, Any] | None = None,
    throughput: float = DEFAULT_THROUGHPUT,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> ManifestSummary:
    """Counts, parameter spread and work estimate; rows with problems are counted but not costed."""
    if not throughput > 0:
        raise ValueError(f"throughput must be > 0 steps/s, got {throughput}")
    with open_parquet(uri, storage_options) as parquet:
        layout = layout_of(parquet.schema_arrow)
        per_key: dict[str, tuple[StyleParams, int]] = {}
        contents: list[pa.Array] = []
        styles: list[pa.Array] = []
        rows = problem_rows = 0
        for scanned in scan_batches(parquet, uri, layout, defaults, batch_rows):
            rows += len(scanned)
            problem_rows += len(scanned.issues)
            contents.append(pc.unique(scanned.content).cast(pa.large_string()))
            styles.append(pc.unique(scanned.style).cast(pa.large_string()))
            usable = np.ones(len(scanned), dtype=bool)
            usable[list(scanned.issues)] = False
            combos = scanned.combo_of_row[usable & (scanned.combo_of_row >= 0)]
            for combo, count in enumerate(np.bincount(combos, minlength=len(scanned.combos)).tolist()):
                if count:
                    key = scanned.combo_keys[combo]
                    params, seen = per_key.get(key, (scanned.combos[combo], 0))
                    per_key[key] = (params, seen + count)
    summary = ManifestSummary(
        uri=uri,
        rows=rows,
        usable_rows=rows - problem_rows,
        problem_rows=problem_rows,
        distinct_contents=_distinct(contents),
        distinct_styles=_distinct(styles),
        overridden=layout.params,
        throughput=throughput,
    )
    for column in layout.params:
        counter: Counter[str] = Counter()
        for params, count in per_key.values():
            counter[format_field(column, getattr(params, column))] += count
        summary.parameters[column] = counter
    summary.pixel_iterations = float(sum(pixel_iterations(p) * n for p, n in per_key.values()))
    return summary
