"""Bad files raise one ManifestError; bad rows become RowProblems naming the row and column, never stopping others."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from jobs import ManifestError, ManifestRow, RowProblem, iter_manifest, validate_manifest
from tests.jobs.manifest_helpers import write_table


def _problems(tmp_path: Path, columns: dict[str, Any]) -> list[ManifestRow | RowProblem]:
    return list(iter_manifest(write_table(tmp_path / "m.parquet", pa.table(columns))))


@pytest.mark.parametrize("content", [b"", b"content_uri,style_uri\na.jpg,b.jpg\n", b"PAR1" + b"\x00" * 64])
def test_not_parquet(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.parquet"
    path.write_bytes(content)
    with pytest.raises(ManifestError, match="not a readable Parquet file"):
        list(iter_manifest(str(path)))
    with pytest.raises(ManifestError):
        validate_manifest(str(path))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        list(iter_manifest(str(tmp_path / "nope.parquet")))
    with pytest.raises(ManifestError, match="directory"):
        list(iter_manifest(str(tmp_path)))


def test_missing_required_column(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="lacks required column.*style_uri.*it has: content_uri, steps"):
        _problems(tmp_path, {"content_uri": ["a"], "steps": [1]})


@pytest.mark.parametrize(
    ("column", "array", "expected"),
    [
        ("content_uri", pa.array([1]), "'content_uri' has type int64; expected a string"),
        ("steps", pa.array([True]), "'steps' has type bool"),
        ("steps", pa.array([[1]]), "'steps' has type list"),
        ("optimizer", pa.array([1.0]), "'optimizer' has type double"),
        ("style_layers", pa.array([[1, 2]]), "'style_layers' has type list<"),
        ("output_name", pa.array([b"x"]), "'output_name' has type binary"),
    ],
)
def test_wrong_column_types(tmp_path: Path, column: str, array: pa.Array, expected: str) -> None:
    columns: dict[str, Any] = {"content_uri": ["c.jpg"], "style_uri": ["s.jpg"], column: array}
    with pytest.raises(ManifestError, match=re.escape(expected)):
        _problems(tmp_path, columns)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("content_uri", pa.array([None, "c.jpg"], pa.string()), "content_uri is null"),
        ("content_uri", pa.array(["", "c.jpg"]), "content_uri is an empty string"),
        ("content_uri", pa.array(["s4://b/x.jpg", "c.jpg"]), "unknown URI scheme 's4' (did you mean 's3'?)"),
        ("content_uri", pa.array(["a\nb.jpg", "c.jpg"]), "control character"),
        ("style_weight", pa.array([float("nan"), 1.0]), "style_weight must be a finite number, got nan"),
        ("tv_weight", pa.array([float("inf"), 1.0]), "tv_weight must be a finite number, got inf"),
        ("style_layer_weights", pa.array([[1.0, float("inf")], None]), "style_layer_weights"),
        ("steps", pa.array([-5, 10]), "steps must be a positive integer, got -5"),
        ("steps", pa.array([2.5, 10]), "steps must be an integer, got 2.5"),
        ("size", pa.array([10**12, 64]), "size must be <= 8192"),
        ("size", pa.array(["huge", "64"]), "size: cannot parse 'huge'"),
        ("seed", pa.array([2**64 - 1, 3], pa.uint64()), "seed must be an integer in [0, 2**63)"),
        ("optimizer", pa.array(["sgd", "adam"]), "optimizer must be one of adam, lbfgs, gd, got 'sgd'"),
        ("style_layers", pa.array(["relu9_9", "relu1_1"]), "unknown style layer(s) 'relu9_9'"),
        ("schedule", pa.array(["256:x", "256:10"]), "schedule: cannot parse"),
        ("output_name", pa.array(["../evil.png", None]), "contains a path separator"),
        ("output_name", pa.array(["/etc/passwd", None]), "contains a path separator"),
        ("output_name", pa.array(["..", None]), "would escape the output folder"),
        ("output_name", pa.array(["", None]), "output_name is an empty string"),
        ("output_name", pa.array(["a\x00b", None]), "control character"),
        ("output_name", pa.array(["x" * 300, None]), "longer than 255 bytes"),
        ("row_id", pa.array(["../x", "ok"]), "must not contain"),
        ("row_id", pa.array([None, "ok"], pa.string()), "row_id is null"),
    ],
)
def test_bad_rows_are_problems_and_good_rows_still_run(
    tmp_path: Path, column: str, values: pa.Array, message: str
) -> None:
    columns: dict[str, Any] = {
        "content_uri": ["c0.jpg", "c1.jpg"],
        "style_uri": ["s.jpg", "s.jpg"],
        column: values,
    }
    bad, good = _problems(tmp_path, columns)
    assert isinstance(bad, RowProblem), bad
    assert bad.index == 0 and message in bad.message and bad.column == column
    assert isinstance(good, ManifestRow) and good.index == 1
    report = validate_manifest(str(tmp_path / "m.parquet"))
    assert not report.ok and {p.index for p in report.problems} == {0}
    assert any(message in p.message for p in report.problems)


def test_one_row_reports_every_bad_column(tmp_path: Path) -> None:
    columns = {
        "content_uri": ["c.jpg"],
        "style_uri": ["s.jpg"],
        "steps": [-1],
        "optimizer": ["sgd"],
        "lr": [0.0],
    }
    path = write_table(tmp_path / "m.parquet", pa.table(columns))
    assert sorted(p.column or "" for p in validate_manifest(path).problems) == ["lr", "optimizer", "steps"]


def test_cross_field_problem_names_the_overriding_column(tmp_path: Path) -> None:
    columns = {
        "content_uri": ["c.jpg"],
        "style_uri": ["s.jpg"],
        "style_layers": ["relu1_1,relu2_1"],
        "style_layer_weights": ["1,2,3"],
    }
    (problem,) = _problems(tmp_path, columns)
    assert isinstance(problem, RowProblem)
    assert "style_layer_weights has 3 values for 2 style_layers" in problem.message
    assert problem.column in ("style_layers", "style_layer_weights")


def test_duplicates(tmp_path: Path) -> None:
    explicit = {
        "content_uri": ["a", "b", "c"],
        "style_uri": ["s", "s", "s"],
        "row_id": ["x", "x", "y"],
        "output_name": ["o.png", None, "o.png"],
    }
    items = _problems(tmp_path, explicit)
    assert [type(i).__name__ for i in items] == ["RowProblem"] * 3
    assert "appears 2 times" in items[0].message and "used by 2 rows" in items[2].message  # type: ignore[union-attr]
    report = validate_manifest(str(tmp_path / "m.parquet"))
    assert report.bad_rows == 3 and report.problem_count == 4

    derived = {"content_uri": ["a", "a", "a"], "style_uri": ["s", "s", "s"], "steps": [10, 10, 20]}
    first, repeat, other = _problems(tmp_path, derived)
    assert isinstance(first, ManifestRow) and isinstance(other, ManifestRow)
    assert isinstance(repeat, RowProblem) and "same content_uri, style_uri and parameters" in repeat.message
    report = validate_manifest(str(tmp_path / "m.parquet"))
    assert [p.index for p in report.problems] == [1] and "row 0" in report.problems[0].message


def test_defaults_are_applied_and_can_conflict(tmp_path: Path) -> None:
    from nst_core.params import StyleParams

    path = write_table(
        tmp_path / "m.parquet",
        pa.table(
            {
                "content_uri": ["c"],
                "style_uri": ["s"],
                "lr": [
                    None,
                ][:1],
            }
        ),
    )
    (row,) = iter_manifest(path, defaults=StyleParams(steps=7))
    assert isinstance(row, ManifestRow) and row.params.steps == 7


def test_misspelt_column_warning(tmp_path: Path) -> None:
    path = write_table(
        tmp_path / "m.parquet", pa.table({"content_uri": ["c"], "style_uri": ["s"], "stpes": [3]})
    )
    report = validate_manifest(path)
    assert report.ok and any("did you mean 'steps'" in w for w in report.warnings)
