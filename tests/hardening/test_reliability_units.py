"""Reliability checks that need no Ray: the output-name rule, finite-result checks, overflow validation,
NaN weights, the lease, ledger reads during compaction, compaction de-duplication, storage options per
protocol, outage episodes, status robustness (see docs/reliability.md, "What the chaos run broke")."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from jobs import ManifestRow, RowProblem, iter_manifest, validate_manifest
from jobs.masking import mask_text
from jobs.names import MAX_NAME_BYTES, output_name_problem, row_id_problem
from jobs.options import options_for
from nst_core.engine import ImageResult
from nst_core.params import StyleParams
from nst_core.vgg import WeightsError, load_vgg
from pipeline.cli.status_view import render_status
from pipeline.cluster.row_checks import numerical_problem
from pipeline.run.status import collect_status
from pipeline.store.errors import StorageError
from pipeline.store.layout import LEASE, OutputLayout, OutputNameError, check_inside, validate_output_name
from pipeline.store.lease import LEASE_STALE_S, LeaseHeld, acquire, read_lease
from pipeline.store.ledger import compact, part_paths, read_ledger, write_part
from pipeline.store.records import ErrorKind, LedgerRecord, RowStatus, utcnow
from pipeline.store.transfer import read_bytes, write_bytes_atomic
from tests.hardening.cli_helpers import last_line, nst
from tests.pipeline.pipeline_checks import MotoS3, write_manifest

# -- one output-name rule ------------------------------------------------------------------------------

NAMES = [
    ".",
    "..",
    ".tmp-evil",
    ".hidden",
    "a/b",
    "a\\b",
    "tab\there",
    "",
    "ok",
    "é" * 100,  # 200 bytes: the row-id limit exactly
    "é" * 101,
    "x" * 250,
]


@pytest.mark.parametrize("name", NAMES)
def test_row_ids_the_validator_accepts_are_exactly_those_a_run_can_write(tmp_path: Path, name: str) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", [{"content_uri": "c.png", "style_uri": "s.png", "row_id": name}])
    report = validate_manifest(manifest)
    (item,) = list(iter_manifest(manifest))
    rule = row_id_problem(name)
    assert (report.problem_count == 0) == (rule is None) == isinstance(item, ManifestRow)
    layout = OutputLayout(str(tmp_path / "out"))
    if rule is None:
        uri = layout.image_uri(name)
        write_bytes_atomic(uri, b"png", None)  # the temporary name adds no length: any accepted id fits
        assert read_bytes(uri) == b"png"
    else:
        assert isinstance(item, RowProblem) and item.column == "row_id"
        with pytest.raises(OutputNameError):
            layout.image_uri(name)


@pytest.mark.parametrize(
    "name", [".png", "..png", ".tmp-x.png", "a/b.png", "x.gif", "ok.png", "ä" * 125 + ".png", "ä" * 126 + ".png"]
)
def test_output_names_agree_between_validate_and_run(tmp_path: Path, name: str) -> None:
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"content_uri": "c.png", "style_uri": "s.png", "output_name": name}]
    )
    report = validate_manifest(manifest)
    rule = output_name_problem(name)
    assert (report.problem_count == 0) == (rule is None)
    if rule is None:
        assert validate_output_name(name) == name
        uri = OutputLayout(str(tmp_path / "out")).image_uri("r", name)
        write_bytes_atomic(uri, b"img", None)
        assert len(os.path.basename(uri).encode()) <= MAX_NAME_BYTES
    else:
        with pytest.raises(OutputNameError):
            validate_output_name(name)


def test_a_missing_out_folder_is_a_storage_error_not_a_bad_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    check_inside(str(out), f"{out}/images/x.png")
    (out / "images").rmdir()
    out.rmdir()
    with pytest.raises(StorageError, match="is missing"):
        check_inside(str(out), f"{out}/images/x.png")


# -- finite and non-degenerate results -----------------------------------------------------------------


def _result(image: torch.Tensor, **final: float) -> ImageResult:
    return ImageResult(image=image, curve=None, final={"total": 1.0, **final}, steps_run=4)  # type: ignore[arg-type]


def test_non_finite_or_degenerate_results_are_numerical_failures() -> None:
    content = torch.rand(3, 8, 8)
    assert numerical_problem(_result(torch.rand(3, 8, 8)), content) is None
    assert "non-finite loss" in str(numerical_problem(_result(torch.rand(3, 8, 8), style=float("nan")), content))
    nan_image = torch.full((3, 8, 8), float("nan"))
    assert "non-finite pixels" in str(numerical_problem(_result(nan_image), content))
    black = torch.zeros(3, 8, 8)
    assert "degenerate image" in str(numerical_problem(_result(black), content))
    assert numerical_problem(_result(black), torch.zeros(3, 8, 8)) is None  # a uniform content may stay uniform
    assert not ErrorKind.numerical.retryable


def test_loss_weights_and_lr_that_overflow_are_refused_before_the_run(tmp_path: Path) -> None:
    for field in ("style_weight", "content_weight", "tv_weight", "lr"):
        with pytest.raises(ValueError, match=f"{field} must be <= .*overflow"):
            StyleParams().replace(**{field: 1e308})
    manifest = write_manifest(tmp_path / "m.parquet", [{"content_uri": "c.png", "style_uri": "s.png", "lr": 1e308}])
    (item,) = list(iter_manifest(manifest))
    assert isinstance(item, RowProblem) and item.column == "lr"


def test_weights_full_of_nan_are_refused_at_load(tmp_path: Path) -> None:
    import torchvision

    features = torchvision.models.vgg19().features
    state = {k: torch.full_like(v, float("nan")) for k, v in features.state_dict().items()}
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="weights contain non-finite values"):
        load_vgg("vgg19", str(path))


# -- the lease -----------------------------------------------------------------------------------------


def test_lease_refuses_a_second_run_and_names_the_holder(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = acquire(out, "run-a")
    try:
        with pytest.raises(LeaseHeld, match=r"in use by run run-a \(pid \d+ on "):
            acquire(out, "run-b")
        with pytest.raises(LeaseHeld, match="older than"):
            acquire(out, "run-b", force=True)  # fresh: --force does not take it
    finally:
        first.release()
    assert not (tmp_path / "out" / LEASE).exists()
    acquire(out, "run-c").release()


def _plant_lease(path: Path, *, host: str, pid: int, age: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"token": uuid.uuid4().hex, "run_id": "old", "host": host, "pid": pid, "heartbeat_at": time.time() - age}
    path.write_text(json.dumps(body))


def test_lease_of_a_dead_local_holder_is_taken_over_and_a_stale_one_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = os.fork() if hasattr(os, "fork") else None
    if dead == 0:
        os._exit(0)
    assert dead is not None
    os.waitpid(dead, 0)
    _plant_lease(out / LEASE, host=socket.gethostname(), pid=dead, age=1)
    acquire(str(out), "new").release()  # the holder's process is gone: no --force needed

    _plant_lease(out / LEASE, host="other-host", pid=1, age=LEASE_STALE_S + 5)
    with pytest.raises(LeaseHeld, match="--force"):
        acquire(str(out), "new")
    lease = acquire(str(out), "new", force=True)
    assert read_lease(str(out / LEASE))["run_id"] == "new"  # type: ignore[index]
    lease.release()


def test_lease_on_s3_is_create_if_absent() -> None:
    server = MotoS3().start()
    try:
        import s3fs

        s3fs.S3FileSystem(**server.options).mkdir("lease-bucket")
        out = "s3://lease-bucket/out"
        first = acquire(out, "run-a", server.options)
        with pytest.raises(LeaseHeld, match="run-a"):
            acquire(out, "run-b", server.options)
        first.release()
        acquire(out, "run-b", server.options).release()
    finally:
        server.stop()


# -- ledger: reads during compaction, de-duplication ---------------------------------------------------


def _records(n: int, run_id: str = "r") -> list[LedgerRecord]:
    return [
        LedgerRecord(
            record_id=uuid.uuid4().hex,
            run_id=run_id,
            row_id=f"row{i}",
            status=RowStatus.failed,
            attempt=1,
            error_kind=ErrorKind.bad_input,
            error_message=f"bad [/bold] input {i} [link=x]",
            finished_at=utcnow() + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def test_status_never_fails_while_the_ledger_is_compacted(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path / "out"))
    write_part(layout, _records(3))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                for _ in range(3):
                    write_part(layout, _records(1, run_id="churn"))
                compact(layout, min_parts=2)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(150):
            report = collect_status(str(tmp_path / "out"))
            assert report["rows"] >= 3
    finally:
        stop.set()
        thread.join()
    assert not errors


def test_compaction_removes_duplicates_a_killed_compaction_left(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path / "out"))
    records = _records(4)
    write_part(layout, records[:2])
    write_part(layout, records[2:])
    write_part(layout, records)  # the merged part written before the old ones could be deleted
    assert len(part_paths(layout)) == 3
    assert compact(layout) == 3  # well below min_parts, but duplicates exist
    (only,) = part_paths(layout)
    assert read_ledger(layout).num_rows == 4
    assert compact(layout) == 0  # nothing left to do


def test_status_renders_markup_in_messages_literally_and_refuses_an_empty_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    write_part(OutputLayout(out), _records(2))
    console = Console(file=io.StringIO(), width=200)
    console.print(render_status(collect_status(out)))
    assert "[/bold]" in console.file.getvalue()  # type: ignore[attr-defined]
    code, _, err = nst(["status", str(tmp_path / "nothing-here")], monkeypatch, capfd)
    assert code == 1 and "no run found" in last_line(err) and len(err.strip().splitlines()) == 1


def test_status_counts_against_the_current_manifest(tmp_path: Path) -> None:
    from pipeline.run.record import write_run_json

    out = str(tmp_path / "out")
    layout = OutputLayout(out)
    old = [{"content_uri": f"c{i}.png", "style_uri": "s.png"} for i in range(4)]
    manifest = write_manifest(tmp_path / "m.parquet", old)
    ids = [r.row_id for r in iter_manifest(manifest)]
    write_part(
        layout,
        [
            LedgerRecord(record_id=uuid.uuid4().hex, run_id="r", row_id=rid, status=RowStatus.done, attempt=1, finished_at=utcnow())
            for rid in ids
        ],
    )
    write_run_json(layout, {"manifest": manifest, "params": StyleParams().to_dict(), "stats": {"manifest_rows": 4}}, None)
    write_manifest(tmp_path / "m.parquet", old[:1] + [{"content_uri": "new.png", "style_uri": "s.png"}])
    report = collect_status(out)
    assert (report["manifest_rows"], report["done"], report["not_started"]) == (2, 1, 1)
    assert report["not_in_manifest"] == {"rows": 3, "done": 3}


# -- storage options per protocol, secrets -------------------------------------------------------------


def test_storage_options_apply_per_protocol() -> None:
    options: dict[str, Any] = {"key": "k", "secret": "s", "s3": {"client_kwargs": {"endpoint_url": "x"}}, "http": {"headers": {"A": "1"}}}
    assert options_for("s3://b/k", options) == {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "x"}}
    assert options_for("https://h/x.png", options) == {"headers": {"A": "1"}}
    assert options_for("/local/x.png", options) == {}
    assert options_for("gs://b/k", options) == {"key": "k", "secret": "s"}


def test_userinfo_quoted_without_its_scheme_is_masked() -> None:
    text = 'Invalid bucket name "AKIAUSER:planted-pass@bucket": s3://AKIAUSER:planted-pass@bucket/x'
    assert "planted-pass" not in mask_text(text)


# -- outage episodes -----------------------------------------------------------------------------------


def test_a_flapping_outage_is_one_episode_bounded_from_its_first_failure(tmp_path: Path) -> None:
    from pipeline.cluster.events import DriverStats
    from pipeline.cluster.outage import OutagePolicy
    from pipeline.cluster.tasks import RowTask

    stats = DriverStats()
    held: list[RowTask] = []
    outage = OutagePolicy(str(tmp_path), None, 30, stats, lambda task, delay: held.append(task))
    task = RowTask(row_id="a", index=0, content_uri="s3://b/c", style_uri="s3://b/s", params=StyleParams(), output_uri="x")
    outage.hold_for_outage(task, "refused")
    first = outage.outage_since
    for _ in range(15):
        outage.over()  # a result of work started before the outage arrives
        outage.hold_for_outage(task, "refused")
    assert stats.storage_outages == 1 and outage.outage_since == first
    assert len(held) == 16 and all(t.attempt == 1 for t in held)  # held back, attempts unspent
