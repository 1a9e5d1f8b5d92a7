"""Run the real `nst` entry point (pipeline.cli.app.main: one-line errors, exit codes) inside the test process,
or as its own process.

Inside the process, `nst run` reuses the module's already started Ray instead of starting its own, so a run-level
error case costs seconds, not a Ray start. That Ray keeps forwarding worker output to stderr while the command
prints its error, so a case whose workers print (a worker that fails to start logs its traceback) runs as its
own process, as users run it: there `nst` shuts its embedded Ray down, which ends the forwarding, before it
prints the error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from nst_core.params import StyleParams

FAST_S3 = {"connect_timeout": 1, "read_timeout": 5, "retries": {"max_attempts": 2}}
"""botocore settings for tests: a dead endpoint answers within seconds instead of minutes."""


def fast_options(options: dict[str, Any]) -> dict[str, Any]:
    return {**options, "config_kwargs": FAST_S3}


def option_flags(options: dict[str, Any], prefix: str = "") -> list[str]:
    """Storage options as repeated `--storage-option dotted.key=value` flags."""
    import json

    flags: list[str] = []
    for key, value in options.items():
        if isinstance(value, dict):
            flags += option_flags(value, f"{prefix}{key}.")
        else:
            flags += ["--storage-option", f"{prefix}{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return flags


def run_args(manifest: str, out: str, params: StyleParams, *extra: str) -> list[str]:
    return [
        "run",
        manifest,
        "--out",
        out,
        "--size",
        str(params.size),
        "--steps",
        str(params.steps),
        "--no-progress",
        *extra,
    ]


def nst(args: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `nst ARGS`."""
    from pipeline.cli.app import main

    monkeypatch.setattr(sys, "argv", ["nst", *args])
    code: Any = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    captured = capfd.readouterr()
    return int(code or 0), captured.out, captured.err


def nst_process(args: list[str], timeout: float = 180) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m pipeline.cli ARGS` in a clean environment of its own."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH", "RAY_TMPDIR") if k in os.environ}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
