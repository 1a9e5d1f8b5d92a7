"""Whole-file validation: every problem at once, file checks in parallel, summary figures from a formula."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from PIL import Image

import nst_core.images
from jobs import build_manifest, check_images, summarise_manifest, validate_manifest
from nst_core.images import DEFAULT_MAX_PIXELS
from tests.jobs.manifest_helpers import write_image, write_table


def test_check_files_reports_missing_and_corrupt_files_with_rows(image_dir: Path, tmp_path: Path) -> None:
    good = str(image_dir / "content" / "a.png")
    style = str(image_dir / "style" / "wave.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    truncated = tmp_path / "truncated.png"
    data = write_image(tmp_path / "full.png", size=(64, 64)).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    table = pa.table(
        {
            "content_uri": [good, str(tmp_path / "missing.jpg"), str(corrupt), good, str(truncated)],
            "style_uri": [style, style, style, str(tmp_path / "missing.jpg"), style],
            "steps": [1, 2, 3, 4, 5],
        }
    )
    path = write_table(tmp_path / "m.parquet", table)
    assert validate_manifest(path).ok  # without --check-files nothing is opened
    report = validate_manifest(path, check_files=True, workers=4)
    assert report.files_checked == 5  # missing.jpg is referenced twice, opened once
    found = {(p.index, p.column): p.message for p in report.problems}
    assert set(found) == {(1, "content_uri"), (2, "content_uri"), (3, "style_uri"), (4, "content_uri")}
    assert "file not found" in found[(1, "content_uri")] and "file not found" in found[(3, "style_uri")]
    assert (
        found[(2, "content_uri")] == f"content_uri {str(corrupt)!r}: not an image file (unrecognised format)"
    )
    assert found[(4, "content_uri")].startswith(
        f"content_uri {str(truncated)!r}: corrupt or truncated image ("
    )
    assert report.bad_rows == 4


def test_check_files_refuses_what_the_run_refuses(tmp_path: Path) -> None:
    """The engine's decoder judges: a valid PNG over its pixel limit passes PIL (a warning only) but not a run."""
    side = 10_000
    huge = tmp_path / "huge.png"
    Image.new("1", (side, DEFAULT_MAX_PIXELS // side + 1)).save(huge)  # 11 kB, one pixel row over the limit
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    grey16 = tmp_path / "grey16.png"
    Image.new("I;16", (40, 30), 5000).save(grey16)
    failures = check_images([str(huge), str(empty), str(grey16)], workers=3)
    assert set(failures) == {str(huge), str(empty)}
    assert failures[str(huge)].startswith(f"10000x{DEFAULT_MAX_PIXELS // side + 1} = ")
    assert "exceeds the limit of 89478485 (decompression-bomb protection)" in failures[str(huge)]
    assert failures[str(empty)] == "empty file"


def test_check_files_bounds_concurrent_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads run `workers` at once but decodes (a float32 copy of the whole image each) only `decoders`."""
    uris = [str(write_image(tmp_path / f"{i}.png")) for i in range(12)]
    lock = threading.Lock()
    active = peak = calls = 0

    def slow_decode(data: bytes, *, name: str | None = None) -> torch.Tensor:
        nonlocal active, peak, calls
        with lock:
            active += 1
            calls += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return torch.zeros(3, 1, 1)

    monkeypatch.setattr(nst_core.images, "decode_image", slow_decode)
    assert check_images(uris, workers=8, decoders=2) == {}
    assert calls == 12 and 1 <= peak <= 2


def test_importing_jobs_does_not_load_torch() -> None:
    """Only --check-files needs the decoder; build, validate and show start without torch (~1 s, ~500 MB)."""
    code = "import sys, jobs; jobs.check_image; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_problem_list_is_capped_but_counted(tmp_path: Path) -> None:
    table = pa.table({"content_uri": ["c"] * 50, "style_uri": ["s"] * 50, "steps": list(range(-49, 1))})
    report = validate_manifest(write_table(tmp_path / "m.parquet", table), max_problems=10, batch_rows=7)
    assert report.problem_count == 50 and report.bad_rows == 50 and len(report.problems) == 10
    assert [p.index for p in report.problems] == list(range(10))


def test_summary_counts_and_work_estimate(tmp_path: Path) -> None:
    table = pa.table(
        {
            "content_uri": ["a", "b", "a", "c"],
            "style_uri": ["s", "s", "t", "s"],
            "size": [256, 256, None, 64],
            "steps": [10, 10, 20, -1],  # the last row is invalid and not costed
            "schedule": [None, None, "128:5,256:3", None],
        }
    )
    summary = summarise_manifest(write_table(tmp_path / "m.parquet", table), throughput=2.0)
    assert (summary.rows, summary.problem_rows, summary.distinct_contents, summary.distinct_styles) == (
        4,
        1,
        3,
        2,
    )
    expected = 2 * 256**2 * 10 + (128**2 * 5 + 256**2 * 3)
    assert summary.pixel_iterations == expected
    assert abs(summary.gpu_hours - expected / (2.0 * 512**2) / 3600) < 1e-15
    assert summary.parameters["size"] == {"256": 2, "512": 1}
    assert summary.parameters["schedule"] == {"none": 2, "128:5,256:3": 1}


def test_built_manifest_validates(image_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "m.parquet")
    build_manifest(content=[str(image_dir / "content")], style=[str(image_dir / "style")], output=out)
    report = validate_manifest(out, check_files=True)
    assert report.ok and report.rows == 6 and report.files_checked == 5
