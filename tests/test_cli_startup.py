"""`nst --help`, `nst run --help`, shell completion and usage errors never load torch, torchvision or Ray.

Each check runs in a fresh interpreter (this test process has long since imported everything): it imports
the CLI module, renders the help or a completion through the real entry point, and reports which heavy
modules ended up in sys.modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "ray")

PROBE = """
import json, os, sys
args = json.loads(sys.argv[1])
heavy_names = sys.argv[2]
sys.argv = ["nst", *args]
from pipeline.cli.app import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
heavy = json.loads(heavy_names)
print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}), file=sys.stderr)
"""


def probe(args: list[str], **env: str) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    return result, proc.stdout


@pytest.mark.parametrize(
    "args",
    [["--help"], ["-h"], ["run", "--help"], ["run", "-h"], ["stylize", "--help"], ["demo", "--help"],
     ["manifest", "build", "-h"], ["report", "-h"], ["status", "-h"], ["--version"]],
)  # fmt: skip
def test_help_does_not_import_torch_or_ray(args: list[str]) -> None:
    result, stdout = probe(args)
    assert result["code"] == 0
    assert result["loaded"] == [], f"{' '.join(args)} imported {result['loaded']}"
    assert stdout.strip()


def test_completion_does_not_import_torch_or_ray() -> None:
    result, stdout = probe([], _NST_COMPLETE="complete_bash", COMP_WORDS="nst run --weig", COMP_CWORD="2")
    assert result["loaded"] == []
    assert "--weights" in stdout.split()


def test_usage_error_does_not_import_torch_or_ray() -> None:
    result, _ = probe(["run", "m.parquet", "--out", "o", "--steps", "many"])
    assert result["code"] == 2
    assert result["loaded"] == []


def test_version_names_the_installed_package() -> None:
    from importlib import metadata

    _, stdout = probe(["--version"])
    assert stdout.strip() == f"nst {metadata.version('nst-pipeline')}"
