"""Two Ray nodes (ray.cluster_utils.Cluster on 127.0.0.1): removing one mid-run still completes the run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from jobs import ManifestRow, iter_manifest
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import part_paths
from tests.pipeline.pipeline_checks import PARAMS, BackgroundRun, check_output, grid_rows, write_manifest

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "object_store_memory": 100 * 2**20,
            # Notice a dead node within seconds rather than the default ~30 s.
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_removing_a_node_mid_run_still_completes(cluster: Cluster, tmp_path: Path, inputs) -> None:
    worker_node = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=100 * 2**20)
    cluster.wait_for_nodes()
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(inputs["contents"], inputs["styles"], 16))
    out = str(tmp_path / "out")
    thread = BackgroundRun(manifest=manifest, out=out, address=cluster.address, num_workers=2, batch_size=2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and thread.is_alive() and not part_paths(OutputLayout(out)):
        time.sleep(0.1)
    assert thread.is_alive(), "run finished before the node could be removed"
    cluster.remove_node(worker_node)
    summary = thread.finish()
    assert summary.complete and summary.done == 16, summary  # type: ignore[attr-defined]
    assert len(summary.workers) == 2  # type: ignore[attr-defined]
    assert summary.worker_losses >= 1  # type: ignore[attr-defined]  # the removed node's actor held rows
    ids = [r.row_id for r in iter_manifest(manifest, defaults=PARAMS) if isinstance(r, ManifestRow)]
    check_output(out, ids)
