"""Scale benchmark for job manifests: build and validate 1,000 contents × 1,000 styles = 1,000,000 rows.

Prints seconds per phase and peak resident memory. Goal on a 2-core CI machine: under 30 s and 1 GB.
Run: .venv/bin/python -m bench.manifest_scale [--contents N] [--styles N] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from jobs import ManifestRow, build_manifest, iter_manifest, validate_manifest


def peak_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contents", type=int, default=1000)
    parser.add_argument("--styles", type=int, default=1000)
    parser.add_argument("--read", action="store_true", help="also stream every row through iter_manifest")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "contents.txt").write_text(
            "".join(f"s3://photos/{i:07d}.jpg\n" for i in range(args.contents))
        )
        (root / "styles.txt").write_text("".join(f"s3://styles/{i:05d}.png\n" for i in range(args.styles)))
        out = args.out or str(root / "manifest.parquet")

        t0 = time.perf_counter()
        result = build_manifest(
            content=[str(root / "contents.txt")], style=[str(root / "styles.txt")], output=out, overwrite=True
        )
        t1 = time.perf_counter()
        print(
            f"build:    {result.rows:,} rows in {t1 - t0:.2f} s ({os.path.getsize(out) / 2**20:.1f} MiB), "
            f"peak RSS {peak_mib():.0f} MiB"
        )
        report = validate_manifest(out)
        t2 = time.perf_counter()
        print(
            f"validate: {report.rows:,} rows in {t2 - t1:.2f} s, {report.problem_count} problems, "
            f"peak RSS {peak_mib():.0f} MiB"
        )
        if args.read:
            runnable = sum(isinstance(item, ManifestRow) for item in iter_manifest(out))
            t3 = time.perf_counter()
            print(f"read:     {runnable:,} runnable rows in {t3 - t2:.2f} s, peak RSS {peak_mib():.0f} MiB")
        print(f"total:    {time.perf_counter() - t0:.2f} s, peak RSS {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
