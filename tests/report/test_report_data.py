"""What `nst report` reads from a real run: rows, failures, curves, parameters, optional metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import read_ledger

from nst_core.params import DEFAULT_STYLE_LAYERS
from pipeline.report import build_report, link_base
from pipeline.report.data import downsample, load_report_data
from pipeline.report.svg import curve_plot


def test_rows_failures_curves_and_sweep_parameters(small_run: dict[str, Any]) -> None:
    data = load_report_data(small_run["out"])
    assert len(data.rows) == 6
    done = [r for r in data.rows if r["status"] == "done"]
    failed = [r for r in data.rows if r["status"] == "failed"]
    assert len(done) == 5 and len(failed) == 1
    bad = failed[0]
    assert bad["error_kind"] == "bad_input" and "broken.png" in bad["error"]
    assert bad["content_uri"] == small_run["bad"]
    # Manifest order, with the user's columns carried as metadata.
    assert [r["metadata"]["tag"] for r in data.rows] == [r["tag"] for r in small_run["rows"]]
    for row in done:
        assert row["image"] == f"images/{row['id']}.png"
        assert row["curve"]["step"] == [0, 1, 2, 3, 4]
        assert row["curve"]["total"][-1] == pytest.approx(row["values"]["loss_total"], rel=1e-6)
    # The sweep row differs from the run defaults only by its style weight.
    params = {r["metadata"]["tag"]: r["params"] for r in data.rows}
    assert params["sweep"] == {"style_weight": "1000"}  # compact numbers: no "1000.0", no "1000000.0"
    assert params["c0s0"] == {}
    assert data.defaults["style_weight"] == "1e6"
    # Seconds per row are the row's share of its batch's device time, never more than the batch's wall time.
    for row in done:
        assert 0 < row["values"]["optimise_seconds"] <= row["values"]["seconds"]
    device = [r["values"]["optimise_seconds"] for r in done]
    mean = sum(w["mean_seconds"] * w["rows"] for w in data.workers) / 5
    assert mean == pytest.approx(sum(device) / 5)
    # The workers' metrics are offered for sorting, headline ones first; failed rows have none.
    assert data.numeric[:5] == ["content_dist", "gram_err", "ssim", "colour_dist_style", "clipped"]
    assert {f"gram_err_{layer}" for layer in DEFAULT_STYLE_LAYERS} <= set(data.numeric)
    assert all("ssim" in r["values"] for r in done) and "ssim" not in bad["values"]
    assert data.workers and sum(w["rows"] for w in data.workers) == 5
    assert data.status["done"] == 5 and data.status["failed"] == 1


def test_metric_columns_are_read_when_the_ledger_has_them(run_with_metrics: str) -> None:
    data = load_report_data(run_with_metrics)
    assert data.numeric[:3] == ["content_dist", "gram_err", "ssim"]
    for row in data.rows:
        if row["status"] == "done":
            v = row["values"]
            assert 0 < v["content_dist"] and 0 < v["gram_err"] and -1 <= v["ssim"] <= 1
            assert {"gram_err_relu1_1", "colour_dist_style", "clipped"} <= set(v)
        else:
            assert "ssim" not in row["values"]
    # The pipeline's own reader still reads a ledger with extra metric columns.
    assert read_ledger(OutputLayout(run_with_metrics)).num_rows == 6


def test_unreadable_manifest_is_a_note_not_a_failure(small_run: dict[str, Any], tmp_path: Path) -> None:
    data = load_report_data(small_run["out"], manifest=str(tmp_path / "gone.parquet"))
    assert any("per-row parameters unavailable for 1 row(s)" in n for n in data.notes)
    # Done rows' parameters come from the ledger itself; only the failed row's are unknown.
    params = {r["metadata"]["tag"]: r["params"] for r in data.rows}
    assert params["sweep"] == {"style_weight": "1000"} and params["c0s0"] == {} and params["broken"] == {}


def test_compact_numbers() -> None:
    from pipeline.report.data import compact_number, compact_text

    assert [compact_number(v) for v in (1e7, 1e5, 1.5e8, 2.5e-4, 0.35, 300.0, 1000.0, 0.0)] == [
        "1e7", "1e5", "1.5e8", "2.5e-4", "0.35", "300", "1000", "0",
    ]
    assert compact_text("10000000.0") == "1e7" and compact_text("500") == "500"
    assert compact_text("0.5,1e-05") == "0.5,1e-5" and compact_text("256:100,512:50") == "256:100,512:50"
    assert compact_text("relu1_1,relu2_1") == "relu1_1,relu2_1"


def test_thumbnails_are_made_once_and_remade_only_when_missing(small_run: dict[str, Any], tmp_path: Path) -> None:
    out = small_run["out"]
    first = build_report(out=out, output=str(tmp_path / "r1.html"))
    thumbs = Path(out) / "_report" / "thumbs"
    made = sorted(p for p in thumbs.rglob("*.jpg"))
    # 5 outputs + 4 readable inputs; the corrupt content has none.
    assert len(made) == 9 and first.thumbnails == 9
    stamps = {p: p.stat().st_mtime_ns for p in made}
    victim = made[0]
    victim.unlink()
    build_report(out=out, output=str(tmp_path / "r2.html"))
    assert victim.exists()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in made if p != victim)


def test_links_are_relative_or_the_report_is_self_contained(small_run: dict[str, Any], tmp_path: Path) -> None:
    out = small_run["out"]
    assert link_base(out, os.path.join(out, "report.html")) == ""
    beside = tmp_path / "reports" / "night.html"
    assert link_base(out, str(beside)) == os.path.relpath(out, beside.parent) + "/"
    assert link_base("s3://bucket/run", "s3://bucket/reports/r.html") == "../run/"
    assert link_base("s3://bucket/run", "s3://other/r.html") is None
    assert link_base(out, "memory://elsewhere/r.html") is None

    result = build_report(out=out, output="memory://elsewhere/r.html")
    assert result.embedded
    import fsspec

    html = fsspec.filesystem("memory").cat_file("/elsewhere/r.html").decode()
    payload = json.loads(html.split('id="nst-data">', 1)[1].split("</script>", 1)[0])
    done = [r for r in payload["rows"] if r["st"] == "done"]
    assert all(r["th"].startswith("data:image/jpeg;base64,") and "img" not in r for r in done)
    with pytest.raises(ValueError, match="cannot link"):
        build_report(out=out, output="memory://elsewhere/r2.html", embed=False)


def test_curve_plot_is_log_scaled_and_skips_empty_series() -> None:
    plot = curve_plot({"step": [0, 10, 20], "total": [100.0, 10.0, 1.0], "content": [0.0, 1.0, 10.0],
                       "tv": [0.0, 0.0, 0.0]}, width=200, height=100)
    assert plot is not None
    assert plot["lines"]["total"] == "0,0 100,50 200,100"
    assert plot["lines"]["content"] == "100,100 200,50"  # the zero at step 0 has no log
    assert "tv" not in plot["lines"]
    assert plot["y"] == pytest.approx([1.0, 100.0])
    assert downsample(1000, 48)[:2] == [0, 21] and downsample(1000, 48)[-1] == 999 and len(downsample(1000, 48)) == 48


def test_metrics_from_columns_and_from_a_json_column() -> None:
    from pipeline.report.data import record_metrics

    rec = {"metric_ssim": 0.5, "metric_clipped": None, "metric_gram_err": float("nan"),
           "metrics": json.dumps({"gram_err_relu1_1": 0.25, "ssim": 0.4}), "loss_total": 3.0}
    assert record_metrics(rec) == {"ssim": 0.5, "gram_err_relu1_1": 0.25}  # columns win over the JSON copy


def test_ledger_records_each_done_rows_effective_parameters(small_run: dict[str, Any]) -> None:
    records = read_ledger(OutputLayout(small_run["out"])).to_pylist()
    done = {json.loads(r["metadata"])["tag"]: r for r in records if r["status"] == "done"}
    # Run-level --size 32 --steps 4 --log-every 1, each written against the library defaults.
    run_level = {"size": 32, "steps": 4, "log_every": 1}
    assert json.loads(done["c0s0"]["params"]) == run_level
    assert json.loads(done["sweep"]["params"]) == run_level | {"style_weight": 1000.0}
    # URIs and the manifest path are absolute, so a report built from another directory keeps them.
    run = json.loads((Path(small_run["out"]) / "run.json").read_text())
    assert Path(run["manifest"]).is_absolute() and Path(run["out"]).is_absolute()
    assert all(Path(r["output_uri"]).is_absolute() for r in done.values())


def test_a_ledger_part_without_the_newer_columns_still_reads(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pipeline.store.ledger import row_states
    from pipeline.store.records import LEDGER_SCHEMA

    layout = OutputLayout(str(tmp_path))
    old = [n for n in LEDGER_SCHEMA.names if n not in ("params", "optimise_seconds", "metrics")]
    row = {n: None for n in old} | {"record_id": "r1", "run_id": "x", "row_id": "a", "status": "done",
                                    "attempt": 1, "metadata": "{}"}  # fmt: skip
    table = pa.Table.from_pylist([row], schema=pa.schema([LEDGER_SCHEMA.field(n) for n in old]))
    Path(layout.ledger_dir()).mkdir(parents=True)
    pq.write_table(table, str(Path(layout.ledger_dir()) / "part-old.parquet"))
    read = read_ledger(layout)
    assert read.column("params").to_pylist() == [None] and read.column("optimise_seconds").to_pylist() == [None]
    assert row_states(read)["a"].done
