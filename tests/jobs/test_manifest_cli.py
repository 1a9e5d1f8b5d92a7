"""`nst manifest build|validate|show` through Typer's CliRunner: key output lines and exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet  # noqa: F401 - pa.parquet below
import pytest
from typer.testing import CliRunner

from pipeline.cli.manifest import manifest_app
from tests.jobs.manifest_helpers import write_table

runner = CliRunner()


def test_build_validate_show(image_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "m.parquet")
    result = runner.invoke(
        manifest_app,
        [
            "build",
            "--content",
            str(image_dir / "content"),
            "--style",
            str(image_dir / "style" / "*.png"),
            "--param",
            "size=256",
            "--sweep",
            "style_weight=1e5,1e6",
            "-o",
            out,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 6 rows = 3 contents × 1 styles × 2 parameter sets to" in result.output

    result = runner.invoke(manifest_app, ["validate", out, "--check-files"])
    assert result.exit_code == 0, result.output
    assert "ok: 6 rows, no problems, 4 files opened" in result.output

    result = runner.invoke(manifest_app, ["show", out, "--throughput", "10"])
    assert result.exit_code == 0, result.output
    assert re.search(r"distinct contents\s*│\s*3", result.output)
    assert "style_weight" in result.output and "100000.0 (3)" in result.output
    work = 6 * 256**2 * 500  # rows × side² × default steps
    assert f"work: {work:.3e} pixel-iterations" in result.output
    assert f"estimate: {work / (10 * 512**2) / 3600:.3g} GPU-hours at 10 steps/s" in result.output


def test_validate_lists_problems_caps_output_and_exits_1(tmp_path: Path) -> None:
    table = pa.table(
        {"content_uri": ["c"] * 5, "style_uri": ["s4://x/s.jpg"] + ["s"] * 4, "steps": [1, -1, -2, -3, 5]}
    )
    path = write_table(tmp_path / "m.parquet", table)
    result = runner.invoke(manifest_app, ["validate", path, "--max-lines", "2"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("row 0") and "unknown URI scheme 's4'" in lines[0]
    assert lines[1].startswith("row 1") and "[steps]: steps must be a positive integer, got -1" in lines[1]
    assert lines[2] == "… and 2 more problems"
    assert lines[3] == "4 problems in 4 of 5 rows"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "{tmp}/nope.parquet"], "error: manifest not found"),
        (["show", "{tmp}/bad.parquet"], "is not a readable Parquet file"),
        (["build", "--content", "{tmp}", "--style", "{tmp}", "-o", "{tmp}/o.parquet"], "no images found"),
        (
            ["build", "--content", "a", "--style", "b", "--param", "stpes=1", "-o", "x"],
            "unknown parameter 'stpes'",
        ),
        (["validate", "{tmp}/bad.parquet", "--storage-option", "novalue"], "expects key=value"),
    ],
)
def test_errors_are_one_line_and_exit_1(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.parquet").write_text("content_uri,style_uri\n")
    result = runner.invoke(manifest_app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_error_output_masks_credentials(tmp_path: Path) -> None:
    uri = "s3://AKIAUSER:supersecret@bucket/m.parquet"
    result = runner.invoke(manifest_app, ["validate", uri, "--storage-option", "secret=hunter22"])
    assert result.exit_code == 1
    assert "supersecret" not in result.output and "hunter22" not in result.output


def test_show_ids_lists_each_rows_id_as_a_run_derives_it(image_dir: Path, tmp_path: Path) -> None:
    import dataclasses
    import json

    from jobs import row_id_for
    from nst_core.params import StyleParams

    out = str(tmp_path / "m.parquet")
    built = runner.invoke(
        manifest_app,
        ["build", "--content", str(image_dir / "content"), "--style", str(image_dir / "style" / "*.png"),
         "--sweep", "style_weight=1e5,1e6", "-o", out],
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    rows = pa.parquet.read_table(out).to_pylist()

    result = runner.invoke(manifest_app, ["show", out, "--ids"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "index\trow_id\tcontent_uri\tstyle_uri" and len(lines) == len(rows) + 1
    for i, (line, row) in enumerate(zip(lines[1:], rows, strict=True)):
        params = StyleParams(style_weight=row["style_weight"])
        expected = row_id_for(row["content_uri"], row["style_uri"], params)
        assert line.split("\t") == [str(i), expected, row["content_uri"], row["style_uri"]]

    # A run with --size 256 derives other ids; --param gives show the same run-level defaults.
    result = runner.invoke(manifest_app, ["show", out, "--ids", "--json", "--param", "size=256"])
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.output.strip().splitlines()]
    base = StyleParams(size=256)
    assert [e["row_id"] for e in entries] == [
        row_id_for(r["content_uri"], r["style_uri"], dataclasses.replace(base, style_weight=r["style_weight"]))
        for r in rows
    ]


def test_show_and_validate_json(image_dir: Path, tmp_path: Path) -> None:
    import json

    out = str(tmp_path / "m.parquet")
    built = runner.invoke(manifest_app, ["build", "-c", str(image_dir / "content"), "-s", str(image_dir / "style"),
                                         "-o", out])  # fmt: skip
    assert built.exit_code == 0, built.output
    shown = runner.invoke(manifest_app, ["show", out, "--json"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.output)
    rows = pa.parquet.read_table(out).num_rows
    assert summary["rows"] == rows and summary["distinct_contents"] == 3 and summary["gpu_hours"] > 0
    valid = runner.invoke(manifest_app, ["validate", out, "--json"])
    assert valid.exit_code == 0 and json.loads(valid.output)["ok"] is True

    bad = write_table(tmp_path / "bad.parquet", pa.table({"content_uri": ["c"], "style_uri": ["s"], "steps": [-1]}))
    result = runner.invoke(manifest_app, ["validate", bad, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False and report["problems"][0]["index"] == 0
    assert report["problems"][0]["column"] == "steps"
