"""SIGKILL the driver process mid-run, run again: every row done exactly once, no partial or orphan files."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from jobs import ManifestRow, iter_manifest
from pipeline.run.manifest_run import run_manifest
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import part_paths
from tests.pipeline.pipeline_checks import (
    PARAMS,
    WEIGHTS,
    check_output,
    grid_rows,
    kill_group,
    start_driver,
    write_images,
    write_manifest,
)


def twenty_row_manifest(tmp_path: Path, seed: int) -> str:
    """10 contents × 2 styles of fresh images: enough batches to interrupt a run between two of them."""
    contents = write_images(tmp_path / "in", "c", 10, seed=seed)
    styles = write_images(tmp_path / "in", "s", 2, seed=seed + 1)
    return write_manifest(tmp_path / "m.parquet", grid_rows(contents, styles, 20))


def test_sigkilled_driver_then_rerun_completes_every_row_exactly_once(tmp_path: Path) -> None:
    manifest = twenty_row_manifest(tmp_path, seed=3)
    out = str(tmp_path / "out")
    layout = OutputLayout(out)
    driver = start_driver(manifest, out)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None and len(part_paths(layout)) < 2:
            time.sleep(0.05)
        assert driver.poll() is None, f"driver ended early: {driver.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        kill_group(driver)  # the killed driver's own Ray processes, by its group id
    recorded_before = len(part_paths(layout))
    assert 2 <= recorded_before
    summary = run_manifest(
        manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS, batch_size=2
    )
    assert summary.complete, summary
    ids = [r.row_id for r in iter_manifest(manifest, defaults=PARAMS) if isinstance(r, ManifestRow)]
    assert summary.already_done + summary.done == 20 and summary.already_done >= 2
    check_output(out, ids)
    again = run_manifest(manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS)
    assert (again.already_done, again.planned) == (20, 0)


def test_driver_killed_inside_a_compaction_then_rerun_loses_and_doubles_nothing(tmp_path: Path) -> None:
    manifest = twenty_row_manifest(tmp_path, seed=7)
    out = str(tmp_path / "out")
    layout = OutputLayout(out)
    marker = tmp_path / "compacting"
    os.environ["NST_COMPACTION_MARKER"] = str(marker)
    try:
        driver = start_driver(manifest, out, module="tests.pipeline.compaction_kill_driver")
    finally:
        del os.environ["NST_COMPACTION_MARKER"]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None and not marker.exists():
            time.sleep(0.05)
        assert marker.exists(), f"no compaction reached: {driver.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        kill_group(driver)
    import pyarrow.parquet as pq

    from pipeline.store.ledger import read_ledger, row_states

    parts = part_paths(layout)
    raw = sum(pq.read_metadata(p).num_rows for p in parts)
    unique = read_ledger(layout)
    assert any("-t1" in p for p in parts) and raw > unique.num_rows  # killed between the write and the deletes
    done_before = {s.row_id for s in row_states(unique).values() if s.done}
    assert done_before and all(s.done_records == 1 for s in row_states(unique).values())
    summary = run_manifest(manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS, batch_size=2)
    assert summary.complete and summary.already_done == len(done_before), summary
    ids = [r.row_id for r in iter_manifest(manifest, defaults=PARAMS) if isinstance(r, ManifestRow)]
    check_output(out, ids)  # every row done exactly once, no orphan or temporary file
    parts = part_paths(layout)
    assert len(parts) == 1 and pq.read_metadata(parts[0]).num_rows == read_ledger(layout).num_rows


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_ctrl_c_stops_cleanly_with_a_consistent_ledger(tmp_path: Path) -> None:
    manifest = twenty_row_manifest(tmp_path, seed=5)
    out = str(tmp_path / "out")
    layout = OutputLayout(out)
    driver = start_driver(manifest, out)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None and not part_paths(layout):
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGINT)
        code = driver.wait(timeout=60)
    finally:
        kill_group(driver)
    assert code == 130, driver.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    import json

    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "interrupted"
    from pipeline.store.ledger import read_ledger, row_states

    done = [s.row_id for s in row_states(read_ledger(layout)).values() if s.done]
    assert 0 < len(done) < 20
    # Images of in-flight batches may exist without a done record until the next run; the ledger is whole.
    summary = run_manifest(manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS)
    assert summary.complete and summary.already_done == len(done)
    ids = [r.row_id for r in iter_manifest(manifest, defaults=PARAMS) if isinstance(r, ManifestRow)]
    check_output(out, ids)
