"""The Ray that `nst run` starts for itself stays on loopback, from an environment the user never prepared.

`nst run` runs as its own process with only PATH, HOME, PYTHONPATH and RAY_TMPDIR passed through (no
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, no RAY_ADDRESS); while it works, every listening socket of every
process under it is collected with psutil, and none may be on an address other than loopback.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

try:
    import psutil
except ImportError:  # Ray bundles psutil and puts it on sys.path when imported
    importlib.import_module("ray")
    import psutil

from pipeline.cluster.runtime import LOOPBACK_ENV, loopback_only, resolve_address

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"
REPO = Path(__file__).resolve().parents[1]
PASSED_THROUGH = ("PATH", "HOME", "PYTHONPATH", "RAY_TMPDIR")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env["RAY_USAGE_STATS_ENABLED"] = "0"  # no report to a remote server; unrelated to bind addresses
    return {**env, **extra}


def listening(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, IP, port) of every listening TCP socket of `root` and its descendants."""
    found = set()
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return found
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def write_manifest(path: Path, rows: int) -> None:
    contents = sorted((EXAMPLES / "content").glob("*.jpg"))
    style = sorted((EXAMPLES / "style").glob("*"))[0]
    pq.write_table(
        pa.table({"content_uri": [str(c) for c in contents[:rows]], "style_uri": [str(style)] * rows}), path
    )


def nst_run(manifest: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`nst run` without a terminal (stderr is a pipe), as under nohup, CI or `ray job logs -f`."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out), "--weights", "random:0",
         "--size", "48", "--steps", "40", "--batch-size", "1", "--progress-interval", "1", *extra],
        cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    sockets: set[tuple[str, str, int]]


def watch(proc: subprocess.Popen[bytes]) -> Finished:
    """Wait for the run, collecting the listening sockets of its process tree while it works."""
    sockets: set[tuple[str, str, int]] = set()
    try:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            sockets |= listening(root)
            time.sleep(0.3)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Finished(proc.returncode, stdout.decode(), stderr.decode(), sockets)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Finished]:
    base = tmp_path_factory.mktemp("embedded")
    manifest, out = base / "m.parquet", base / "out"
    write_manifest(manifest, 2)
    finished = watch(nst_run(manifest, out))
    assert finished.returncode == 0, finished.stderr[-3000:]
    return manifest, out, finished


def test_embedded_ray_of_nst_run_listens_on_loopback_only(first_run: tuple[Path, Path, Finished]) -> None:
    _, out, finished = first_run
    assert json.loads((out / "run.json").read_text())["stats"]["done"] == 2
    names = {name for name, _, _ in finished.sockets}
    assert any("raylet" in n for n in names) and any("gcs_server" in n for n in names), sorted(finished.sockets)
    exposed = sorted(s for s in finished.sockets if not is_loopback(s[1]))
    assert not exposed, f"embedded Ray listens beyond loopback: {exposed}"
    workers = json.loads((out / "run.json").read_text())["workers"]
    assert {w["node"] for w in workers} == {"127.0.0.1"}


PROGRESS = re.compile(
    r"^progress: done (\d+), failed (\d+), remaining (\d+) of (\d+); [\d,]+ rows/h; elapsed \S+; ETA \S+$", re.M
)


def test_without_a_terminal_progress_is_plain_lines_then_the_summary(
    first_run: tuple[Path, Path, Finished],
) -> None:
    stderr = first_run[2].stderr
    assert "run: 2 row(s) to do of 2 in the manifest" in stderr
    assert "\x1b[" not in stderr  # no colour codes or cursor movement in a log
    lines = PROGRESS.findall(stderr)
    assert len(lines) >= 2, stderr[-3000:]  # at 1 s intervals on a run of several seconds
    assert all(int(total) == 2 and int(d) + int(f) + int(r) <= 2 for d, f, r, total in lines)
    assert lines[-1][:3] == ("2", "0", "0")  # the last line is the final state
    assert stderr.index("progress:") < stderr.index("done now")  # then the summary table


def test_a_resumed_run_says_how_many_rows_were_already_done(first_run: tuple[Path, Path, Finished]) -> None:
    manifest, out, _ = first_run
    write_manifest(manifest, 3)
    finished = watch(nst_run(manifest, out, "--json"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads(finished.stdout)
    assert summary["already_done"] == 2 and summary["done"] == 1
    assert "run: 1 row(s) to do of 3 in the manifest; 2 of 3 already done by earlier runs" in finished.stderr


def test_resolve_address_follows_rays_own_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) is None
    assert resolve_address("local") is None
    assert resolve_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert resolve_address(None) == "10.0.0.5:6379"
    assert resolve_address("local") is None  # --address local forces an embedded Ray
    assert resolve_address("ray://h:10001") == "ray://h:10001"
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert resolve_address(None) is None


def test_loopback_only_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOPBACK_ENV, raising=False)
    with loopback_only():
        assert os.environ[LOOPBACK_ENV] == "0"
    assert LOOPBACK_ENV not in os.environ
    monkeypatch.setenv(LOOPBACK_ENV, "1")
    with loopback_only():
        assert os.environ[LOOPBACK_ENV] == "0"
    assert os.environ[LOOPBACK_ENV] == "1"
