"""End-to-end runs on a local Ray with 2 CPUs and 2 declared GPUs: placement, 100 rows, resume, failures, actor loss."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import typer
from typer.testing import CliRunner

from nst_core.params import StyleParams
from pipeline.cli.run import run_command, status_command
from pipeline.run.manifest_run import run_manifest
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import part_paths, read_ledger, row_states
from pipeline.store.records import LEDGER_SCHEMA
from tests.pipeline.pipeline_checks import (
    PARAMS,
    WEIGHTS,
    BackgroundRun,
    check_output,
    grid_rows,
    write_manifest,
)

pytestmark = pytest.mark.usefixtures("local_ray")


def run(manifest: str, out: str, **kwargs: object):
    kwargs.setdefault("params", PARAMS)
    kwargs.setdefault("weights", WEIGHTS)
    return run_manifest(manifest=manifest, out=out, **kwargs)  # type: ignore[arg-type]


def manifest_ids(manifest: str, params: StyleParams = PARAMS) -> list[str]:
    from jobs import ManifestRow, iter_manifest

    return [r.row_id for r in iter_manifest(manifest, defaults=params) if isinstance(r, ManifestRow)]


def test_one_actor_per_declared_gpu_each_on_its_own_device(tmp_path: Path, inputs) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(inputs["contents"], inputs["styles"], 4))
    summary = run(manifest, str(tmp_path / "out"), batch_size=1)
    assert summary.complete and summary.done == 4
    gpu_ids = [tuple(w["gpu_ids"]) for w in summary.workers]
    assert len(gpu_ids) == 2, summary.workers  # one actor per GPU of the 2 declared
    assert all(len(ids) == 1 for ids in gpu_ids)
    assert len(set(gpu_ids)) == 2, f"two actors share a GPU: {gpu_ids}"
    devices = {r["device"] for r in read_ledger(OutputLayout(str(tmp_path / "out"))).to_pylist()}
    assert all("gpu" in d for d in devices)


def test_hundred_rows_complete_with_images_curves_and_ledger_matching_the_manifest(
    tmp_path: Path, inputs
) -> None:
    rows = grid_rows(inputs["contents"], inputs["styles"], 100)
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = str(tmp_path / "out")
    params = PARAMS.replace(steps=3)
    summary = run(manifest, out, params=params)
    assert summary.complete, summary
    assert summary.done == 100 and summary.failed == 0
    ids = manifest_ids(manifest, params)
    found = check_output(out, ids)
    assert len(found["images"]) == 100
    # The ledger carries the manifest's user columns and the row's provenance.
    records = {r["row_id"]: r for r in found["table"].to_pylist()}
    assert set(records) == set(ids)
    by_tag = {json.loads(r["metadata"])["tag"] for r in records.values()}
    assert by_tag == {r["tag"] for r in rows}
    assert all(r["loss_total"] is not None and r["steps_run"] == 3 and r["worker"] for r in records.values())
    # Style affinity: 4 styles over 2 actors should hit the target cache far more often than not.
    assert summary.cache_hits + summary.cache_misses > 0
    assert summary.cache_hit_rate is not None and summary.cache_hit_rate > 0.5
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["status"] == "completed" and run_json["stats"]["done"] == 100
    assert run_json["weights"]["source"].startswith("random")
    assert run_json["manifest_sha256"] and len(run_json["manifest_sha256"]) == 64


def test_resume_picks_up_added_rows_and_never_recomputes_done_ones(tmp_path: Path, inputs) -> None:
    rows = grid_rows(inputs["contents"], inputs["styles"], 8)
    out = str(tmp_path / "out")
    first = run(write_manifest(tmp_path / "m1.parquet", rows[:5]), out)
    assert first.done == 5
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "images").iterdir()}
    second = run(write_manifest(tmp_path / "m2.parquet", rows), out)
    assert (second.already_done, second.planned, second.done) == (5, 3, 3)
    for p in (tmp_path / "out" / "images").iterdir():
        if p.name in mtimes:
            assert p.stat().st_mtime_ns == mtimes[p.name], "a done row was recomputed"
    third = run(str(tmp_path / "m2.parquet"), out)
    assert (third.already_done, third.planned, third.done) == (8, 0, 0)
    check_output(out, manifest_ids(str(tmp_path / "m2.parquet")))


def test_corrupt_image_fails_once_with_a_clear_error_and_is_retried_only_on_request(
    tmp_path: Path, inputs
) -> None:
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    rows = grid_rows(inputs["contents"], inputs["styles"], 3) + [
        {"content_uri": str(bad), "style_uri": inputs["styles"][0], "tag": "bad"},
        {"content_uri": str(tmp_path / "missing.png"), "style_uri": inputs["styles"][0], "tag": "missing"},
    ]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = str(tmp_path / "out")
    summary = run(manifest, out, max_attempts=3)
    assert summary.done == 3 and summary.failed == 2 and summary.retried == 0
    states = row_states(read_ledger(OutputLayout(out)))
    failed = {s.row_id: s for s in states.values() if not s.done}
    assert {s.last_error_kind for s in failed.values()} == {"bad_input"}
    messages = " | ".join(s.last_error_message or "" for s in failed.values())
    assert "corrupt.png" in messages and "missing.png" in messages
    # Done rows carry their quality metrics (docs/metrics.md); failed rows have none.
    for record in read_ledger(OutputLayout(out)).to_pylist():
        if record["status"] == "done":
            assert -1.0 <= record["metric_ssim"] <= 1.0
            assert record["metric_content_dist"] >= 0 and record["metric_gram_err"] >= 0
            assert 0.0 <= record["metric_clipped"] <= 1.0
            per_layer = json.loads(record["metrics"])
            assert {f"gram_err_{layer}" for layer in PARAMS.style_layers} <= set(per_layer)
        else:
            assert record["metric_ssim"] is None and record["metrics"] is None
    again = run(manifest, out, max_attempts=3)
    assert (again.planned, again.not_retried, again.already_done) == (0, 2, 3)
    forced = run(manifest, out, retry_failed=True)
    assert forced.planned == 2 and forced.failed == 2
    table = read_ledger(OutputLayout(out))
    per_row = {rid: table.column("row_id").to_pylist().count(rid) for rid in failed}
    assert per_row == {rid: 2 for rid in failed}  # once in the first run, once with --retry-failed
    check_output(out, [s.row_id for s in states.values() if s.done])


def test_unsafe_output_names_fail_their_row_only(tmp_path: Path, inputs) -> None:
    rows = grid_rows(inputs["contents"], inputs["styles"], 3)
    rows[0]["output_name"] = "../escape.png"
    rows[1]["output_name"] = "ok.jpg"
    rows[2]["output_name"] = None
    out = tmp_path / "out"
    summary = run(write_manifest(tmp_path / "m.parquet", rows), str(out))
    assert summary.done == 2 and summary.failed == 1
    assert (out / "images" / "ok.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert not (tmp_path / "escape.png").exists()
    kinds = {
        r["error_kind"] for r in read_ledger(OutputLayout(str(out))).to_pylist() if r["status"] == "failed"
    }
    assert kinds <= {"bad_output_name", "bad_manifest_row"} and kinds


def test_killed_actor_is_restarted_and_its_rows_rescheduled(tmp_path: Path, inputs) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(inputs["contents"], inputs["styles"], 16))
    out = str(tmp_path / "out")
    thread = BackgroundRun(manifest=manifest, out=out, batch_size=2, num_workers=2)
    layout = OutputLayout(out)
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("nst-worker-")
        ]
        if names and part_paths(layout):
            killed = ray.get_actor(
                names[0],
                namespace=next(
                    a["namespace"]
                    for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["name"] == names[0]
                ),
            )
            ray.kill(killed, no_restart=False)
        time.sleep(0.2)
    summary = thread.finish()
    assert killed is not None, "run finished before an actor could be killed"
    assert summary.complete and summary.done == 16, summary  # type: ignore[attr-defined]
    assert summary.worker_losses >= 1  # type: ignore[attr-defined]
    check_output(out, manifest_ids(manifest))


def test_cli_run_and_status_report_the_resolved_configuration(tmp_path: Path, inputs) -> None:
    app = typer.Typer()
    app.command("run")(run_command)
    app.command("status")(status_command)
    bad = tmp_path / "text.png"
    bad.write_text("not an image")
    rows = grid_rows(inputs["contents"], inputs["styles"], 2) + [
        {"content_uri": str(bad), "style_uri": inputs["styles"][1], "tag": "bad"}
    ]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = str(tmp_path / "out")
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "run",
            manifest,
            "--out",
            out,
            "--weights",
            WEIGHTS,
            "--size",
            "32",
            "--steps",
            "4",
            "--style-weight",
            "1000",
            "--no-progress",
            "--json",
            "--batch-size",
            "2",
        ],
    )
    assert result.exit_code == 2, result.output  # finished, with one failed row
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["done"] == 2 and summary["failed"] == 1
    recorded = json.loads((tmp_path / "out" / "run.json").read_text())
    assert recorded["params"]["size"] == 32 and recorded["params"]["steps"] == 4
    assert recorded["params"]["style_weight"] == 1000.0 and recorded["batch_size"] == "2"
    status = runner.invoke(app, ["status", out, "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["done"] == 2 and report["failed"] == 1 and report["failed_permanent"] == 1
    example = report["failures"]["bad_input"]["examples"][0]
    assert "text.png" in example["message"]
    human = runner.invoke(app, ["status", out])
    assert "bad_input" in human.stdout and "done" in human.stdout


def test_ledger_parts_are_valid_parquet_with_the_documented_schema(tmp_path: Path, inputs) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(inputs["contents"], inputs["styles"], 2))
    out = tmp_path / "out"
    run(manifest, str(out), params=StyleParams(size=32, steps=2))
    parts = sorted((out / "_ledger").iterdir())
    assert parts and all(p.name.startswith("part-") and p.suffix == ".parquet" for p in parts)
    for part in parts:
        assert pq.read_schema(part).names == LEDGER_SCHEMA.names


def test_out_of_memory_batches_are_split_in_half_until_they_fit(tmp_path: Path) -> None:
    from pipeline.cluster.driver import Driver
    from pipeline.cluster.tasks import RowTask

    # Defined here so Ray ships the class by value (the test module is not importable on the workers).
    class _OomBelowOneRow:
        """Stands in for a GPU that fits one image: any batch of more than one row reports out-of-memory."""

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def run_batch(self, spec):  # type: ignore[no-untyped-def]
            from pipeline.cluster.tasks import BatchOutcome, RowOutcome
            from pipeline.store.records import utcnow

            self.sizes.append(len(spec.rows))
            if len(spec.rows) > 1:
                return BatchOutcome(
                    spec.batch_id, [], "fake", "n", "cuda:0", oom=True, message="CUDA out of memory"
                )
            now = utcnow()
            rows = [
                RowOutcome(
                    t.row_id,
                    True,
                    now,
                    now,
                    final={"total": 1.0},
                    steps_run=1,
                    output_uri=t.output_uri,
                    curve_uri=spec.curve_uri,
                )
                for t in spec.rows
            ]
            return BatchOutcome(spec.batch_id, rows, "fake", "n", "cuda:0")

        def seen(self) -> list[int]:
            return self.sizes

        def info(self) -> dict:
            return {"name": "fake"}

    actor = ray.remote(_OomBelowOneRow).options(num_cpus=0, max_concurrency=2).remote()
    layout = OutputLayout(str(tmp_path / "out"))
    driver = Driver(
        actors=[actor],
        infos=[{"name": "fake"}],
        layout=layout,
        run_id="t",
        batch_size=lambda p: 8,
        max_attempts=1,
        storage_options=None,
        style_cache_size=4,
    )
    tasks = [
        RowTask(
            row_id=f"r{i}",
            index=i,
            content_uri="c",
            style_uri="s",
            params=PARAMS,
            output_uri=layout.image_uri(f"r{i}"),
        )
        for i in range(8)
    ]
    driver.add(tasks)
    stats = driver.run()
    sizes = ray.get(actor.seen.remote())
    assert stats.done == 8 and stats.failed == 0 and stats.oom_splits >= 2, sizes
    assert sizes[0] > 1 and max(sizes[sizes.index(1) :]) == 1  # halved down to single rows, never regrown
    assert sorted(s.row_id for s in row_states(read_ledger(layout)).values() if s.done) == sorted(
        t.row_id for t in tasks
    )


def test_a_temporary_file_left_by_a_killed_writer_is_gone_when_the_run_ends(tmp_path: Path, inputs) -> None:
    """A worker killed between creating its temporary file and renaming it leaves the file behind; its row
    is written again, so the run removes the orphan once no worker writes (not only at the next start)."""
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(inputs["contents"], inputs["styles"], 12))
    out = tmp_path / "out"
    thread = BackgroundRun(manifest=manifest, out=str(out), batch_size=1)
    deadline = time.monotonic() + 120
    while not part_paths(OutputLayout(str(out))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert thread.is_alive(), "the run finished before the orphan could be planted"
    orphan = out / "images" / ".tmp-0123456789abcdef"  # the name replaced_atomically gives a temporary file
    orphan.write_bytes(b"half an image")
    summary = thread.finish()
    assert summary.complete and summary.done == 12, summary
    assert not orphan.exists()
    check_output(str(out), manifest_ids(manifest))
