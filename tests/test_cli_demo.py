"""`nst demo` as a newcomer runs it (README): its own process, a clean environment, the bundled examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"


def demo(out: Path, torch_home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "RAY_TMPDIR") if k in os.environ}
    env |= {"TORCH_HOME": str(torch_home), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "demo", "--out", str(out), "--size", "32", "--steps", "2", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def test_demo_stylises_every_bundled_pair_then_finds_them_done(tmp_path: Path) -> None:
    pairs = len(list((EXAMPLES / "content").glob("*.jpg"))) * len(list((EXAMPLES / "style").glob("*.*")))
    assert pairs >= 4
    out = tmp_path / "demo"
    first = demo(out, tmp_path / "torch")
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"demo: {pairs} rows" in first.stdout + first.stderr
    assert "random weights" in first.stdout + first.stderr  # no ImageNet weights in an empty TORCH_HOME
    assert pq.read_table(out / "manifest.parquet").num_rows == pairs
    assert len(list((out / "run" / "images").iterdir())) == pairs
    again = demo(out, tmp_path / "torch")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((out / "run" / "images").iterdir())) == pairs
