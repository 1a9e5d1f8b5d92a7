"""Chaos: worker actors killed again and again at seeded random moments during one run; every row finishes.

(One actor killed once, and a whole node removed mid-run, are tests/pipeline/test_run_local.py and
test_cluster.py.) Each kill costs the rows in flight on that actor one attempt (`worker_lost`, retried).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from jobs import ManifestRow, iter_manifest
from nst_core.params import StyleParams
from pipeline.ledger import part_paths, read_ledger
from pipeline.outputs import OutputLayout
from tests.pipeline.pipeline_checks import BackgroundRun, check_output, grid_rows, write_manifest

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("local_ray")]

PARAMS = StyleParams(size=32, steps=2, log_every=1)
KILLS = 4


def worker_actors() -> list[Any]:
    return [
        ray.get_actor(a["name"], namespace=a["namespace"])
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("nst-worker-")
    ]


def test_actors_killed_at_random_all_rows_still_finish(tmp_path: Path, images) -> None:
    rng = random.Random(8)
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(images["contents"], images["styles"], 48))
    out = str(tmp_path / "out")
    thread = BackgroundRun(
        manifest=manifest,
        out=out,
        params=PARAMS,
        batch_size=2,
        num_workers=2,
        max_attempts=KILLS + 2,  # a row may be in flight on every killed actor
    )
    layout = OutputLayout(out)
    deadline = time.monotonic() + 120
    while thread.is_alive() and not part_paths(layout) and time.monotonic() < deadline:
        time.sleep(0.1)
    kills = 0
    while thread.is_alive() and kills < KILLS:
        time.sleep(rng.uniform(0.5, 3.0))
        actors = worker_actors()
        if actors and thread.is_alive():
            ray.kill(rng.choice(actors), no_restart=False)
            kills += 1
    summary = thread.finish()
    assert kills >= 2, "the run finished before the actors could be killed repeatedly"
    assert summary.complete and summary.done == 48 and summary.failed == 0, summary
    assert summary.worker_losses >= 1
    ids = [r.row_id for r in iter_manifest(manifest, defaults=PARAMS) if isinstance(r, ManifestRow)]
    check_output(out, ids)
    lost = [r for r in read_ledger(layout).to_pylist() if r["error_kind"] == "worker_lost"]
    assert all(r["status"] == "failed" for r in lost)
