"""Row ids follow the documented formula, ignore column order, and only depend on what changes the image."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest

import jobs.row_id
from jobs import ROW_ID_VERSION, ManifestRow, iter_manifest, params_key, row_id_for
from nst_core.params import Precision, StyleParams
from tests.jobs.manifest_helpers import write_table

# The documented canonical texts, written out by hand: only fields whose value differs from
# StyleParams()'s default, sorted by name; log_every only when early_stop > 0 (and not at its default).
CANONICAL_PARAMS = "steps=100"  # StyleParams(steps=100)
CANONICAL_MIXED = (  # see MIXED below
    "early_stop=0.0001;log_every=5;precision=bf16;schedule=256:30,512:20;steps=100;"
    "style_layer_weights=0.25,0.75;style_layers=relu1_1,relu3_1;tv_weight=1.0"
)
MIXED = StyleParams(
    steps=100,
    tv_weight=1,
    early_stop=1e-4,
    log_every=5,
    precision=Precision.bf16,
    schedule=((256, 30), (512, 20)),
    style_layers=("relu1_1", "relu3_1"),
    style_layer_weights=(0.25, 0.75),
)

DEFAULTS_FINGERPRINT = "bf40c362633f8d1755e2a1652ec6b58d007ee48860db3f07008caab6028cac81"
"""sha256 of json.dumps(StyleParams().to_dict(), sort_keys=True): set when ROW_ID_VERSION became nst-row/2,
updated for the new fields `padding` and `lbfgs_history`, whose defaults reproduce the old behaviour, for
`precision`'s default `auto`, which the id reads as the old default fp32 (see the test below), and for the
new fields `style_loss` (default `gram`, the only style loss before it), `ema_decay` (default 0, off),
`style_ratio` (default None, off) and `warm_start` (default False, every stage restarts Adam)."""
DEFAULT_ROW_ID = "562444e0fa0d3114a1bd"
"""row_id_for("s3://b/c.jpg", "s3://b/s.jpg", StyleParams()), written out before `style_loss`, `ema_decay`,
`style_ratio` and `warm_start` existed."""


def expected_id(content: str, style: str, params_text: str) -> str:
    canonical = f"nst-row/2\n{content}\n{style}\n{params_text}"
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def test_row_id_matches_the_documented_formula() -> None:
    params = StyleParams(steps=100)
    assert params_key(params) == CANONICAL_PARAMS
    assert row_id_for("s3://b/c.jpg", "s3://b/s.jpg", params) == expected_id(
        "s3://b/c.jpg", "s3://b/s.jpg", CANONICAL_PARAMS
    )
    assert params_key(MIXED) == CANONICAL_MIXED
    assert row_id_for("c", "s", MIXED) == expected_id("c", "s", CANONICAL_MIXED)
    assert params_key(StyleParams()) == ""
    assert row_id_for("c", "s", StyleParams()) == expected_id("c", "s", "")


def test_defaults_are_pinned_to_the_id_version() -> None:
    """An absent field in params_key means "its default", so a changed default silently changes the image
    behind every existing id; the prefix must change with it."""
    current = json.dumps(StyleParams().to_dict(), sort_keys=True)
    assert hashlib.sha256(current.encode()).hexdigest() == DEFAULTS_FINGERPRINT, (
        "StyleParams() defaults changed. If an existing field's default value changed, bump ROW_ID_VERSION "
        f"(now {ROW_ID_VERSION!r}) in jobs/row_id.py, docs/manifest.md and these tests, then update "
        "DEFAULTS_FINGERPRINT. If only a new field was added whose default reproduces the old behaviour, ids "
        f"are unaffected: update DEFAULTS_FINGERPRINT alone. Current defaults: {current}"
    )


def test_precision_auto_keeps_the_ids_made_when_fp32_was_the_default() -> None:
    """`auto` became the default after ids were made with fp32 as the default: rows that set no precision,
    or fp32, keep their ids (outputs stay done); bf16 and tf32 rows keep theirs too."""
    for precision in (Precision.auto, Precision.fp32):
        assert params_key(StyleParams(steps=100, precision=precision)) == CANONICAL_PARAMS
        assert row_id_for("c", "s", StyleParams(precision=precision)) == expected_id("c", "s", "")
    assert params_key(StyleParams(precision=Precision.tf32)) == "precision=tf32"
    assert params_key(MIXED) == CANONICAL_MIXED  # precision=bf16, as before


def test_style_loss_at_its_default_keeps_the_ids_made_before_it_existed() -> None:
    assert row_id_for("s3://b/c.jpg", "s3://b/s.jpg", StyleParams()) == DEFAULT_ROW_ID
    assert row_id_for("s3://b/c.jpg", "s3://b/s.jpg", StyleParams(style_loss="gram")) == DEFAULT_ROW_ID
    assert params_key(StyleParams(steps=100, style_loss="gram")) == CANONICAL_PARAMS
    assert params_key(StyleParams(steps=100, style_loss="w2")) == "steps=100;style_loss=w2"


def test_ema_decay_at_its_default_keeps_the_ids_made_before_it_existed() -> None:
    for off in (0, 0.0):
        assert row_id_for("s3://b/c.jpg", "s3://b/s.jpg", StyleParams(ema_decay=off)) == DEFAULT_ROW_ID
    assert params_key(StyleParams(steps=100, ema_decay=0.0)) == CANONICAL_PARAMS
    assert params_key(StyleParams(ema_decay=0.9)) == "ema_decay=0.9"


def test_style_ratio_at_its_default_keeps_the_ids_made_before_it_existed() -> None:
    assert row_id_for("s3://b/c.jpg", "s3://b/s.jpg", StyleParams(style_ratio=None)) == DEFAULT_ROW_ID
    assert params_key(StyleParams(steps=100, style_ratio=None)) == CANONICAL_PARAMS
    assert params_key(StyleParams(style_ratio=0.5)) == "style_ratio=0.5"


def test_warm_start_at_its_default_keeps_the_ids_made_before_it_existed() -> None:
    assert row_id_for("s3://b/c.jpg", "s3://b/s.jpg", StyleParams(warm_start=False)) == DEFAULT_ROW_ID
    assert params_key(StyleParams(steps=100, warm_start=False)) == CANONICAL_PARAMS
    assert params_key(StyleParams(warm_start=True)) == "warm_start=true"


def test_defaults_written_out_are_the_same_as_left_out() -> None:
    assert params_key(StyleParams(style_weight=1000000, size=512, lr=0.02, content_layers=("relu4_2",))) == ""
    assert params_key(StyleParams(steps=100, content_weight=1)) == CANONICAL_PARAMS


def test_adding_a_field_at_its_default_keeps_every_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated upgrade: the same sets, keyed as if `precision` did not exist yet (an older release)."""
    sets = [StyleParams(), StyleParams(steps=100), MIXED.replace(precision=Precision.fp32)]
    after = [row_id_for("c", "s", p) for p in sets]
    older = tuple(name for name in jobs.row_id._SORTED_FIELDS if name != "precision")
    monkeypatch.setattr(jobs.row_id, "_SORTED_FIELDS", older)
    assert [row_id_for("c", "s", p) for p in sets] == after
    assert row_id_for("c", "s", MIXED) != expected_id("c", "s", CANONICAL_MIXED)  # the patch took effect


def test_row_id_ignores_log_every_unless_early_stopping() -> None:
    base = StyleParams()
    assert row_id_for("c", "s", base) == row_id_for("c", "s", base.replace(log_every=50))
    stopping = base.replace(early_stop=1e-4)
    assert params_key(stopping) == "early_stop=0.0001"  # log_every at its default is left out
    assert params_key(stopping.replace(log_every=50)) == "early_stop=0.0001;log_every=50"
    ids = {row_id_for("c", "s", stopping.replace(log_every=n)) for n in (1, 10, 50)}
    assert len(ids) == 3


def test_row_id_changes_with_every_input_that_changes_the_image() -> None:
    base = row_id_for("c", "s", StyleParams())
    assert row_id_for("c2", "s", StyleParams()) != base
    assert row_id_for("c", "s2", StyleParams()) != base
    changed = [
        StyleParams(steps=501),
        StyleParams(seed=1),
        StyleParams(style_weight=1e5),
        StyleParams(precision=Precision.bf16),
        StyleParams(schedule=((256, 10),)),
        StyleParams(style_layers=("relu1_1",)),
        StyleParams(content_ratio=0.5),
        StyleParams(early_stop=1e-4),
        StyleParams(early_stop=1e-4, log_every=50),
        StyleParams(style_loss="w2"),
        StyleParams(ema_decay=0.9),
        StyleParams(style_ratio=0.5),
        StyleParams(schedule=((256, 10), (512, 10)), warm_start=True),
    ]
    ids = [row_id_for("c", "s", p) for p in changed]
    assert base not in ids and len(set(ids)) == len(ids)
    # uris are not split differently: "a\nb" + "c" cannot collide with "a" + "b\nc", because line breaks are refused
    with pytest.raises(ValueError, match="line break"):
        row_id_for("a\nb", "c", StyleParams())


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


def test_derived_ids_include_the_run_defaults(tmp_path: Path) -> None:
    table = pa.table(
        {"content_uri": ["c.jpg", "c.jpg"], "style_uri": ["s.jpg", "s.jpg"], "steps": [None, 100]}
    )
    path = write_table(tmp_path / "m.parquet", table)
    first, second = iter_manifest(path, defaults=StyleParams(steps=300, tv_weight=2.0))
    assert isinstance(first, ManifestRow) and isinstance(second, ManifestRow)
    assert first.row_id == expected_id("c.jpg", "s.jpg", "steps=300;tv_weight=2.0")
    assert second.row_id == expected_id("c.jpg", "s.jpg", "steps=100;tv_weight=2.0")


def test_explicit_row_id_column_wins(tmp_path: Path) -> None:
    table = pa.table({"content_uri": ["c.jpg"], "style_uri": ["s.jpg"], "row_id": ["night-0001"]})
    path = write_table(tmp_path / "m.parquet", table)
    for defaults in (StyleParams(), StyleParams(steps=300)):
        (row,) = iter_manifest(path, defaults=defaults)
        assert isinstance(row, ManifestRow) and row.row_id == "night-0001" and row.params == defaults
