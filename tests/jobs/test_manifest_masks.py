"""Region-mask columns: read, checked like the image URIs, part of the row id only when present."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from jobs import ManifestError, ManifestRow, RowProblem, iter_manifest, row_id_for, validate_manifest
from jobs.scan import column_warnings, layout_of
from nst_core.params import StyleParams
from tests.jobs.manifest_helpers import write_image, write_table

DEFAULT_ROW_ID = "562444e0fa0d3114a1bd"
"""row_id_for("s3://b/c.jpg", "s3://b/s.jpg", StyleParams()), pinned before masks existed."""


def documented_id(content: str, style: str, key: str, content_mask: str | None, style_mask: str | None) -> str:
    canonical = f"nst-row/2\n{content}\n{style}\n{key}"
    if content_mask is not None:
        canonical += "\nmasks\n" + content_mask + "\n" + (style_mask or "")
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def items(path: str) -> list[ManifestRow | RowProblem]:
    return list(iter_manifest(path))


def test_an_unmasked_row_keeps_its_id_and_a_masked_row_gets_a_new_one() -> None:
    c, s = "s3://b/c.jpg", "s3://b/s.jpg"
    assert row_id_for(c, s, StyleParams()) == DEFAULT_ROW_ID
    assert row_id_for(c, s, StyleParams(), content_mask_uri=None, style_mask_uri=None) == DEFAULT_ROW_ID
    masked = row_id_for(c, s, StyleParams(), content_mask_uri="s3://b/cm.png")
    both = row_id_for(c, s, StyleParams(), content_mask_uri="s3://b/cm.png", style_mask_uri="s3://b/sm.png")
    assert masked == documented_id(c, s, "", "s3://b/cm.png", None)
    assert both == documented_id(c, s, "", "s3://b/cm.png", "s3://b/sm.png")
    assert len({DEFAULT_ROW_ID, masked, both}) == 3
    key = "steps=100"
    assert row_id_for(c, s, StyleParams(steps=100), content_mask_uri="m") == documented_id(c, s, key, "m", None)
    with pytest.raises(ValueError, match="needs a content mask"):
        row_id_for(c, s, StyleParams(), style_mask_uri="s3://b/sm.png")
    with pytest.raises(ValueError, match="line break"):
        row_id_for(c, s, StyleParams(), content_mask_uri="a\nb")


def test_mask_columns_are_read_and_null_means_no_mask(tmp_path: Path) -> None:
    table = pa.table(
        {
            "content_uri": ["s3://b/c.jpg", "s3://b/c.jpg", "s3://b/c.jpg"],
            "style_uri": ["s3://b/s.jpg"] * 3,
            "content_mask_uri": [None, "s3://b/cm.png", "cm.png"],
            "style_mask_uri": [None, None, "memory://sm.png"],
        }
    )
    plain = items(write_table(tmp_path / "plain.parquet", table.select(["content_uri", "style_uri"]).slice(0, 1)))
    rows = items(write_table(tmp_path / "m.parquet", table))
    assert all(isinstance(r, ManifestRow) for r in rows), rows
    unmasked, masked, both = rows
    assert isinstance(plain[0], ManifestRow) and plain[0].row_id == DEFAULT_ROW_ID
    assert isinstance(unmasked, ManifestRow) and unmasked.row_id == DEFAULT_ROW_ID  # columns present, null
    assert (unmasked.content_mask_uri, unmasked.style_mask_uri) == (None, None)
    assert isinstance(masked, ManifestRow) and masked.content_mask_uri == "s3://b/cm.png"
    assert masked.row_id == documented_id("s3://b/c.jpg", "s3://b/s.jpg", "", "s3://b/cm.png", None)
    assert isinstance(both, ManifestRow) and (both.content_mask_uri, both.style_mask_uri) == ("cm.png", "memory://sm.png")
    assert both.row_id == documented_id("s3://b/c.jpg", "s3://b/s.jpg", "", "cm.png", "memory://sm.png")
    # Only a content-mask column, no style-mask column: ids as with both columns.
    only = items(write_table(tmp_path / "only.parquet", table.select(["content_uri", "style_uri", "content_mask_uri"])))
    assert [r.row_id for r in only][:2] == [unmasked.row_id, masked.row_id]


def test_mask_uris_are_checked_like_image_uris_and_a_style_mask_needs_a_content_mask(tmp_path: Path) -> None:
    n = 5
    table = pa.table(
        {
            "content_uri": [f"c{i}.jpg" for i in range(n)],
            "style_uri": ["s.jpg"] * n,
            "content_mask_uri": ["", "s4://b/m.png", "m\x01.png", None, "ok.png"],
            "style_mask_uri": [None, None, None, "sm.png", "sm.png"],
        }
    )
    got = items(write_table(tmp_path / "m.parquet", table))
    problems = {p.index: p for p in got if isinstance(p, RowProblem)}
    assert sorted(problems) == [0, 1, 2, 3]
    assert problems[0].column == "content_mask_uri" and "empty string" in problems[0].message
    assert "unknown URI scheme 's4'" in problems[1].message and "'s3'" in problems[1].message
    assert "control character" in problems[2].message
    assert problems[3].column == "style_mask_uri" and "needs a content mask" in problems[3].message
    assert all(p.row_id is None for p in problems.values())  # no id is derived from an unusable row
    assert isinstance(got[4], ManifestRow)
    report = validate_manifest(str(tmp_path / "m.parquet"))
    assert report.bad_rows == 4 and {p.column for p in report.problems} == {"content_mask_uri", "style_mask_uri"}


def test_mask_columns_must_be_strings_and_misspellings_are_warned(tmp_path: Path) -> None:
    bad = pa.table({"content_uri": ["c"], "style_uri": ["s"], "content_mask_uri": pa.array([1], pa.int64())})
    with pytest.raises(ManifestError, match="'content_mask_uri' has type int64; expected a string column"):
        items(write_table(tmp_path / "bad.parquet", bad))
    nulls = pa.table({"content_uri": ["c"], "style_uri": ["s"], "style_mask_uri": pa.nulls(1)})
    assert isinstance(items(write_table(tmp_path / "nulls.parquet", nulls))[0], ManifestRow)
    schema = pa.schema([("content_uri", pa.string()), ("style_uri", pa.string()), ("content_mask", pa.string())])
    assert any("did you mean 'content_mask_uri'" in w for w in column_warnings(layout_of(schema)))


def test_same_job_twice_counts_the_masks(tmp_path: Path) -> None:
    table = pa.table(
        {
            "content_uri": ["c.jpg"] * 3,
            "style_uri": ["s.jpg"] * 3,
            "content_mask_uri": ["a.png", "b.png", "a.png"],
        }
    )
    got = items(write_table(tmp_path / "m.parquet", table))
    assert [type(r).__name__ for r in got] == ["ManifestRow", "ManifestRow", "RowProblem"]
    assert "(and masks)" in str(got[2])


def test_check_files_decodes_masks_as_label_maps(tmp_path: Path) -> None:
    content = str(write_image(tmp_path / "c.png"))
    style = str(write_image(tmp_path / "s.png"))
    flat = np.zeros((32, 48, 3), dtype=np.uint8)
    flat[:, 24:] = (255, 0, 0)
    Image.fromarray(flat).save(tmp_path / "flat.png")
    noisy = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")  # far more than 16 colours: not a segmentation
    table = pa.table(
        {
            "content_uri": [content, content, content],
            "style_uri": [style, style, style],
            "content_mask_uri": [str(tmp_path / "flat.png"), str(tmp_path / "noisy.png"), str(tmp_path / "gone.png")],
            "style_mask_uri": [str(tmp_path / "flat.png"), None, None],
            "steps": [1, 2, 3],
        }
    )
    report = validate_manifest(write_table(tmp_path / "m.parquet", table), check_files=True, workers=2)
    assert report.files_checked == 5  # 2 images + 3 distinct masks
    by_row = {p.index: p for p in report.problems}
    assert sorted(by_row) == [1, 2], report.problems
    assert by_row[1].column == "content_mask_uri" and "distinct colours" in by_row[1].message
    assert "noisy.png" in by_row[1].message
    assert by_row[2].column == "content_mask_uri" and "file not found" in by_row[2].message
