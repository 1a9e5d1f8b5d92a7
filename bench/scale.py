"""Scale benchmark of everything in a run that is not GPU work: resume planning, status, report, compaction.

Builds a synthetic manifest of N rows (contents × 10 styles through `jobs.build_manifest`) and a ledger
in which a fraction of them are done (records through `LedgerRecord` and `write_part`, in P parts: by
default as many as the run's tiered compaction would leave after 8-row batches), in a child process so the
figures below are those of a fresh driver. Then times, in this process: resume planning (`read_ledger`,
`row_states` and `plan_rows`, what `nst run` does before Ray starts), `nst status` (`collect_status`),
`nst report` (`build_report`; the synthetic rows have no image files, so each done row's thumbnail is one
failed read; `--no-report` skips it)
and a whole-ledger compaction. `--s3` puts the manifest and the output on a moto S3 server on 127.0.0.1
(its own process). Prints one JSON object: rows, parts, plan_s, status_s, report_s, compact_s,
driver_rss_mb (peak RSS after planning), backend, and the set-up time.

Run: python -m bench.scale --rows 100000 [--done-fraction 0.5] [--parts P] [--s3] [--json]
Only uses functions that exist since the ledger's first version, so it also runs as a script against an
older checkout: PYTHONPATH=OLD python bench/scale.py …
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

BATCH = 8
FAN_IN = 64
STYLES = 10


def tiered_parts(flushes: int, fan_in: int = FAN_IN) -> int:
    """Parts a run's tiered compaction leaves after `flushes` flushes: the digits of `flushes` in base fan_in."""
    parts = 0
    while flushes:
        flushes, digit = divmod(flushes, fan_in)
        parts += digit
    return max(parts, 1)


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


# -- set-up (child process) ---------------------------------------------------------------------------------
def build(base: str, rows: int, done_fraction: float, parts: int, options: dict[str, Any]) -> dict[str, Any]:
    from jobs import ManifestRow, build_manifest, iter_manifest
    from pipeline.run.record import write_run_json
    from pipeline.store.layout import OutputLayout, batch_id_for
    from pipeline.store.ledger import write_part
    from pipeline.store.records import LedgerRecord, RowStatus

    styles = min(STYLES, rows)
    contents = max(1, rows // styles)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "contents.txt").write_text("".join(f"s3://photos/{i:08d}.jpg\n" for i in range(contents)))
        Path(tmp, "styles.txt").write_text("".join(f"s3://styles/{i:03d}.png\n" for i in range(styles)))
        manifest = join(base, "manifest.parquet")
        build_manifest(content=[f"{tmp}/contents.txt"], style=[f"{tmp}/styles.txt"], output=manifest,
                       storage_options=options, overwrite=True)
    out = join(base, "out")
    layout = OutputLayout(out)
    items = [i for i in iter_manifest(manifest, storage_options=options) if isinstance(i, ManifestRow)]
    done = items[: int(len(items) * done_fraction)]
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    records = []
    for k, item in enumerate(done):
        batch = batch_id_for([str(k // BATCH)])
        started = t0 + timedelta(seconds=k // BATCH)
        records.append(LedgerRecord(
            record_id=uuid.uuid4().hex, run_id="bench-run", row_id=item.row_id, manifest_index=item.index,
            status=RowStatus.done, attempt=1, started_at=started, finished_at=started + timedelta(seconds=1),
            seconds=1.0, optimise_seconds=0.1, loss_total=1.0, loss_content=0.5, loss_style=0.4, loss_tv=0.1,
            steps_run=100, batch_id=batch, batch_size=BATCH, worker="w0", node="n0", device="cuda:0",
            content_uri=item.content_uri, style_uri=item.style_uri, output_uri=layout.image_uri(item.row_id),
            curve_uri=layout.curve_uri(batch), metrics={"ssim": 0.5, "gram_err": 0.1}, params={},
        ))
    per_part = -(-len(records) // parts) if records else 1
    for start in range(0, len(records), per_part):
        write_part(layout, records[start : start + per_part], options)
    write_run_json(layout, {
        "run_id": "bench-run", "status": "interrupted", "manifest": manifest, "out": out, "params": {},
        "max_attempts": 3, "stats": {"manifest_rows": len(items)},
        "history": [{"run_id": "bench-run", "status": "interrupted", "seconds": 3600.0}],
    }, options)
    return {"manifest": manifest, "out": out, "rows": len(items), "done": len(done)}


# -- measurement (this process) -----------------------------------------------------------------------------
def measure(setup: dict[str, Any], options: dict[str, Any], *, report: bool = True) -> dict[str, Any]:
    from pipeline.report import build_report
    from pipeline.run.options import RunOptions
    from pipeline.run.plan import plan_rows
    from pipeline.run.status import collect_status
    from pipeline.store.layout import OutputLayout
    from pipeline.store.ledger import compact, part_paths, read_ledger, row_states

    layout = OutputLayout(setup["out"])
    parts = len(part_paths(layout, options))
    t0 = time.perf_counter()
    states = row_states(read_ledger(layout, options))
    plan = plan_rows(RunOptions(manifest=setup["manifest"], out=setup["out"], storage_options=options), states,
                     run_id="bench-resume")
    t1 = time.perf_counter()
    rss = peak_rss_mb()
    assert plan.already_done == setup["done"] and len(plan.tasks) == setup["rows"] - setup["done"], plan
    del states, plan
    status = collect_status(setup["out"], options)
    t2 = time.perf_counter()
    assert status["done"] == setup["done"], status
    if report:
        built = build_report(out=setup["out"], storage_options=options)
        assert built.done == setup["done"], built
    t3 = time.perf_counter()
    compact(layout, options, min_parts=2)
    t4 = time.perf_counter()
    assert len(part_paths(layout, options)) == 1
    return {"parts": parts, "plan_s": t1 - t0, "status_s": t2 - t1, "report_s": t3 - t2 if report else None, "compact_s": t4 - t3,
            "driver_rss_mb": round(rss, 1)}


def moto_server() -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """A moto S3 server on 127.0.0.1 in its own process (so its work does not share this one's GIL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ("import time; from moto.moto_server.threaded_moto_server import ThreadedMotoServer as S; "
            f"s = S(ip_address='127.0.0.1', port={port}, verbose=False); s.start(); time.sleep(86400)")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    server = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
    return server, options


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--done-fraction", type=float, default=0.5)
    parser.add_argument("--parts", type=int, default=None, help="ledger parts (default: what tiered compaction leaves)")
    parser.add_argument("--s3", action="store_true", help="manifest and output on a moto S3 server on 127.0.0.1")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--no-report", action="store_true", help="skip `nst report` (report_s is null)")
    parser.add_argument("--build-into", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    done = int(args.rows * args.done_fraction)
    parts = args.parts or tiered_parts(-(-done // BATCH))
    if args.build_into:  # the child: build and say what was built
        print(json.dumps(build(args.build_into, args.rows, args.done_fraction, parts, json.loads(args.options))))
        return
    server, options = moto_server() if args.s3 else (None, {})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = f"s3://bench-{uuid.uuid4().hex[:8]}" if args.s3 else tmp
            if args.s3:
                import fsspec

                fsspec.filesystem("s3", **options).mkdir(base[len("s3://"):])
            import pipeline

            env = {**os.environ, "PYTHONPATH": str(Path(pipeline.__file__).resolve().parents[1])}
            started = time.perf_counter()
            child = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--rows", str(args.rows), "--done-fraction",
                 str(args.done_fraction), "--parts", str(parts), "--build-into", base, "--options", json.dumps(options)],
                env=env, capture_output=True, text=True, check=False,
            )
            if child.returncode != 0:
                raise SystemExit(f"set-up failed: {child.stderr[-3000:]}")
            setup = json.loads(child.stdout.strip().splitlines()[-1])
            setup_s = time.perf_counter() - started
            figures = measure(setup, options, report=not args.no_report)
    finally:
        if server is not None:
            server.kill()
            server.wait()
    result = {"rows": setup["rows"], "done": setup["done"], **figures, "backend": "s3-moto" if args.s3 else "local",
              "setup_s": round(setup_s, 2)}
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in result.items()), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
