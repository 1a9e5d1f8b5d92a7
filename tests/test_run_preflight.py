"""`nst run` rejects a `--weights` value that cannot work before Ray starts: one line, exit 1, nothing written.

Each case runs the real command in its own process with a fresh RAY_TMPDIR; a Ray that started would have
made its session folder there, and a run that started would have written OUT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"
REPO = Path(__file__).resolve().parents[1]
PASSED_THROUGH = ("PATH", "HOME", "PYTHONPATH")


def manifest(tmp_path: Path) -> str:
    path = tmp_path / "m.parquet"
    content = sorted((EXAMPLES / "content").glob("*.jpg"))[0]
    style = sorted((EXAMPLES / "style").glob("*"))[0]
    pq.write_table(pa.table({"content_uri": [str(content)], "style_uri": [str(style)]}), path)
    return str(path)


def nst_run(tmp_path: Path, *args: str, prelude: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """`nst run` through the CLI's entry point; `prelude` is Python run first (to point a URL at 127.0.0.1)."""
    code = f"{prelude}\nimport sys\nfrom pipeline.cli import main\nsys.argv = ['nst', *sys.argv[1:]]\nmain()"
    environment = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    environment |= {"RAY_TMPDIR": str(tmp_path / "ray"), "RAY_USAGE_STATS_ENABLED": "0", **env}
    return subprocess.run(
        [sys.executable, "-c", code, "run", manifest(tmp_path), "--out", str(tmp_path / "out"), "--size", "32",
         "--steps", "1", *args],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def assert_refused_before_ray(proc: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "\x1b[" not in proc.stderr
    assert not (tmp_path / "ray").exists(), "Ray was started"
    assert not (tmp_path / "out").exists(), "the run wrote to --out"
    return lines[0]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ("randum:0", "did you mean random:0?"),
        ("random:x", "non-negative integer SEED"),
        ("imagnet", "did you mean imagenet?"),
        ("missing/vgg19.pth", "no such file"),
    ],
)
def test_bad_weights_fail_in_one_line_before_ray(tmp_path: Path, weights: str, expected: str) -> None:
    # On exit the process prints which heavy modules it loaded: a bad spec must not even import them.
    prelude = (
        "import atexit, sys\n"
        "atexit.register(lambda: print([m for m in ('torch', 'ray') if m in sys.modules]))"
    )
    proc = nst_run(tmp_path, "--weights", weights, prelude=prelude)
    line = assert_refused_before_ray(proc, tmp_path)
    assert expected in line and weights in line
    assert proc.stdout.strip() == "[]"


def test_weights_folder_and_unreadable_file_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    assert "is a folder" in assert_refused_before_ray(nst_run(tmp_path, "--weights", str(folder)), tmp_path)
    if os.geteuid() != 0:  # root reads any file
        locked = folder / "vgg.pth"
        locked.write_bytes(b"x")
        locked.chmod(0)
        line = assert_refused_before_ray(nst_run(tmp_path, "--weights", str(locked)), tmp_path)
        assert "cannot read" in line


def test_sha256_with_random_weights_is_refused(tmp_path: Path) -> None:
    proc = nst_run(tmp_path, "--weights", "random:0", "--weights-sha256", "0" * 64)
    assert "--weights-sha256 applies to a weights file" in assert_refused_before_ray(proc, tmp_path)


def test_offline_imagenet_fails_up_front_with_how_to_supply_it(tmp_path: Path) -> None:
    # The ImageNet URL points at a closed port on 127.0.0.1: what an offline machine sees, without network.
    prelude = (
        "import nst_core.vgg as vgg\n"
        "vgg._imagenet_weights_url = lambda arch: 'http://127.0.0.1:9/vgg19-dcbb9e9d.pth'"
    )
    proc = nst_run(tmp_path, "--weights", "imagenet", prelude=prelude, TORCH_HOME=str(tmp_path / "torch"))
    line = assert_refused_before_ray(proc, tmp_path)
    assert "--weights imagenet" in line and "TORCH_HOME" in line and "--weights PATH_OR_URI" in line
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in line
