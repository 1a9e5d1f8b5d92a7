"""The worker pool on a real multi-node Ray (ray.cluster_utils.Cluster, fake GPUs, all on 127.0.0.1): it
grows onto GPUs that join, survives nodes and workers that go away without spending the rows' attempts,
and isolates then fails a row that kills its worker every time."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from jobs import ManifestRow, iter_manifest
from pipeline.cluster.scheduler import DEATHS_BEFORE_ISOLATION, ISOLATED_DEATHS
from pipeline.cluster.worker import CHAOS_EXIT_ENV
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import read_ledger
from tests.pipeline.pipeline_checks import PARAMS, BackgroundRun, check_output, grid_rows, write_manifest

pytestmark = pytest.mark.cluster

NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 * 2**20}
POISON = "poison"
"""Content files whose name holds this make their worker process exit (the workers' NST_CHAOS_EXIT_ON)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head without GPUs: every worker lives on a node a test adds (and may remove)."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **NODE,
            "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    ray.init(
        address=cluster.address,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {CHAOS_EXIT_ENV: POISON}},
    )
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture()
def gpu_nodes(cluster: Cluster) -> Iterator[list[Any]]:
    """Nodes a test adds; removed afterwards so the next test starts from the bare head."""
    added: list[Any] = []
    yield added
    for node in added:
        if node in cluster.worker_nodes:
            cluster.remove_node(node)


def add_gpu_node(cluster: Cluster, added: list[Any], gpus: int) -> Any:
    node = cluster.add_node(**NODE, num_gpus=gpus)
    cluster.wait_for_nodes()
    added.append(node)
    return node


def pool_actors(out: str) -> list[str]:
    """The named actors of the run writing `out` (named nst-worker-<run id>-<i>; run.json names the run)."""
    path = Path(OutputLayout(out).run_json_uri())
    if not path.exists():
        return []
    prefix = f"nst-worker-{json.loads(path.read_text())['run_id']}-"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def autoscaler_request() -> Any:
    """What the run asked the autoscaler for (`request_resources` writes it to the GCS key-value store)."""
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(b"autoscaler_resource_request")
    return None if raw is None else json.loads(raw)


def records(out: str) -> list[dict[str, Any]]:
    return read_ledger(OutputLayout(out)).to_pylist()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def manifest_of(tmp_path: Path, inputs: dict[str, list[str]], count: int) -> tuple[str, list[str]]:
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(inputs["contents"], inputs["styles"], count))
    ids = [r.row_id for r in iter_manifest(manifest, defaults=PARAMS) if isinstance(r, ManifestRow)]
    return manifest, ids


def done_since(out: str, count: int) -> Any:
    return lambda: sum(r["status"] == "done" for r in records(out)) >= count


def test_the_pool_grows_onto_gpus_that_join(cluster: Cluster, gpu_nodes: list[Any], tmp_path: Path, inputs) -> None:
    add_gpu_node(cluster, gpu_nodes, 1)
    manifest, ids = manifest_of(tmp_path, inputs, 32)
    out = str(tmp_path / "out")
    run = BackgroundRun(
        manifest=manifest, out=out, address=cluster.address, batch_size=1, request_gpus=True, max_workers=3
    )
    wait_for(done_since(out, 1), 120, "a first row done")
    assert len(pool_actors(out)) == 1
    assert autoscaler_request() == [{"GPU": 1}] * 3  # rows wait: one GPU per worker, up to --max-workers
    add_gpu_node(cluster, gpu_nodes, 2)
    joined = time.monotonic()
    wait_for(lambda: len(pool_actors(out)) == 3, 10, "a worker on each of the two new GPUs")
    assert time.monotonic() - joined <= 10
    summary = run.finish()
    assert summary.complete and summary.done == 32, summary
    assert autoscaler_request() == []  # cleared at the end
    check_output(out, ids)
    by_worker = {r["worker"] for r in records(out) if r["status"] == "done"}
    assert {"w1", "w2"} & by_worker, by_worker  # rows done on the node that joined
    assert [w["name"] for w in summary.workers] == ["w0", "w1", "w2"]
    assert all(w["joined_at"] for w in summary.workers)


def test_lost_nodes_return_their_rows_without_spending_attempts(
    cluster: Cluster, gpu_nodes: list[Any], tmp_path: Path, inputs
) -> None:
    node = add_gpu_node(cluster, gpu_nodes, 1)
    manifest, ids = manifest_of(tmp_path, inputs, 24)
    out = str(tmp_path / "out")
    run = BackgroundRun(manifest=manifest, out=out, address=cluster.address, batch_size=2, max_attempts=1)
    for removal in range(3):
        wait_for(done_since(out, 2 * (removal + 1)), 180, f"progress before removal {removal + 1}")
        assert run.is_alive(), "the run finished before every node could be removed"
        cluster.remove_node(node)
        gpu_nodes.remove(node)
        node = add_gpu_node(cluster, gpu_nodes, 1)
    summary = run.finish()
    # max_attempts=1: a single spent attempt would have failed its row for good.
    assert summary.complete and summary.done == 24 and summary.failed == 0, summary
    assert summary.worker_losses >= 3 and summary.rows_returned >= 3, summary
    check_output(out, ids)
    assert {(r["status"], r["attempt"]) for r in records(out)} == {("done", 1)}


def test_five_kills_of_the_only_worker_cost_no_row(cluster: Cluster, gpu_nodes: list[Any], tmp_path: Path, inputs) -> None:
    add_gpu_node(cluster, gpu_nodes, 1)
    manifest, ids = manifest_of(tmp_path, inputs, 24)
    out = str(tmp_path / "out")
    run = BackgroundRun(manifest=manifest, out=out, address=cluster.address, batch_size=2, max_attempts=1)
    for kill in range(5):  # each as soon as the restarted worker has finished a row: as dense as the run allows
        wait_for(done_since(out, kill + 1), 120, f"progress before kill {kill + 1}")
        assert run.is_alive(), "the run finished before the fifth kill"
        (name,) = pool_actors(out)
        ray.kill(ray.get_actor(name, namespace=_namespace(name)), no_restart=False)
    summary = run.finish()
    assert summary.complete and summary.done == 24 and summary.failed == 0, summary
    check_output(out, ids)
    assert {(r["status"], r["attempt"]) for r in records(out)} == {("done", 1)}


def test_a_row_that_kills_its_worker_is_isolated_then_fails(
    cluster: Cluster, gpu_nodes: list[Any], tmp_path: Path, inputs
) -> None:
    add_gpu_node(cluster, gpu_nodes, 1)
    poison = tmp_path / f"{POISON}.png"
    shutil.copy(inputs["contents"][0], poison)
    rows = grid_rows(inputs["contents"][1:], inputs["styles"][:1], 11)
    rows.insert(3, dict(rows[0], content_uri=str(poison)))
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = str(tmp_path / "out")
    summary = BackgroundRun(manifest=manifest, out=out, address=cluster.address, batch_size=4).finish()
    assert summary.done == 11 and summary.failed == 1, summary
    (failed,) = [r for r in records(out) if r["status"] == "failed"]
    assert failed["content_uri"] == str(poison) and failed["error_kind"] == "worker_lost"
    assert f"{ISOLATED_DEATHS} of them running it alone" in failed["error_message"], failed["error_message"]
    assert failed["attempt"] == 1
    assert summary.worker_losses >= DEATHS_BEFORE_ISOLATION + ISOLATED_DEATHS
    done = [r for r in records(out) if r["status"] == "done"]
    assert len(done) == 11 and all(r["attempt"] == 1 for r in done)


def _namespace(name: str) -> str:
    return next(a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] == name)
