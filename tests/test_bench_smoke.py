"""Smoke runs of the GPU benchmarks on CPU with tiny settings: they run, and print complete, positive figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> tuple[str, dict]:
    """`python -m bench.<module> ARGS` from the repository root, as the benchmarks are run."""
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    return proc.stdout, json.loads(last)


def test_gpu_throughput_runs_on_cpu() -> None:
    out, data = _run(
        "gpu_throughput",
        *("--size", "32", "--steps", "3", "--batches", "1,2", "--precisions", "fp32,bf16"),
        *("--reference-steps", "2", "--warmup-steps", "1"),
    )
    assert "| batch | precision |" in out and "needs CUDA" in out
    assert data["device_type"] == "cpu" and (data["size"], data["steps"]) == (32, 3)
    flops = data["flop_per_image_iteration"]
    assert set(flops) == {"forward", "backward", "gram", "total"}
    assert flops["total"] == flops["forward"] + flops["backward"] + flops["gram"] > 0
    # the analytical count and torch's FlopCounterMode must agree on the engine's real step
    assert abs(data["flop_counter_ratio"] - 1) < 0.02
    ref = data["reference"]
    assert ref["s_per_iteration"] > 0 and ref["images_per_hour"] > 0 and ref["useful_tflops"] > 0
    assert [(r["batch"], r["precision"]) for r in data["rows"]] == [
        (1, "fp32"), (2, "fp32"), (1, "bf16"), (2, "bf16")
    ]
    for row in data["rows"]:
        assert "error" not in row, row
        for key in ("wall_s", "images_per_hour", "tflops", "speedup_vs_reference"):
            assert row[key] > 0, (key, row)
        assert len(row["finals"]) == row["batch"] and all(f > 0 for f in row["finals"])
        assert row["peak_bytes_per_image"] is None  # CPU: no allocator statistics
        assert row["final_loss_diff_pct_vs_fp32"] >= 0
        if row["precision"] == "fp32":
            assert row["final_loss_diff_pct_vs_fp32"] == 0
    # a batch reproduces single-image runs: image 0 ends at the same loss in batches of 1 and 2
    fp32 = [r for r in data["rows"] if r["precision"] == "fp32"]
    assert abs(fp32[0]["finals"][0] - fp32[1]["finals"][0]) <= 1e-4 * fp32[0]["finals"][0]


def test_memory_model_runs_on_cpu() -> None:
    out, data = _run("memory_model", "--sizes", "32,48", "--batches", "1,2", "--precisions", "fp32,bf16")
    assert "measurement needs CUDA" in out
    assert data["device_type"] == "cpu"
    assert len(data["rows"]) == 2 * 2 * 2
    for row in data["rows"]:
        assert row["estimate_bytes"] > row["estimate_bytes_per_image"] * row["batch"] > 0
        assert row["measured_peak_bytes"] is None and row["ratio"] is None
        assert row["saved_for_backward_bytes_per_image"] > 0


def test_compile_drift_runs_on_cpu() -> None:
    out, data = _run("compile_drift", "--size", "32", "--steps", "1,2", "--backend", "aot_eager")
    assert "| steps | max |Δpixel|" in out and data["backend"] == "aot_eager"
    assert [r["steps"] for r in data["rows"]] == [1, 2]
    # aot_eager traces the step without fusing kernels: the same arithmetic as eager, so no drift at all
    assert all(r["max_pixel_diff"] == r["loss_rel_diff"] == 0.0 for r in data["rows"]), data


def test_gpu_suite_runs_every_section_on_cpu(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    out, _ = _run(
        "gpu_suite", "--json", str(path),
        *("--size", "32", "--steps", "4", "--steady-steps", "2", "--batches", "1,2", "--loss-batch", "2"),
        *("--reference-steps", "2", "--compile-backend", "aot_eager"),
    )
    data = json.loads(path.read_text())
    assert "| batch | precision |" in out and "end to end, 4 steps" in out
    assert data["device_type"] == "cpu" and data["auto_resolves_to"] == "fp32" and data["skipped"] == []
    assert data["reference"]["s_per_iteration"] > 0
    grid = [r for r in data["rows"] if r["compiled"] == "no"]
    assert [(r["batch"], r["precision"]) for r in grid] == [
        (1, "fp32"), (2, "fp32"), (1, "tf32"), (2, "tf32"), (1, "bf16"), (2, "bf16")
    ]
    for row in data["rows"]:
        assert "error" not in row, row
        assert row["images_per_hour"] > 0 and row["tflops"] > 0 and row["model_mib_per_image"] > 0
        assert row["peak_mib_per_image"] is None  # CPU: no allocator statistics
    deltas = data["loss"]["delta_pct_vs_fp32"]
    assert deltas["fp32"] == 0 and deltas["tf32"] == 0  # tf32 is plain fp32 off CUDA
    assert deltas["bf16"] > 0  # bf16 convolutions do change the result
    assert all(r["loss_delta_vs_fp32"] == deltas[r["precision"]] for r in grid)
    # bf16 halves the activations the memory model counts
    assert grid[4]["model_mib_per_image"] < grid[0]["model_mib_per_image"]
    compiled = [r for r in data["rows"] if r["compiled"] != "no"]
    assert [r["compiled"] for r in compiled] == ["default", "reduce-overhead"]
    assert all(r["compiled_ok"] for r in compiled)
    best = data["best"]
    assert data["full"][0]["batch"] == best["batch"] and data["full"][0]["steps"] == 4
    assert len(data["full"][0]["finals"]) == best["batch"]


def test_gpu_suite_skips_sections_past_its_budget(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    out, _ = _run("gpu_suite", "--json", str(path), "--size", "32", "--batches", "1", "--budget-s", "0")
    data = json.loads(path.read_text())
    assert data["skipped"][0] == "reference" and "loss" in data["skipped"] and data["rows"] == []
    assert "skipped reference" in out


def test_quality_variants_runs_resumes_and_draws_its_sheet(tmp_path: Path) -> None:
    args = ("--quick", "--only", "gram,gram ema c2f", "--out", str(tmp_path), "--sheet", str(tmp_path / "s.jpg"))
    out, data = _run("quality_variants", *args)
    assert data["variants"] == ["gram", "gram ema c2f"] and "gram_err" in out
    (pair,) = data["pairs"].values()
    for name, figures in pair.items():
        assert 0 < figures["gram_err"] and 0 < figures["content_dist"], (name, figures)
    assert pair["gram"]["compute"] == 1.0 and 0 < pair["gram ema c2f"]["compute"] < 1
    again, resumed = _run("quality_variants", *args)
    assert "gram_err 0." not in again and resumed["pairs"] == data["pairs"]  # nothing recomputed
    assert Image.open(tmp_path / "s.jpg").size == (4 * 160, 160)  # content, style, two variants


def test_scale_bench_times_resume_status_report_and_compaction_locally_and_on_s3() -> None:
    for extra in ((), ("--s3",)):
        _, data = _run("scale", "--rows", "200", "--done-fraction", "0.5", "--parts", "7", "--json", *extra)
        assert (data["rows"], data["done"], data["parts"]) == (200, 100, 7)
        assert data["backend"] == ("s3-moto" if extra else "local")
        for key in ("plan_s", "status_s", "report_s", "compact_s", "driver_rss_mb"):
            assert data[key] > 0, (key, data)
    _, data = _run("scale", "--rows", "100", "--no-report", "--json")
    assert data["report_s"] is None and data["parts"] == 7  # 50 done rows in 8-row batches: 7 flushes
