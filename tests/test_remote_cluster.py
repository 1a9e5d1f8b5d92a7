"""`nst run --address` against a Ray cluster started with `ray start`, as a user would run it.

A head node runs as `ray start --head --block` on 127.0.0.1 and a worker node joins it from another process
(tests/ray_worker_node.py says why not `ray start --address`); the run is driven by the `nst` command in a
third process. A node on 127.0.0.2 then plays "another machine", to check that plain local paths are
refused before any work while `file://` paths (declared shared mounts) are accepted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"
RAY = str(Path(sys.executable).with_name("ray"))
NST = str(Path(sys.executable).with_name("nst"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cluster_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # with --node-ip-address 127.0.0.1: loopback only
        "RAY_USAGE_STATS_ENABLED": "0",
        "NST_CACHE_DIR": str(tmp / "cache"),
    }


def start_head(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`ray start --head --block` in its own session, so stopping it stops exactly this node's processes."""
    return subprocess.Popen(
        [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_head_on_a_free_port(
    args: list[str], env: dict[str, str], log: Path, attempts: int = 3
) -> tuple[subprocess.Popen[bytes], int]:
    """A port probed free can be taken before Ray binds it: a head that exits before it reports
    "Ray runtime started." is started again on another port."""
    for _ in range(attempts):
        port = free_port()
        proc = start_head(["--head", "--port", str(port), *args], env, log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if b"Ray runtime started." in log.read_bytes():
                return proc, port
            time.sleep(0.2)
        stop_node(proc)
    raise AssertionError(f"the Ray head did not start in {attempts} attempts:\n{log.read_text()[-2000:]}")


def stop_node(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_worker(
    address: str, env: dict[str, str], log: Path, node_ip: str = "127.0.0.1"
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("ray_worker_node.py")), address, "1", node_ip],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_nodes(address: str, env: dict[str, str], count: int, timeout: float = 90) -> None:
    code = (
        "import ray, time\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        f"deadline = time.time() + {timeout}\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.time() < deadline: time.sleep(0.5)\n"
        "print(sum(n['Alive'] for n in ray.nodes()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout + 30
    )
    assert out.stdout.strip().endswith(str(count)), out.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("raycluster")
    ray_tmp = tempfile.mkdtemp(prefix="nst-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = cluster_env(tmp)
    dashboard = free_port()  # the job API of `ray job submit`
    head, port = start_head_on_a_free_port(
        ["--num-cpus", "1", "--num-gpus", "0", "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dashboard), "--temp-dir", ray_tmp],
        env, tmp / "head.log",
    )  # fmt: skip
    worker = None
    try:
        address = f"127.0.0.1:{port}"
        wait_for_nodes(address, env, 1)
        worker = start_worker(address, env, tmp / "worker.log")
        wait_for_nodes(address, env, 2)
        yield {"address": address, "tmp": str(tmp), "dashboard": f"http://127.0.0.1:{dashboard}", **env}
    finally:
        for proc in (worker, head):
            if proc is not None:
                stop_node(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def write_manifest(path: Path) -> int:
    contents = sorted((EXAMPLES / "content").glob("*.jpg"))[:2]
    styles = sorted((EXAMPLES / "style").glob("*"))
    rows = [(str(c), str(s)) for c in contents for s in styles]
    pq.write_table(pa.table({"content_uri": [c for c, _ in rows], "style_uri": [s for _, s in rows]}), path)
    return len(rows)


def nst(cluster: dict[str, str], *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in cluster.items() if k not in ("address", "tmp", "dashboard")} | extra_env
    return subprocess.run([NST, *args], env=env, capture_output=True, text=True, timeout=400)


FAST = ["--weights", "random:0", "--size", "32", "--steps", "3", "--no-progress"]


def test_run_against_a_started_cluster_completes_every_row(cluster: dict[str, str], tmp_path: Path) -> None:
    manifest = tmp_path / "m.parquet"
    rows = write_manifest(manifest)
    out = tmp_path / "out"
    proc = nst(cluster, "run", str(manifest), "--out", str(out), "--address", cluster["address"],
               "--workers", "2", "--json", *FAST)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["done"] == rows and summary["failed"] == 0
    assert len(list((out / "images").iterdir())) == rows
    # the second run of the same command finds everything done
    again = nst(
        cluster, "run", str(manifest), "--out", str(out), "--address", cluster["address"], "--json", *FAST
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["already_done"] == rows


def test_ray_job_submit_and_ray_address_reach_the_cluster(cluster: dict[str, str], tmp_path: Path) -> None:
    """`ray job submit -- nst run … --address auto` (the job's driver finds its cluster through the
    RAY_ADDRESS the job supervisor sets), and a plain `nst run` given only $RAY_ADDRESS."""
    manifest = tmp_path / "m.parquet"
    rows = write_manifest(manifest)
    env = {k: v for k, v in cluster.items() if k not in ("address", "tmp", "dashboard")}
    entry = [NST, "run", str(manifest), "--out", str(tmp_path / "job"), "--address", "auto", *FAST]
    proc = subprocess.run(
        [RAY, "job", "submit", "--address", cluster["dashboard"], "--", *entry],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0 and "succeeded" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
    assert len(list((tmp_path / "job" / "images").iterdir())) == rows
    plain = nst(cluster, "run", str(manifest), "--out", str(tmp_path / "env"), "--json", *FAST,
                RAY_ADDRESS=cluster["address"])  # fmt: skip
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads(plain.stdout)["done"] == rows
    record = json.loads((tmp_path / "env" / "run.json").read_text())
    assert record["address"] == cluster["address"]  # joined the started cluster, not an embedded one


def test_with_another_machine_local_paths_are_refused_and_shared_mounts_run(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cluster.items() if k not in ("address", "tmp", "dashboard")}
    other = start_worker(cluster["address"], env, tmp_path / "other.log", node_ip="127.0.0.2")
    try:
        wait_for_nodes(cluster["address"], env, 3)
        manifest = tmp_path / "m.parquet"
        rows = write_manifest(manifest)
        out = tmp_path / "out"
        proc = nst(cluster, "run", str(manifest), "--out", str(out), "--address", cluster["address"], *FAST)
        assert proc.returncode == 1
        assert "local path" in proc.stderr and "shared" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (out / "images").exists()
        # No --address with $RAY_ADDRESS set joins that cluster, as Ray's own tools do (under
        # `ray job submit`), so the same refusal proves the run reached the multi-machine cluster ...
        via_env = nst(cluster, "run", str(manifest), "--out", str(out), *FAST, RAY_ADDRESS=cluster["address"])
        assert via_env.returncode == 1 and "local path" in via_env.stderr, via_env.stderr[-3000:]
        assert not (out / "images").exists()
        # ... and --address local forces an embedded, single-machine Ray even then: it runs every row.
        local = nst(cluster, "run", str(manifest), "--out", str(tmp_path / "local"), "--address", "local",
                    "--json", *FAST, RAY_ADDRESS=cluster["address"])  # fmt: skip
        assert local.returncode == 0, local.stderr[-3000:]
        assert json.loads(local.stdout)["done"] == rows
        # The same files named as file:// URIs are the user's statement that every node mounts them.
        table = pq.read_table(manifest)
        shared = pa.table(
            {name: [f"file://{p}" for p in table.column(name).to_pylist()] for name in table.column_names}
        )
        pq.write_table(shared, manifest)
        proc = nst(cluster, "run", str(manifest), "--out", f"file://{out}", "--address", cluster["address"],
                   "--workers", "3", "--json", *FAST)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout)["done"] == rows
    finally:
        stop_node(other)
