"""Chaos: SIGKILL the `nst run` driver at seeded random moments, restart it each time, then check the output.

Used by tests/hardening/test_chaos_driver.py and runnable alone for the figures in docs/reliability.md:

    .venv/bin/python -m scripts.chaos_driver_kill --rows 200 --kills 5 --seed 0    (from the repository root)

Each kill lands either during start-up (a random delay) or mid-run (after a random number of new ledger
parts plus a random delay), so kills hit planning, Ray start, optimisation and ledger writes alike.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs import ManifestRow, iter_manifest
from nst_core.params import StyleParams
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import part_paths
from tests.pipeline.pipeline_checks import (
    check_output,
    grid_rows,
    kill_group,
    start_driver,
    write_images,
    write_manifest,
)

PARAMS = StyleParams(size=32, steps=2, log_every=1)


def chaos_driver_kill(workdir: Path, *, rows: int = 200, kills: int = 5, seed: int = 0) -> dict[str, Any]:
    """Run `rows` rows with `kills` SIGKILLs of the driver, then a final uninterrupted run; verify the output.

    Returns the figures (kill moments, parts seen at each kill, seconds, rows done per incarnation).
    """
    rng = np.random.default_rng(seed)
    styles = write_images(workdir / "in", "s", 4, seed=seed + 1, shape=(48, 48))
    contents = write_images(workdir / "in", "c", -(-rows // len(styles)), seed=seed + 2)
    manifest = write_manifest(workdir / "m.parquet", grid_rows(contents, styles, rows))
    out = str(workdir / "out")
    layout = OutputLayout(out)
    started = time.monotonic()
    log: list[dict[str, Any]] = []
    for _ in range(kills):
        before = len(part_paths(layout))
        during_start = rng.random() < 0.2
        new_parts = int(rng.integers(1, 6))
        delay = float(rng.uniform(0.5, 6.0) if during_start else rng.uniform(0.0, 1.5))
        driver = start_driver(manifest, out, params=PARAMS, batch_size=2)
        t0 = time.monotonic()
        try:
            if not during_start:
                while driver.poll() is None and len(part_paths(layout)) < before + new_parts:
                    if time.monotonic() - t0 > 300:
                        break
                    time.sleep(0.05)
            end = time.monotonic() + delay
            while driver.poll() is None and time.monotonic() < end:
                time.sleep(0.05)
            alive = driver.poll() is None
            if alive:
                os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
        finally:
            kill_group(driver)
        log.append(
            {
                "moment": "start-up" if during_start else f"after {new_parts} new part(s)",
                "seconds_after_start": round(time.monotonic() - t0, 1),
                "killed_while_running": alive,
                "parts_before": before,
                "parts_after": len(part_paths(layout)),
            }
        )
    final = start_driver(manifest, out, params=PARAMS, batch_size=2)
    _, err = final.communicate(timeout=900)
    kill_group(final)
    if final.returncode != 0:
        raise AssertionError(f"final run exited {final.returncode}: {err.decode()[-2000:]}")
    ids = [r.row_id for r in iter_manifest(manifest, defaults=PARAMS) if isinstance(r, ManifestRow)]
    found = check_output(out, ids)
    run_json = json.loads((workdir / "out" / "run.json").read_text())
    return {
        "rows": rows,
        "kills": log,
        "kills_while_running": sum(k["killed_while_running"] for k in log),
        "done": sum(1 for s in found["states"].values() if s.done),
        "ledger_records": found["table"].num_rows,
        "final_run_done": run_json["stats"]["done"],
        "final_run_already_done": run_json["stats"]["already_done"],
        "runs_recorded": len(run_json["history"]),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nst-chaos-") as tmp:
        figures = chaos_driver_kill(Path(tmp), rows=args.rows, kills=args.kills, seed=args.seed)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
