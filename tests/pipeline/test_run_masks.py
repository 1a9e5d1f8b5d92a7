"""Region masks through the pipeline: a bad mask fails only its row (bad_input, naming the mask), masked and
unmasked rows share a batch, and the β of each stage reaches the ledger."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nst_core.params import StyleParams
from pipeline.cluster.ledger_buffer import row_record
from pipeline.cluster.tasks import BatchSpec, RowTask, WorkerConfig
from pipeline.cluster.worker import StyleWorker
from pipeline.run.manifest_run import run_manifest
from pipeline.store.layout import OutputLayout, batch_id_for
from pipeline.store.ledger import read_ledger
from pipeline.store.records import LEDGER_SCHEMA
from pipeline.store.transfer import write_bytes_atomic
from tests.pipeline.pipeline_checks import WEIGHTS, write_images, write_manifest, write_mask

PARAMS = StyleParams(size=32, steps=2, log_every=1)
TWO = [(0, 0, 0), (255, 0, 0)]
"""The two regions of every good mask: black on the left, red on the right."""


def masks(tmp_path: Path) -> dict[str, str]:
    """Masks for 40x48 (H, W) contents and 48x48 styles, good and bad."""
    return {
        "content": write_mask(tmp_path / "masks" / "content.png", (40, 48), TWO),
        "style": write_mask(tmp_path / "masks" / "style.png", (48, 48), TWO),
        "square": write_mask(tmp_path / "masks" / "square.png", (48, 48), TWO),  # not the content's aspect
        "blue": write_mask(tmp_path / "masks" / "blue.png", (48, 48), [(0, 0, 0), (0, 0, 255)]),  # #0000ff: not in the content
        "gone": str(tmp_path / "masks" / "gone.png"),
    }


def mixed_rows(contents: list[str], style: str, m: dict[str, str]) -> list[dict[str, Any]]:
    """Three good rows (both masks, a content mask alone, none) and three bad ones, one style."""
    cases = [
        ("both", m["content"], m["style"]),
        ("content-only", m["content"], None),
        ("plain", None, None),
        ("aspect", m["square"], m["style"]),
        ("region", m["content"], m["blue"]),
        ("missing", m["gone"], None),
    ]
    return [
        {"content_uri": c, "style_uri": style, "content_mask_uri": cm, "style_mask_uri": sm, "tag": tag}
        for c, (tag, cm, sm) in zip(contents, cases, strict=True)
    ]


def check_bad_rows(failed: dict[str, tuple[str | None, str | None]], m: dict[str, str]) -> None:
    """tag -> (error_kind, error_message) of the failed rows."""
    assert set(failed) == {"aspect", "region", "missing"}, failed
    assert {kind for kind, _ in failed.values()} == {"bad_input"}
    assert m["square"] in (failed["aspect"][1] or "") and "aspect ratio" in (failed["aspect"][1] or "")
    assert m["blue"] in (failed["region"][1] or "") and "#0000ff" in (failed["region"][1] or "")
    assert f"content mask file not found: {m['gone']}" in (failed["missing"][1] or "")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> StyleWorker:
    return StyleWorker(WorkerConfig(weights=WEIGHTS, out=str(tmp_path_factory.mktemp("out"))), name="w-masks")


def spec_of(worker: StyleWorker, rows: list[dict[str, Any]], params: StyleParams = PARAMS) -> BatchSpec:
    layout = OutputLayout(worker.config.out)
    tasks = tuple(
        RowTask(row_id=f"{r['tag']}-{i}", index=i, content_uri=r["content_uri"], style_uri=r["style_uri"],
                params=params, output_uri=layout.image_uri(f"{r['tag']}-{i}-{id(rows)}"),
                content_mask_uri=r["content_mask_uri"], style_mask_uri=r["style_mask_uri"], metadata={"tag": r["tag"]})
        for i, r in enumerate(rows)
    )  # fmt: skip
    batch_id = batch_id_for(t.output_uri for t in tasks)
    return BatchSpec(batch_id=batch_id, rows=tasks, curve_uri=layout.curve_uri(batch_id))


def outcomes(worker: StyleWorker, spec: BatchSpec) -> dict[str, Any]:
    out = worker.run_batch(spec)
    return {t.metadata["tag"]: r for t, r in zip(spec.rows, out.rows, strict=True)}


def test_bad_masks_fail_their_own_rows_before_the_batch_optimises(worker: StyleWorker, tmp_path: Path) -> None:
    """Bad masks beside unmasked rows: the engine sees only the unmasked rows."""
    m = masks(tmp_path)
    contents = write_images(tmp_path / "in", "content", 5, seed=5)
    style = write_images(tmp_path / "in", "style", 1, seed=6, shape=(48, 48))[0]
    rows = [r for r in mixed_rows([*contents, contents[0]], style, m) if r["tag"] not in ("both", "content-only")]
    by_tag = outcomes(worker, spec_of(worker, rows))
    assert by_tag["plain"].ok, by_tag["plain"]
    check_bad_rows({t: (r.error_kind, r.error_message) for t, r in by_tag.items() if not r.ok}, m)


def test_masked_and_unmasked_rows_optimise_in_one_batch(worker: StyleWorker, tmp_path: Path) -> None:
    m = masks(tmp_path)
    contents = write_images(tmp_path / "in", "content", 6, seed=7)
    style = write_images(tmp_path / "in", "style", 1, seed=8, shape=(48, 48))[0]
    spec = spec_of(worker, mixed_rows(contents, style, m))
    by_tag = outcomes(worker, spec)
    done = {t for t, r in by_tag.items() if r.ok}
    assert done == {"both", "content-only", "plain"}, {t: r.error_message for t, r in by_tag.items()}
    check_bad_rows({t: (r.error_kind, r.error_message) for t, r in by_tag.items() if not r.ok}, m)
    assert all(by_tag[t].style_weights == (PARAMS.style_weight,) for t in done)  # fixed β, one stage
    assert all(Path(t.output_uri).exists() for t in spec.rows if t.metadata["tag"] in done)
    task = next(t for t in spec.rows if t.metadata["tag"] == "both")
    row = row_record("run", task, by_tag["both"], None, spec, None).to_row()
    assert (row["content_mask_uri"], row["style_mask_uri"]) == (m["content"], m["style"])
    assert row["style_weights"] == [PARAMS.style_weight]


def test_ledgers_written_before_style_weights_and_masks_read_them_as_nulls(tmp_path: Path) -> None:
    new = ("style_weights", "content_mask_uri", "style_mask_uri")
    old = pa.schema([f for f in LEDGER_SCHEMA if f.name not in new])
    row = {"record_id": "x", "run_id": "r", "row_id": "a", "status": "done", "attempt": 1, "metadata": "{}"}
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([row], schema=old), sink)
    layout = OutputLayout(str(tmp_path))
    write_bytes_atomic(layout.new_ledger_part_uri(), sink.getvalue())
    (record,) = read_ledger(layout).to_pylist()
    assert record["row_id"] == "a" and all(record[name] is None for name in new)


@pytest.mark.usefixtures("local_ray")
def test_a_manifest_run_with_masked_unmasked_and_bad_mask_rows(tmp_path: Path) -> None:
    m = masks(tmp_path)
    contents = write_images(tmp_path / "in", "content", 6, seed=9)
    style = write_images(tmp_path / "in", "style", 1, seed=10, shape=(48, 48))[0]
    manifest = write_manifest(tmp_path / "m.parquet", mixed_rows(contents, style, m))
    out = str(tmp_path / "out")
    summary = run_manifest(manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS, batch_size=6)
    assert (summary.done, summary.failed) == (3, 3), summary
    records = read_ledger(OutputLayout(out)).to_pylist()
    tag = {r["row_id"]: json.loads(r["metadata"])["tag"] for r in records}
    done = {tag[r["row_id"]]: r for r in records if r["status"] == "done"}
    assert set(done) == {"both", "content-only", "plain"}
    check_bad_rows({tag[r["row_id"]]: (r["error_kind"], r["error_message"]) for r in records if r["status"] == "failed"}, m)
    assert (done["both"]["content_mask_uri"], done["both"]["style_mask_uri"]) == (m["content"], m["style"])
    assert (done["plain"]["content_mask_uri"], done["plain"]["style_mask_uri"]) == (None, None)
    assert all(Path(r["output_uri"]).exists() for r in done.values())


@pytest.mark.usefixtures("local_ray")
def test_style_ratio_records_a_positive_beta_per_stage_in_the_ledger(tmp_path: Path) -> None:
    contents = write_images(tmp_path / "in", "content", 2, seed=11)
    style = write_images(tmp_path / "in", "style", 1, seed=12, shape=(48, 48))[0]
    manifest = write_manifest(tmp_path / "m.parquet", [{"content_uri": c, "style_uri": style} for c in contents])
    out = str(tmp_path / "out")
    params = StyleParams(schedule=((24, 1), (32, 1)), log_every=1, style_ratio=1.0)
    summary = run_manifest(manifest=manifest, out=out, params=params, weights=WEIGHTS)
    assert summary.done == 2, summary
    for record in read_ledger(OutputLayout(out)).to_pylist():
        betas = record["style_weights"]
        assert betas is not None and len(betas) == 2 and all(b > 0 for b in betas), betas
        assert betas != [params.style_weight] * 2  # measured per image, not the fixed weight
