"""The cluster wing's decisions without Ray: the scheduler's queue, the outage policy, the batch steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import pipeline.cluster.batch_run as batch_run
from nst_core.params import StyleParams
from pipeline.cluster.events import DriverStats
from pipeline.cluster.ledger_buffer import row_record
from pipeline.cluster.outage import OutagePolicy
from pipeline.cluster.scheduler import (
    DEATHS_BEFORE_ISOLATION,
    ISOLATED_DEATHS,
    SLOTS_PER_WORKER,
    Scheduler,
    WorkerSlot,
    retry_delay,
)
from pipeline.cluster.tasks import BatchSpec, RowTask, WorkerConfig, style_key
from pipeline.cluster.worker import StyleWorker
from pipeline.store.layout import OutputLayout, batch_id_for
from tests.pipeline.pipeline_checks import PARAMS, WEIGHTS, write_images

REFUSED = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
           "config_kwargs": {"retries": {"max_attempts": 1}}}  # fmt: skip
"""An S3 endpoint on the discard port: nothing listens, connections are refused at once."""


def task(i: int, style: str = "s.png", params: StyleParams = PARAMS, **kw: Any) -> RowTask:
    return RowTask(
        row_id=f"r{i}", index=i, content_uri=f"c{i}.png", style_uri=style, params=params, output_uri=f"o{i}.png", **kw
    )


def scheduler(tmp_path: Path, size: int = 4) -> Scheduler:
    return Scheduler(OutputLayout(str(tmp_path)), lambda p: size, style_cache_size=4)


def test_a_worker_gets_the_style_it_holds_else_one_nobody_holds(tmp_path: Path) -> None:
    queue = scheduler(tmp_path)
    queue.add([task(i, "a.png") for i in range(8)] + [task(i + 8, "b.png") for i in range(8)])
    first, second = WorkerSlot(actor=None, name="w0"), WorkerSlot(actor=None, name="w1")
    first.remember(style_key("b.png", PARAMS), 4)
    workers = [first, second]
    assert {t.style_uri for t in queue.next_batch(first, workers).rows} == {"b.png"}  # type: ignore[union-attr]
    spec = queue.next_batch(second, workers)
    assert spec is not None and {t.style_uri for t in spec.rows} == {"a.png"}  # not the style w0 holds
    assert spec.batch_id == batch_id_for(t.row_id for t in spec.rows) and spec.curve_uri.endswith(f"{spec.batch_id}.parquet")


def test_batches_shrink_near_the_end_so_every_worker_stays_busy(tmp_path: Path) -> None:
    queue = scheduler(tmp_path, size=8)
    queue.add([task(i) for i in range(6)])
    workers = [WorkerSlot(actor=None, name=f"w{i}") for i in range(3)]
    spec = queue.next_batch(workers[0], workers)
    assert spec is not None and len(spec.rows) == 1  # ceil(6 rows / (3 workers x 2 slots))
    assert SLOTS_PER_WORKER == 2


def test_an_out_of_memory_batch_is_halved_and_its_group_never_grows_back(tmp_path: Path) -> None:
    queue = scheduler(tmp_path, size=8)
    queue.add([task(i) for i in range(64)])
    worker = WorkerSlot(actor=None, name="w0")
    spec = queue.next_batch(worker, [worker])
    assert spec is not None and len(spec.rows) == 8
    queue.split(spec)
    again = queue.next_batch(worker, [worker])
    assert again is not None and [t.row_id for t in again.rows] == [t.row_id for t in spec.rows[:4]]
    queue.split(BatchSpec("x", spec.rows, "c"))  # a larger batch reporting late cannot raise the cap
    assert len(queue.next_batch(worker, [worker]).rows) == 4  # type: ignore[union-attr]


def test_retries_wait_in_order_of_their_due_time(tmp_path: Path) -> None:
    queue = scheduler(tmp_path)
    queue.later(task(1), 0.2)
    queue.later(task(2), 0.0)
    queue.release_delayed()
    assert [t.row_id for q in queue.groups.values() for t in q] == ["r2"]
    assert 0 < (queue.next_due() or 0) <= 0.2
    time.sleep(0.25)
    queue.release_delayed()
    assert queue.pending() == 2 and queue.next_due() is None
    assert [retry_delay(a) for a in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 30.0]


def test_a_dead_workers_rows_go_to_the_back_with_their_attempts_unspent(tmp_path: Path) -> None:
    queue = scheduler(tmp_path, size=2)
    queue.add([task(i) for i in range(6)])
    worker = WorkerSlot(actor=None, name="w0")
    spec = queue.next_batch(worker, [worker])
    assert spec is not None and [t.row_id for t in spec.rows] == ["r0", "r1"]
    assert queue.after_death(spec) == []
    order = [t for q in queue.groups.values() for t in q]
    assert [t.row_id for t in order] == ["r2", "r3", "r4", "r5", "r0", "r1"]  # not first again at the next death
    assert [(t.attempt, t.deaths) for t in order[-2:]] == [(1, 1), (1, 1)]


def test_a_row_that_keeps_dying_with_its_worker_runs_alone_then_fails(tmp_path: Path) -> None:
    queue = scheduler(tmp_path, size=2)
    worker = WorkerSlot(actor=None, name="w0")
    suspect, bystander = task(0, deaths=DEATHS_BEFORE_ISOLATION - 1), task(1)
    assert queue.after_death(BatchSpec("b", (suspect, bystander), "c")) == []
    assert [t.row_id for t in queue.isolated] == ["r0"] and queue.pending() == 2  # the bystander queues as usual
    poison: list[RowTask] = []
    for death in range(1, ISOLATED_DEATHS + 1):
        alone = queue.next_isolated()
        assert alone is not None and alone.alone and [t.row_id for t in alone.rows] == ["r0"]
        assert queue.next_batch(worker, [worker]) is not None or death > 1  # the bystander is not held back
        poison = queue.after_death(alone)
        assert (poison == []) == (death < ISOLATED_DEATHS)
    (failed,) = poison
    assert failed.attempt == 1 and failed.isolated_deaths == ISOLATED_DEATHS and queue.pending() == 0


def policy(root: str) -> tuple[OutagePolicy, DriverStats, list[tuple[RowTask, float]]]:
    stats: DriverStats = DriverStats()
    held: list[tuple[RowTask, float]] = []
    outage = OutagePolicy(root, REFUSED, storage_timeout=30, stats=stats, later=lambda t, d: held.append((t, d)))
    return outage, stats, held


def test_an_output_store_that_does_not_answer_holds_every_row_and_pauses(tmp_path: Path) -> None:
    outage, stats, held = policy("s3://bucket/out")
    assert outage.hold(task(1), "writing: refused", reported_unreachable=False)
    assert stats.storage_outages == 1 and outage.paused() and held[0][0].attempt == 1
    assert held[0][0].outage_holds == 1 and outage.gave_up() is None


def test_an_input_store_that_does_not_answer_holds_only_its_own_rows(tmp_path: Path) -> None:
    outage, stats, held = policy(str(tmp_path))
    row = task(1)
    row = RowTask(**{**row.__dict__, "content_uri": "s3://inputs/c.png"})
    assert outage.hold(row, "reading: refused", reported_unreachable=False)
    assert stats.storage_outages == 0 and not outage.paused()  # the other rows go on
    assert held[0][0].held_since is not None


def test_a_local_failure_spends_an_attempt(tmp_path: Path) -> None:
    outage, stats, held = policy(str(tmp_path))
    assert not outage.hold(task(1), "disk full", reported_unreachable=False)
    assert held == [] and stats.outage_requeues == 0


def test_an_outage_longer_than_the_storage_timeout_stops_the_run(tmp_path: Path) -> None:
    outage, _, _ = policy("s3://bucket/out")
    outage.storage_timeout = 0.05
    outage.hold_for_outage(task(1), "refused")
    time.sleep(0.1)
    reason = outage.gave_up()
    assert reason is not None and "--storage-timeout" in reason and "refused" in reason


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> StyleWorker:
    out = tmp_path_factory.mktemp("out")
    return StyleWorker(WorkerConfig(weights=WEIGHTS, out=str(out)), name="w-test")


def batch(worker: StyleWorker, tmp_path: Path, n: int) -> BatchSpec:
    contents = write_images(tmp_path, "content", n, seed=3)
    style = write_images(tmp_path, "style", 1, seed=4, shape=(48, 48))[0]
    layout = OutputLayout(worker.config.out)
    rows = tuple(
        RowTask(row_id=f"{tmp_path.name}-{i}", index=i, content_uri=c, style_uri=style, params=PARAMS,
                output_uri=layout.image_uri(f"{tmp_path.name}-{i}"))
        for i, c in enumerate(contents)
    )  # fmt: skip
    batch_id = batch_id_for(r.row_id for r in rows)
    return BatchSpec(batch_id=batch_id, rows=rows, curve_uri=layout.curve_uri(batch_id))


def test_a_batch_is_scored_in_one_feature_pass(worker: StyleWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = batch_run.feature_metrics_per_image

    def counting(model: Any, output: Any, *args: Any) -> Any:
        calls.append(int(output.shape[0]))
        return real(model, output, *args)

    monkeypatch.setattr(batch_run, "feature_metrics_per_image", counting)
    outcome = worker.run_batch(batch(worker, tmp_path, 3))
    assert all(r.ok for r in outcome.rows) and calls == [3]
    assert all(r.metrics and "gram_err" in r.metrics and "ssim" in r.metrics for r in outcome.rows)


def test_a_metrics_failure_is_recorded_on_the_row_which_stays_done(
    worker: StyleWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("scoring exploded")

    monkeypatch.setattr(batch_run, "feature_metrics_per_image", broken)
    spec = batch(worker, tmp_path, 2)
    outcome = worker.run_batch(spec)
    assert all(r.ok and r.metrics is None for r in outcome.rows)
    assert all(r.metrics_error == "RuntimeError: scoring exploded" for r in outcome.rows)
    assert all(Path(t.output_uri).exists() for t in spec.rows)
    record = row_record("run", spec.rows[0], outcome.rows[0], outcome, spec, None)
    assert record.to_row()["metrics_error"] == "RuntimeError: scoring exploded"
    assert "scoring exploded" not in capsys.readouterr().out  # recorded, not printed
