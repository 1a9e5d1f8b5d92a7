"""The S3 endpoint (moto on 127.0.0.1) goes away mid-run: for ~10 s (rows wait, none lost) and for good (the
run ends with one storage error line and exit code 1, the ledger stays consistent, a later re-run completes).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest

from jobs import ManifestRow, iter_manifest
from nst_core.atomic import TMP_PREFIX
from nst_core.params import StyleParams
from pipeline.run.manifest_run import run_manifest
from pipeline.store.layout import OutputLayout, list_files
from pipeline.store.ledger import part_paths, read_ledger, row_states
from tests.hardening.cli_helpers import fast_options, last_line, option_flags
from tests.pipeline.pipeline_checks import (
    WEIGHTS,  # noqa: I001
    BackgroundRun,
    MotoS3,
    check_output,
    grid_rows,
    kill_group,
    start_driver,
    write_manifest,
)

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("local_ray")]

PARAMS = StyleParams(size=32, steps=2, log_every=1)
OUTAGE_S = 10.0


def upload(moto: MotoS3, images: dict[str, list[str]], bucket: str, contents: int, styles: int) -> tuple[list[str], list[str]]:
    fs = fsspec.filesystem("s3", **moto.options)
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    uris: dict[str, list[str]] = {"contents": [], "styles": []}
    for key, count in (("contents", contents), ("styles", styles)):
        for local in images[key][:count]:
            fs.put_file(local, f"{bucket}/in/{Path(local).name}")
            uris[key].append(f"s3://{bucket}/in/{Path(local).name}")
    return uris["contents"], uris["styles"]


def wait_for_parts(out: str, options: dict[str, Any], alive: Any, count: int = 1, timeout: float = 180) -> None:
    layout = OutputLayout(out)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive() and len(part_paths(layout, options)) < count:
        time.sleep(0.2)
    assert alive(), "the run ended before the endpoint could be stopped"


def ids_of(manifest: str, options: dict[str, Any]) -> list[str]:
    return [
        r.row_id
        for r in iter_manifest(manifest, defaults=PARAMS, storage_options=options)
        if isinstance(r, ManifestRow)
    ]


def test_endpoint_down_for_ten_seconds_loses_no_row(moto: MotoS3, images) -> None:
    options = fast_options(moto.options)
    contents, styles = upload(moto, images, "outage", 12, 2)
    manifest = write_manifest("s3://outage/m.parquet", grid_rows(contents, styles, 24), options)
    out = "s3://outage/run"
    thread = BackgroundRun(manifest=manifest, out=out, params=PARAMS, batch_size=2, storage_options=options)
    wait_for_parts(out, options, thread.is_alive)
    moto.stop()
    time.sleep(OUTAGE_S)
    moto.start()
    summary = thread.finish()
    assert summary.complete and summary.done == 24 and summary.failed == 0, summary
    assert summary.storage_outages >= 1, "the outage was not noticed"
    records = read_ledger(OutputLayout(out), options).to_pylist()
    assert max(r["attempt"] for r in records) <= 2, "the outage spent rows' attempts"
    check_output(out, ids_of(manifest, options), options)


def test_endpoint_gone_for_good_ends_with_a_storage_error_then_a_rerun_completes(
    moto: MotoS3, images, tmp_path: Path
) -> None:
    options = fast_options(moto.options)
    contents, styles = upload(moto, images, "gone", 8, 2)
    manifest = write_manifest("s3://gone/m.parquet", grid_rows(contents, styles, 16), options)
    out = "s3://gone/run"
    driver = start_driver(
        manifest,
        out,
        params=PARAMS,
        module="pipeline.cli",
        extra=[*option_flags(options), "--storage-timeout", "4"],
    )
    try:
        wait_for_parts(out, options, lambda: driver.poll() is None)
        moto.stop()
        try:
            _, err_bytes = driver.communicate(timeout=120)  # bounded: a dead store must end the run
        except subprocess.TimeoutExpired:
            pytest.fail("the run did not end within 120 s of the endpoint going away")
    finally:
        kill_group(driver)
        moto.start()
    err = err_bytes.decode()
    assert driver.returncode == 1, err[-3000:]
    line = last_line(err)
    assert line.startswith("error:") and "storage unreachable" in line, err[-3000:]
    assert "moto-secret-value" not in err
    # Whatever was committed is consistent: each done record's outputs exist, no row is done twice, no part
    # or temporary file is half-written (every part parses).
    states = row_states(read_ledger(OutputLayout(out), options))
    done = [s for s in states.values() if s.done]
    assert done and all(s.done_records == 1 for s in done)
    fs = fsspec.filesystem("s3", **options)
    for state in done:
        assert fs.exists(state.done_record["output_uri"]) and fs.exists(state.done_record["curve_uri"])
    assert not [f for f in list_files(out, options) if f.rsplit("/", 1)[-1].startswith(TMP_PREFIX)]
    # The endpoint is back: the same command finishes exactly what is missing.
    summary = run_manifest(
        manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS, storage_options=options
    )
    assert summary.complete and summary.already_done == len(done) and summary.done == 16 - len(done), summary
    check_output(out, ids_of(manifest, options), options)
