"""Hypothesis: any cell value and any typed column is accepted or rejected with a clear error, never a crash."""

from __future__ import annotations

import io
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import (
    PARAM_COLUMNS,
    ManifestError,
    ManifestRow,
    RowProblem,
    coerce,
    iter_manifest,
    validate_manifest,
)
from nst_core.params import StyleParams

LAYER_WORDS = st.sampled_from(
    ["relu1_1", "relu2_1", "relu4_2", "conv5_4", "pool3", "relu9_9", "", " relu3_1 "]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "adam",
            "LBFGS",
            "none",
            "1e5",
            "256:10,512:5",
            "relu1_1,relu2_1",
            "nan",
            "-inf",
            "1e999",
            "true",
            "0",
            "",
            "avg",
            "luminance",
            "bf16",
            "1" * 5000,
        ]
    ),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(LAYER_WORDS, max_size=4),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
    st.lists(st.lists(st.integers(min_value=-5, max_value=10_000), max_size=3), max_size=3),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=3)), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(PARAM_COLUMNS), VALUES, max_size=4))
def test_row_cells_are_accepted_or_name_the_problem(values: dict[str, Any]) -> None:
    """The scanner's path for a row's cells: `coerce` per non-null cell, then StyleParams' own checks."""
    try:
        overrides = {name: coerce(name, value) for name, value in values.items() if value is not None}
        params = StyleParams().replace(**overrides)
    except ValueError as exc:
        message = str(exc)
        assert message and any(name in message for name in values) or "layer" in message, message
    else:
        assert isinstance(params, StyleParams)


URIS = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.sampled_from(
        ["s3://b/a.jpg", "s4://b/a.jpg", "memory://x/y.png", "file:///tmp/a.jpg", "a.jpg", "", "gs://x"]
    ),
)
COLUMN_TYPES = {
    "steps": [pa.int32(), pa.int64(), pa.uint8(), pa.float32(), pa.float64(), pa.string(), pa.large_string()],
    "lr": [pa.float32(), pa.float64(), pa.int16(), pa.string()],
    "optimizer": [pa.string(), pa.large_string(), pa.dictionary(pa.int16(), pa.string())],
    "style_layers": [pa.string(), pa.list_(pa.string()), pa.large_list(pa.large_string())],
    "style_layer_weights": [pa.list_(pa.float32()), pa.list_(pa.float64()), pa.string()],
    "schedule": [pa.string(), pa.list_(pa.string()), pa.list_(pa.list_(pa.int64()))],
    "clamp": [pa.bool_(), pa.int8(), pa.string()],
    "output_name": [pa.string()],
    "row_id": [pa.string(), pa.large_string()],
    "note": [pa.string(), pa.float64()],
}


TEXTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "adam",
            "LBFGS",
            "none",
            "1e5",
            "256:10,512:5",
            "relu1_1,relu2_1",
            "nan",
            "-inf",
            "1e999",
            "true",
            "0",
            "",
            "avg",
            "x/../y",
            "..",
            "1" * 5000,
            "7",
            "0.5",
            "256:0",
        ]
    ),
)


def cells_for(arrow_type: pa.DataType) -> st.SearchStrategy[Any]:
    """Cell values that pyarrow can store in this type, biased towards edge cases."""
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_integer(t):
        info_bits = t.bit_width - (0 if pa.types.is_unsigned_integer(t) else 1)
        low = 0 if pa.types.is_unsigned_integer(t) else -(2**info_bits)
        high = 2**info_bits - 1
        return st.one_of(st.integers(low, high), st.integers(max(low, -3), min(high, 600)))
    if pa.types.is_floating(t):
        return st.floats(width=t.bit_width, allow_nan=True, allow_infinity=True)
    if pa.types.is_boolean(t):
        return st.booleans()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return st.lists(cells_for(t.value_type), max_size=6)
    if t == pa.string() or t == pa.large_string():
        return TEXTS
    raise AssertionError(t)


@st.composite
def manifests(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(min_value=1, max_value=6))
    columns: dict[str, pa.Array] = {
        "content_uri": pa.array(draw(st.lists(URIS, min_size=n, max_size=n)), pa.string()),
        "style_uri": pa.array(draw(st.lists(URIS, min_size=n, max_size=n)), pa.large_string()),
    }
    for name in draw(st.lists(st.sampled_from(sorted(COLUMN_TYPES)), unique=True, max_size=4)):
        arrow_type = draw(st.sampled_from(COLUMN_TYPES[name]))
        cells = draw(st.lists(st.one_of(st.none(), cells_for(arrow_type)), min_size=n, max_size=n))
        columns[name] = pa.array(cells, arrow_type)
    return pa.table(columns)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(manifests())
def test_any_manifest_yields_rows_or_problems(table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    uri = f"memory://fuzz-{uuid.uuid4().hex}.parquet"
    fs = fsspec.filesystem("memory")
    fs.pipe(uri, sink.getvalue())
    try:
        items = list(iter_manifest(uri))
        report = validate_manifest(uri)
    except ManifestError as exc:
        assert str(exc)
        return
    finally:
        fs.rm(uri)
    assert [item.index for item in items] == list(range(table.num_rows))
    for item in items:
        assert isinstance(item, (ManifestRow, RowProblem))
        if isinstance(item, RowProblem):
            assert item.message
    # the validator and the reader agree on which rows cannot run
    assert {i.index for i in items if isinstance(i, RowProblem)} == {p.index for p in report.problems}


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_a_manifest_error(data: bytes) -> None:
    uri = f"memory://bytes-{uuid.uuid4().hex}.parquet"
    fs = fsspec.filesystem("memory")
    fs.pipe(uri, data)
    try:
        list(iter_manifest(uri))
    except ManifestError as exc:
        assert "Parquet" in str(exc)
    finally:
        fs.rm(uri)
