"""Files written by pandas and pyarrow with every common string/int/float encoding read the same way."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from jobs import ManifestRow, RowProblem, iter_manifest, row_id_for
from nst_core.params import OptimizerName, StyleParams
from tests.jobs.manifest_helpers import write_table

EXPECTED = StyleParams(steps=100, lr=0.1, optimizer=OptimizerName.lbfgs, style_layers=("relu1_1", "relu2_1"))
EXPECTED_DEFAULT = StyleParams()


def _rows(path: str) -> list[ManifestRow | RowProblem]:
    return list(iter_manifest(path))


def _check(items: list[ManifestRow | RowProblem]) -> None:
    assert all(isinstance(r, ManifestRow) for r in items), items
    first, second = items
    assert isinstance(first, ManifestRow) and isinstance(second, ManifestRow)
    assert first.params == EXPECTED
    assert second.params == EXPECTED_DEFAULT  # nulls mean "run default"
    assert first.row_id == row_id_for("c0.jpg", "s0.jpg", EXPECTED)
    assert second.row_id == row_id_for("c1.jpg", "s1.jpg", EXPECTED_DEFAULT)


STRING_TYPES = [pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())]
if hasattr(pa, "string_view"):
    STRING_TYPES.append(pa.string_view())


@pytest.mark.parametrize("string_type", STRING_TYPES, ids=str)
@pytest.mark.parametrize("int_type", [pa.int32(), pa.int64(), pa.uint16(), pa.float64()], ids=str)
@pytest.mark.parametrize("float_type", [pa.float32(), pa.float64()], ids=str)
def test_pyarrow_types(
    tmp_path: Path, string_type: pa.DataType, int_type: pa.DataType, float_type: pa.DataType
) -> None:
    def strings(values: list[str | None]) -> pa.Array:
        return pa.array(values, pa.string()).cast(string_type)

    table = pa.table(
        {
            "content_uri": strings(["c0.jpg", "c1.jpg"]),
            "style_uri": strings(["s0.jpg", "s1.jpg"]),
            "steps": pa.array([100, None], int_type),
            "lr": pa.array([0.1, None], float_type),  # float32 0.1 must read as 0.1, not 0.10000000149
            "optimizer": strings(["LBFGS", None]),
            "style_layers": pa.array([["relu1_1", "relu2_1"], None], pa.list_(pa.string())),
        }
    )
    _check(_rows(write_table(tmp_path / "m.parquet", table)))


@pytest.mark.parametrize(
    "layers",
    [
        pa.array(["relu1_1,relu2_1", None], pa.large_string()),
        pa.array([["relu1_1", "relu2_1"], None], pa.large_list(pa.large_string())),
        pa.array([["relu1_1", "relu2_1"], None], pa.list_(pa.dictionary(pa.int8(), pa.string()))),
    ],
    ids=["text", "large_list", "list_of_dictionary"],
)
def test_layer_column_forms(tmp_path: Path, layers: pa.Array) -> None:
    table = pa.table(
        {
            "content_uri": ["c0.jpg", "c1.jpg"],
            "style_uri": ["s0.jpg", "s1.jpg"],
            "steps": pa.array([100, None], pa.int64()),
            "lr": [0.1, None],
            "optimizer": ["lbfgs", None],
            "style_layers": layers,
        }
    )
    _check(_rows(write_table(tmp_path / "m.parquet", table)))


@pytest.mark.parametrize("string_dtype", ["object", "string", "category"])
@pytest.mark.parametrize("int_dtype", ["Int32", "Int64", "float64"])
def test_pandas_written_files(tmp_path: Path, string_dtype: str, int_dtype: str) -> None:
    df = pd.DataFrame(
        {
            "content_uri": ["c0.jpg", "c1.jpg"],
            "style_uri": ["s0.jpg", "s1.jpg"],
            "steps": pd.array([100, None], dtype=int_dtype),
            "lr": pd.array([0.1, None], dtype="Float32"),
            "optimizer": ["lbfgs", None],
            "style_layers": ["relu1_1,relu2_1", None],
            "photographer": ["ann", "bo"],
        }
    )
    for column in ("content_uri", "style_uri", "optimizer", "style_layers"):
        df[column] = df[column].astype(string_dtype)
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    items = _rows(str(path))
    _check(items)
    assert [r.metadata for r in items if isinstance(r, ManifestRow)] == [
        {"photographer": "ann"},
        {"photographer": "bo"},
    ]


def test_typed_lists_schedule_and_weights(tmp_path: Path) -> None:
    table = pa.table(
        {
            "content_uri": ["c.jpg", "c.jpg", "c.jpg"],
            "style_uri": ["s.jpg", "s.jpg", "s.jpg"],
            "schedule": pa.array([[[256, 30], [512, 20]], None, None], pa.list_(pa.list_(pa.int32()))),
            "style_layer_weights": pa.array([None, [0.1, 0.2, 0.3, 0.2, 0.2], None], pa.list_(pa.float32())),
            "clamp": pa.array([None, None, False]),
        }
    )
    rows = _rows(write_table(tmp_path / "m.parquet", table))
    assert [type(r) for r in rows] == [ManifestRow] * 3
    params = [r.params for r in rows if isinstance(r, ManifestRow)]
    assert params[0].schedule == ((256, 30), (512, 20))
    assert params[1].style_layer_weights == (0.1, 0.2, 0.3, 0.2, 0.2)
    assert params[2].clamp is False


def test_metadata_is_json_safe(tmp_path: Path) -> None:
    import datetime as dt
    import json

    table = pa.table(
        {
            "content_uri": ["c.jpg"],
            "style_uri": ["s.jpg"],
            "taken": pa.array([dt.datetime(2026, 1, 2, 3, 4)], pa.timestamp("ms")),
            "score": [float("nan")],
            "tags": [["a", "b"]],
            "blob": [b"\x00\x01"],
        }
    )
    (row,) = _rows(write_table(tmp_path / "m.parquet", table))
    assert isinstance(row, ManifestRow)
    json.dumps(row.metadata, allow_nan=False)
    assert row.metadata["taken"] == "2026-01-02T03:04:00" and row.metadata["score"] is None


def test_docs_table_lists_every_parameter_with_its_default() -> None:
    import re

    from jobs import PARAM_COLUMNS, PARAM_KINDS
    from nst_core.params import format_field

    text = (Path(__file__).parents[2] / "docs" / "manifest.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| \w+(?: \(optional\))? \| `([^`]*)` \|$", text, flags=re.M))
    assert list(rows) == list(PARAM_COLUMNS)
    assert rows == {name: format_field(name, getattr(StyleParams(), name)) for name in PARAM_KINDS}
