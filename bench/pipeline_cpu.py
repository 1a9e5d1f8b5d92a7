"""Rows per hour of a whole `run_manifest` on this machine's CPU: N rows over M styles, 1 vs 2 workers.

Measures the pipeline end to end (Ray actors, decoding, optimisation, image/curve/ledger writes) with
random-weight VGG19 at 64 px, and the style-target cache hit rate that style affinity achieves.
Run: .venv/bin/python -m bench.pipeline_cpu --rows 24 --styles 3 --steps 20
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from nst_core.params import StyleParams
from pipeline.run.manifest_run import run_manifest


def make_inputs(base: Path, rows: int, styles: int, size: int) -> str:
    rng = np.random.default_rng(0)
    contents_needed = -(-rows // styles)
    contents, style_paths = [], []
    for i in range(contents_needed):
        path = base / f"c{i}.png"
        Image.fromarray(rng.integers(0, 256, (size * 3 // 4, size, 3), dtype=np.uint8)).save(path)
        contents.append(str(path))
    for j in range(styles):
        path = base / f"s{j}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        style_paths.append(str(path))
    # Interleave styles so the scheduler, not the file order, has to group rows by style.
    table = [
        {"content_uri": contents[i // styles], "style_uri": style_paths[i % styles]} for i in range(rows)
    ]
    manifest = base / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(table), manifest)
    return str(manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--styles", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
    params = StyleParams(size=args.size, steps=args.steps)
    print(
        f"pipeline on CPU: {args.rows} rows over {args.styles} styles, {args.size} px, {args.steps} Adam steps, "
        f"random-weight VGG19, {os.cpu_count()} cores"
    )
    print(f"{'workers':>7} {'seconds':>8} {'rows/h':>8} {'hit rate':>8} {'batches':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_inputs(Path(tmp), args.rows, args.styles, args.size)
        for workers in args.workers:
            out = str(Path(tmp) / f"out-{workers}")
            started = time.perf_counter()
            summary = run_manifest(
                manifest=manifest,
                out=out,
                params=params,
                weights="random:0",
                num_workers=workers,
            )
            seconds = time.perf_counter() - started
            assert summary.done == args.rows, summary
            batches = len(list((Path(out) / "curves").iterdir()))
            rate = summary.cache_hit_rate or 0.0
            print(
                f"{workers:>7} {seconds:>8.1f} {args.rows / seconds * 3600:>8.0f} {rate:>8.0%} {batches:>8}"
            )
    print("seconds include starting the actors and loading VGG (about 3-5 s per run on this machine)")
    ray.shutdown()


if __name__ == "__main__":
    main()
