"""Chaos: worker actors killed again and again during one run; every row finishes, each exactly once.

(One actor killed once, and a whole node removed mid-run, are tests/pipeline/test_run_local.py and
test_cluster.py; the elastic pool's node losses are tests/pipeline/test_elastic_pool.py.) A kill returns the
rows in flight on that actor to the queue without spending their attempts.

The kills follow the run's progress in its ledger, not the clock, so the test means the same on a fast and
a slow machine: an actor is killed only when the ledger shows that it has started a row since the previous
kill (this incarnation is alive and taking work) and that at least MARGIN rows are not done yet (work is
queued on every actor, and the run cannot finish in the moment between looking and killing). The victim
is a seeded choice among the actors that qualify.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import ray

from jobs import ManifestRow, iter_manifest
from nst_core.params import StyleParams
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import part_paths, read_ledger
from tests.pipeline.pipeline_checks import BackgroundRun, check_output, grid_rows, write_manifest

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("local_ray")]

PARAMS = StyleParams(size=32, steps=2, log_every=1)
KILLS = 4
ROWS = 48
MARGIN = 16
"""No kill once fewer rows are left: 16 rows are 8 batches of 2, more than the 2 actors' 4 call slots hold, so
every kill lands on work in flight and the run cannot finish between looking at the ledger and killing."""


def worker_actors() -> dict[str, Any]:
    """The run's actors by the worker name the ledger records (`nst-worker-<run id>-<i>` is worker `w<i>`)."""
    return {
        "w" + a["name"].rsplit("-", 1)[1]: ray.get_actor(a["name"], namespace=a["namespace"])
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("nst-worker-")
    }


def done_rows(layout: OutputLayout) -> dict[str, tuple[str, datetime]]:
    """row_id → (worker, started_at) of every row the ledger records as done."""
    return {
        r["row_id"]: (r["worker"], r["started_at"])
        for r in read_ledger(layout).to_pylist()
        if r["status"] == "done"
    }


def test_actors_killed_at_random_all_rows_still_finish(tmp_path: Path, images) -> None:
    rng = random.Random(8)
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(images["contents"], images["styles"], ROWS))
    out = str(tmp_path / "out")
    thread = BackgroundRun(
        manifest=manifest,
        out=out,
        params=PARAMS,
        batch_size=2,
        num_workers=2,
        max_attempts=1,  # a spent attempt would fail its row for good
    )
    layout = OutputLayout(out)
    kills: list[str] = []
    since = datetime.min.replace(tzinfo=timezone.utc)  # rows started after the previous kill show who works
    parts_seen = -1
    deadline = time.monotonic() + 300
    while len(kills) < KILLS and thread.is_alive() and time.monotonic() < deadline:
        parts = len(part_paths(layout))
        if parts == parts_seen:
            time.sleep(0.05)  # polling the ledger for its next part; the kills wait for progress, not time
            continue
        parts_seen = parts
        done = done_rows(layout)
        if ROWS - len(done) < MARGIN:
            break
        actors = worker_actors()
        working = sorted({worker for worker, started in done.values() if started > since} & set(actors))
        if working:
            victim = rng.choice(working)
            since = datetime.now(timezone.utc)
            ray.kill(actors[victim], no_restart=False)
            kills.append(victim)
    summary = thread.finish()
    assert len(kills) == KILLS, f"{kills}: the kills were not all made while {MARGIN} or more rows were left"
    assert summary.complete and summary.done == ROWS and summary.failed == 0, summary
    assert summary.worker_losses >= 1
    ids = [r.row_id for r in iter_manifest(manifest, defaults=PARAMS) if isinstance(r, ManifestRow)]
    check_output(out, ids)
    # No kill spent an attempt or left a record: every record is a first-attempt done.
    assert {(r["status"], r["attempt"]) for r in read_ledger(layout).to_pylist()} == {("done", 1)}
