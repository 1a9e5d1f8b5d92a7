"""The bad-input corpus through real runs: one `run_manifest` over every row-level case, the CLI for run-level ones.

Each row-level case must end with its documented outcome in the ledger (done, or the error kind and a message
naming the file or column) after ONE attempt, without stopping or delaying the good rows around it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nst_core.params import StyleParams
from pipeline.run.manifest_run import run_manifest
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import read_ledger, row_states
from tests.hardening.cli_helpers import fast_options, nst, nst_process, run_args
from tests.hardening.corpus import CASES, MAX_PIXELS, Case
from tests.pipeline.pipeline_checks import WEIGHTS, check_output, write_manifest

pytestmark = pytest.mark.usefixtures("local_ray")

PARAMS = StyleParams(size=32, steps=2, log_every=1)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory, images, moto) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("corpus")
    folder = base / "inputs"
    folder.mkdir()
    ctx: dict[str, Any] = {"contents": images["contents"]}
    rows: list[dict[str, Any]] = []
    for case in CASES:
        cells = case.make(folder, ctx)
        rows.append(
            {
                "content_uri": None,
                "style_uri": images["styles"][0],
                "steps": None,
                "size": None,
                "style_weight": None,
                "output_name": None,
                "case": case.kind,
                **cells,
            }
        )
    plain = [dict(rows[0], content_uri=images["contents"][-1 - i], case=f"good {i}") for i in range(3)]
    duplicate = dict(plain[0], case="duplicate of good 0")
    rows += plain + [duplicate]
    manifest = write_manifest(base / "corpus.parquet", rows)
    out = str(base / "out")
    options = fast_options(moto.options)
    summary = run_manifest(
        manifest=manifest,
        out=out,
        params=PARAMS,
        weights=WEIGHTS,
        batch_size=4,
        max_attempts=3,
        max_pixels=MAX_PIXELS,
        storage_options=options,
    )
    table = read_ledger(OutputLayout(out))
    by_index: dict[int, list[dict[str, Any]]] = {}
    for record in table.to_pylist():
        by_index.setdefault(record["manifest_index"], []).append(record)
    return {
        "summary": summary,
        "rows": rows,
        "records": by_index,
        "out": out,
        "manifest": manifest,
        "options": options,
        "table": table,
    }


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_each_bad_input_has_its_documented_outcome(corpus_run: dict[str, Any], case: Case) -> None:
    index = next(i for i, row in enumerate(corpus_run["rows"]) if row["case"] == case.kind)
    records = corpus_run["records"].get(index)
    assert records, f"{case.kind}: no ledger record for manifest row {index}"
    if case.expect == "done" or (IS_ROOT and case.kind.startswith("permission denied")):
        # As root, chmod 000 does not deny reading: the row is done here, and the denial itself is checked
        # by test_permission_denied_fails_its_row_without_root_privileges.
        assert [r["status"] for r in records] == ["done"], records
        return
    assert len(records) == 1, f"{case.kind}: retried or recorded twice: {records}"
    (record,) = records
    assert record["status"] == "failed" and record["attempt"] == 1
    assert record["error_kind"] == case.expect, (case.kind, record["error_message"])
    message = record["error_message"] or ""
    assert case.message.lower() in message.lower(), message
    row = corpus_run["rows"][index]
    named = row.get(case.names) if case.names else None
    if named:
        assert Path(named).name in message, f"{case.kind}: message does not name the file: {message}"


def test_permission_denied_fails_its_row_without_root_privileges(tmp_path: Path, images) -> None:
    """A whole `nst run` (its own embedded Ray included) with the capabilities that let root ignore file
    permissions removed from the bounding set, so a chmod 000 input is really unreadable to the workers."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to drop root's file-permission override"
    locked = tmp_path / "locked.png"
    Image.open(images["contents"][0]).save(locked)
    locked.chmod(0)
    rows = [
        {"content_uri": str(locked), "style_uri": images["styles"][0]},
        {"content_uri": images["contents"][1], "style_uri": images["styles"][0]},
    ]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "run", manifest, "--out", str(out), "--weights", WEIGHTS,
               "--size", "32", "--steps", "2", "--no-progress", "--json"]  # fmt: skip
    if IS_ROOT:
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]  # 2: finished with failed rows
    summary = json.loads(proc.stdout)
    assert (summary["done"], summary["failed"], summary["retried"]) == (1, 1, 0)
    failed = [r for r in read_ledger(OutputLayout(str(out))).to_pylist() if r["status"] == "failed"]
    assert [r["error_kind"] for r in failed] == ["bad_input"]
    assert "permission denied" in failed[0]["error_message"] and "locked.png" in failed[0]["error_message"]


def test_exif_orientation_is_applied_to_the_output(corpus_run: dict[str, Any]) -> None:
    index = next(i for i, row in enumerate(corpus_run["rows"]) if row["case"] == "EXIF-rotated photo")
    (record,) = corpus_run["records"][index]
    with Image.open(record["output_uri"]) as image:
        assert image.size == (16, 32)  # stored 48x24 landscape, shown (and stylised) as a 24x48 portrait


def test_deterministic_failures_spend_no_retries_and_block_nothing(corpus_run: dict[str, Any]) -> None:
    summary = corpus_run["summary"]
    # The done cases, the three plain rows, and, as root, the chmod 000 row (root reads it anyway).
    expected_done = sum(c.expect == "done" for c in CASES) + 3 + (1 if IS_ROOT else 0)
    assert summary.retried == 0 and summary.remaining == 0 and summary.duplicates == 1, summary
    assert summary.done == expected_done and summary.failed == len(CASES) + 3 - expected_done, summary
    states = row_states(corpus_run["table"])
    check_output(corpus_run["out"], [s.row_id for s in states.values() if s.done])
    # A re-run retries nothing: every failure above is the row's own fault.
    again = run_manifest(
        manifest=corpus_run["manifest"],
        out=corpus_run["out"],
        params=PARAMS,
        weights=WEIGHTS,
        max_pixels=MAX_PIXELS,
        storage_options=corpus_run["options"],
    )
    assert (again.planned, again.already_done) == (0, expected_done), again


def test_explicit_duplicate_row_ids_fail_both_rows_and_run_the_rest(tmp_path: Path, images) -> None:
    contents, style = images["contents"], images["styles"][1]
    rows = [
        {"row_id": "same", "content_uri": contents[0], "style_uri": style},
        {"row_id": "same", "content_uri": contents[1], "style_uri": style},
        {"row_id": "unique", "content_uri": contents[2], "style_uri": style},
    ]
    out = str(tmp_path / "out")
    summary = run_manifest(
        manifest=write_manifest(tmp_path / "m.parquet", rows), out=out, params=PARAMS, weights=WEIGHTS
    )
    assert summary.done == 1 and summary.failed == 1 and summary.duplicates == 1, summary
    states = row_states(read_ledger(OutputLayout(out)))
    assert states["unique"].done and states["same"].last_error_kind == "bad_manifest_row"
    assert "appears 2 times" in (states["same"].last_error_message or "")


# -- run-level bad input: the CLI ends with one line and exit code 1 ---------------------------------------


@pytest.fixture()
def small_manifest(tmp_path: Path, images) -> str:
    rows = [{"content_uri": images["contents"][0], "style_uri": images["styles"][2]}]
    return write_manifest(tmp_path / "small.parquet", rows)


def _weights_case(tmp_path: Path, kind: str) -> tuple[list[str], str]:
    path = tmp_path / f"{kind}.pth"
    if kind == "not_state_dict":
        torch.save([1, 2, 3], path)
        return ["--weights", str(path)], "expected a state dict"
    if kind == "sha_mismatch":
        torch.save({"0.weight": torch.zeros(1)}, path)
        return ["--weights", str(path), "--weights-sha256", "0" * 64], "sha256 mismatch"
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"0.weight": Payload()}))
    return ["--weights", str(path)], "weights_only"


@pytest.mark.parametrize("kind", ["not_state_dict", "sha_mismatch", "malicious_pickle"])
def test_bad_weights_end_the_run_with_one_line(kind: str, tmp_path: Path, small_manifest: str) -> None:
    extra, expected = _weights_case(tmp_path, kind)
    out = str(tmp_path / "out")
    code, _, err = nst_process(run_args(small_manifest, out, PARAMS, *extra))
    assert code == 1, err
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and expected in error[0] and f"{kind}.pth" in error[0], err
    assert not (tmp_path / "pwned").exists(), "the pickle's code ran"


def test_manifest_with_a_mistyped_column_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"content_uri": [1, 2], "style_uri": ["a.png", "b.png"]}), manifest)
    code, _, err = nst(run_args(str(manifest), str(tmp_path / "out"), PARAMS, "--weights", WEIGHTS), monkeypatch, capfd)
    assert code == 1 and "content_uri" in err and "error:" in err, err
    assert not (tmp_path / "out" / "images").exists()


def test_max_rows_refuses_a_larger_manifest_before_any_work(
    tmp_path: Path, images, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    rows = [{"content_uri": c, "style_uri": images["styles"][0]} for c in images["contents"][:5]]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    args = run_args(manifest, str(tmp_path / "out"), PARAMS, "--weights", WEIGHTS, "--max-rows", "4")
    code, _, err = nst(args, monkeypatch, capfd)
    assert code == 1 and "5 rows, more than --max-rows 4" in err, err
    assert not (tmp_path / "out" / "_ledger").exists()


def test_corpus_has_at_least_25_kinds() -> None:
    assert len({c.kind for c in CASES}) >= 25


def test_unreachable_bucket_on_the_live_endpoint_is_bad_input_not_an_outage(corpus_run: dict[str, Any]) -> None:
    # The bucket does not exist but the endpoint answers: the row fails at once, no storage pause happened.
    assert corpus_run["summary"].storage_outages == 0
    fs = fsspec.filesystem("s3", **corpus_run["options"])
    assert not fs.exists("no-such-bucket-nst")
    assert json.loads(Path(corpus_run["out"], "run.json").read_text())["max_pixels"] == MAX_PIXELS
