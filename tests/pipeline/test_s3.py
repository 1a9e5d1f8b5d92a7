"""A run whose inputs, manifest and outputs live on S3 (moto server on 127.0.0.1, reached through s3fs)."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from jobs import ManifestRow, iter_manifest
from pipeline.run.manifest_run import run_manifest
from pipeline.run.status import collect_status
from tests.pipeline.pipeline_checks import PARAMS, WEIGHTS, check_output, grid_rows, write_manifest

pytestmark = pytest.mark.usefixtures("local_ray")


def test_run_reads_and_writes_s3_and_never_records_the_secret(tmp_path: Path, inputs, s3_server) -> None:
    options = s3_server
    fs = fsspec.filesystem("s3", **options)
    fs.mkdir("nst-test")
    for local in inputs["contents"][:4] + inputs["styles"][:2]:
        fs.put_file(local, f"nst-test/in/{Path(local).name}")
    contents = [f"s3://nst-test/in/{Path(p).name}" for p in inputs["contents"][:4]]
    styles = [f"s3://nst-test/in/{Path(p).name}" for p in inputs["styles"][:2]]
    rows = grid_rows(contents, styles, 6) + [
        {"content_uri": "s3://nst-test/in/absent.png", "style_uri": styles[0], "tag": "absent"}
    ]
    manifest = write_manifest("s3://nst-test/m.parquet", rows, options)
    out = "s3://nst-test/run1"
    summary = run_manifest(
        manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS, storage_options=options
    )
    assert summary.done == 6 and summary.failed == 1 and summary.remaining == 0
    ids = [
        r.row_id
        for r in iter_manifest(manifest, defaults=PARAMS, storage_options=options)
        if isinstance(r, ManifestRow)
    ]
    found = check_output(out, ids[:6], options)
    assert len(found["images"]) == 6
    run_json = fs.cat_file("nst-test/run1/run.json").decode()
    ledger_bytes = b"".join(fs.cat_file(p) for p in fs.find("nst-test/run1/_ledger"))
    assert "moto-secret-value" not in run_json and b"moto-secret-value" not in ledger_bytes
    assert json.loads(run_json)["storage_options"]["secret"] == "***"
    report = collect_status(out, options)
    assert report["done"] == 6 and report["failures"]["bad_input"]["rows"] == 1
    assert "absent.png" in report["failures"]["bad_input"]["examples"][0]["message"]
    resumed = run_manifest(
        manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS, storage_options=options
    )
    assert (resumed.already_done, resumed.planned, resumed.not_retried) == (6, 0, 1)
