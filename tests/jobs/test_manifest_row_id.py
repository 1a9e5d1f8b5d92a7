"""Row ids follow the documented formula, ignore column order, and only depend on what changes the image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
from manifest_helpers import write_table

from jobs import ManifestRow, iter_manifest, params_key, row_id_for
from nst_core.params import Precision, StyleParams

# The documented canonical text for StyleParams(steps=100), written out by hand (fields sorted by name,
# log_every left out because early_stop is 0).
CANONICAL_PARAMS = (
    "clamp=true;content_layer_weights=none;content_layers=relu4_2;content_ratio=none;content_weight=1.0;"
    "distance=squared;early_stop=0.0;init=content;lr=0.02;optimizer=adam;pooling=avg;precision=fp32;"
    "preserve_color=none;schedule=none;seed=0;size=512;steps=100;style_layer_weights=none;"
    "style_layers=relu1_1,relu2_1,relu3_1,relu4_1,relu5_1;style_normalization=paper;style_scale=1.0;"
    "style_weight=1000000.0;tv_weight=0.0"
)


def expected_id(content: str, style: str, params_text: str) -> str:
    canonical = f"nst-row/1\n{content}\n{style}\n{params_text}"
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def test_row_id_matches_the_documented_formula() -> None:
    params = StyleParams(steps=100)
    assert params_key(params) == CANONICAL_PARAMS
    assert row_id_for("s3://b/c.jpg", "s3://b/s.jpg", params) == expected_id(
        "s3://b/c.jpg", "s3://b/s.jpg", CANONICAL_PARAMS
    )


def test_row_id_ignores_log_every_unless_early_stopping() -> None:
    base = StyleParams()
    assert row_id_for("c", "s", base) == row_id_for("c", "s", base.replace(log_every=50))
    stopping = base.replace(early_stop=1e-4)
    assert row_id_for("c", "s", stopping) != row_id_for("c", "s", stopping.replace(log_every=50))


def test_row_id_changes_with_every_input_that_changes_the_image() -> None:
    base = row_id_for("c", "s", StyleParams())
    assert row_id_for("c2", "s", StyleParams()) != base
    assert row_id_for("c", "s2", StyleParams()) != base
    for changed in (
        StyleParams(steps=501),
        StyleParams(seed=1),
        StyleParams(style_weight=1e5),
        StyleParams(precision=Precision.bf16),
        StyleParams(schedule=((256, 10),)),
        StyleParams(style_layers=("relu1_1",)),
    ):
        assert row_id_for("c", "s", changed) != base, changed
    # uris are not split differently: "a\nb" + "c" cannot collide with "a" + "b\nc", because line breaks are refused
    try:
        row_id_for("a\nb", "c", StyleParams())
    except ValueError as exc:
        assert "line break" in str(exc)
    else:
        raise AssertionError("a URI with a line break must be refused")


def test_derived_ids_ignore_column_order_and_defaults_filled_in(tmp_path: Path) -> None:
    a = pa.table({"content_uri": ["c.jpg"], "style_uri": ["s.jpg"], "steps": [100], "note": ["x"]})
    b = pa.table({"note": ["x"], "steps": [100], "style_uri": ["s.jpg"], "content_uri": ["c.jpg"]})
    explicit_default = pa.table(
        {"content_uri": ["c.jpg"], "style_uri": ["s.jpg"], "steps": [100], "size": [512]}
    )
    ids = []
    for i, table in enumerate((a, b, explicit_default)):
        (row,) = iter_manifest(write_table(tmp_path / f"{i}.parquet", table))
        assert isinstance(row, ManifestRow)
        ids.append(row.row_id)
    assert ids[0] == ids[1] == ids[2] == expected_id("c.jpg", "s.jpg", CANONICAL_PARAMS)


def test_explicit_row_id_column_wins(tmp_path: Path) -> None:
    table = pa.table({"content_uri": ["c.jpg"], "style_uri": ["s.jpg"], "row_id": ["night-0001"]})
    (row,) = iter_manifest(write_table(tmp_path / "m.parquet", table))
    assert isinstance(row, ManifestRow) and row.row_id == "night-0001"
