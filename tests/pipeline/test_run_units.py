"""Pieces of a run without Ray: output names, ledger merging and compaction, the memory model, URI checks."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nst_core.layers import layer_channels
from nst_core.params import OptimizerName, Precision, StyleParams
from pipeline.cluster.batching import auto_batch_size, bytes_per_image, resolved_for, w2_matrices_per_layer
from pipeline.cluster.runtime import ClusterInfo, RemoteLocalPathError, check_uris_reachable, plan_workers
from pipeline.cluster.worker import LRUCache
from pipeline.store.layout import OutputLayout, OutputNameError, check_inside, validate_output_name
from pipeline.store.ledger import compact, part_paths, read_ledger, row_states, write_part
from pipeline.store.records import ErrorKind, LedgerRecord, RowStatus

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record(
    row_id: str, status: RowStatus, attempt: int, minute: int, kind: ErrorKind | None = None
) -> LedgerRecord:
    return LedgerRecord(
        record_id=uuid.uuid4().hex,
        run_id="r",
        row_id=row_id,
        status=status,
        attempt=attempt,
        finished_at=T0 + timedelta(minutes=minute),
        error_kind=kind,
        error_message=None if kind is None else f"{kind.value} happened",
    )


@pytest.mark.parametrize(
    "name",
    [
        "../x.png",
        "/abs.png",
        "a/../../b.png",
        "s3://b/k.png",
        "a\\b.png",
        "x.gif",
        ".tmp-1-x.png",
        "",
        "a//b.png",
    ],
)
def test_unsafe_or_unsupported_output_names_are_refused(name: str) -> None:
    with pytest.raises(OutputNameError):
        validate_output_name(name)


def test_output_names_resolve_under_images(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    assert layout.image_uri("abc") == f"{tmp_path}/images/abc.png"
    assert layout.image_uri("abc", "cat.webp") == f"{tmp_path}/images/cat.webp"


def test_symlinked_folder_pointing_outside_out_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "link").symlink_to(outside)
    with pytest.raises(OutputNameError, match="outside"):
        check_inside(str(out), f"{out}/images/link/x.png")
    check_inside(str(out), f"{out}/images/x.png")


def test_row_state_done_wins_and_attempts_follow_the_latest_failure(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    write_part(
        layout,
        [
            record("a", RowStatus.failed, 1, 0, ErrorKind.storage),
            record("b", RowStatus.failed, 1, 0, ErrorKind.bad_input),
        ],
    )
    write_part(
        layout,
        [record("a", RowStatus.failed, 2, 1, ErrorKind.worker_lost), record("c", RowStatus.done, 1, 1)],
    )
    write_part(layout, [record("c", RowStatus.failed, 2, 2, ErrorKind.storage)])  # cannot undo a done row
    states = row_states(read_ledger(layout))
    assert states["a"].attempt == 2 and not states["a"].done and not states["a"].permanent_failure
    assert states["b"].permanent_failure and states["b"].last_error_message == "bad_input happened"
    assert states["c"].done and states["c"].done_records == 1


def test_compaction_keeps_every_record_once_even_if_interrupted(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    for i in range(5):
        write_part(layout, [record(f"r{i}", RowStatus.done, 1, i)])
    before = read_ledger(layout)
    # Simulate a crash after the merged part was written but before the old parts were deleted.
    merged = read_ledger(layout).to_pylist()
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.store.records import LEDGER_SCHEMA
    from pipeline.store.transfer import write_bytes_atomic

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(merged, schema=LEDGER_SCHEMA), sink)
    write_bytes_atomic(layout.new_ledger_part_uri(), sink.getvalue())
    assert read_ledger(layout).num_rows == before.num_rows == 5
    assert compact(layout, min_parts=2) == 6
    assert len(part_paths(layout)) == 1 and read_ledger(layout).num_rows == 5


def test_memory_model_counts_activations_like_an_independent_sum() -> None:
    params = StyleParams(
        size=64, steps=1, optimizer=OptimizerName.gd, style_layers=("relu1_1",), content_layers=("relu1_1",)
    )
    # Up to relu1_1: conv1_1 and relu1_1 outputs, 64 channels at 64x64 each, fp32.
    acts = 2 * 64 * 64 * 64
    expected = acts * 4 + 2 * (64 * 64 * 64) * 4 + 3 * 64 * 64 * 4 * 2 + 64 * 64 * 64 * 4 * 2
    assert layer_channels("vgg19")["relu1_1"] == 64
    assert bytes_per_image(params) == expected


def test_auto_batch_size_grows_with_memory_and_shrinks_with_size() -> None:
    small, large = StyleParams(size=256), StyleParams(size=1024)
    assert auto_batch_size(80 * 2**30, small) > auto_batch_size(80 * 2**30, large) >= 1
    assert auto_batch_size(8 * 2**30, small) <= auto_batch_size(80 * 2**30, small)
    assert auto_batch_size(1, small) == 1
    assert auto_batch_size(10**15, small, cap=7) == 7
    lbfgs = small.replace(optimizer=OptimizerName.lbfgs)
    assert bytes_per_image(lbfgs) > bytes_per_image(small)


def test_memory_model_follows_lbfgs_history_and_the_resolved_precision() -> None:
    lbfgs = StyleParams(size=256, optimizer=OptimizerName.lbfgs)
    pixels = 3 * 256 * 256 * 4
    # each history pair holds two pixel-sized vectors
    assert bytes_per_image(lbfgs) - bytes_per_image(lbfgs.replace(lbfgs_history=10)) == 2 * 90 * pixels
    auto = StyleParams(size=256)
    assert auto.precision == Precision.auto
    fp32, bf16 = auto.replace(precision=Precision.fp32), auto.replace(precision=Precision.bf16)
    assert bytes_per_image(auto) == bytes_per_image(fp32) > bytes_per_image(bf16)  # unknown device: the larger
    assert resolved_for(auto, "bf16") == bf16 and resolved_for(auto, None) == auto
    assert resolved_for(fp32, "bf16") == fp32  # an explicit precision is never overridden


def test_memory_model_counts_what_the_w2_loss_and_the_moving_average_keep() -> None:
    import torch

    from nst_core.losses import StyleLossW2, feature_moments, sqrtm_newton_schulz

    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    for n in (64, 512):  # the bytes autograd keeps for one image's W2 loss at one layer
        saved.clear()
        mean, cov = feature_moments(torch.rand(1, n, 8, 8))
        loss = StyleLossW2(mean[0], cov[0], sqrtm_newton_schulz(cov)[0])
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss(torch.rand(1, n, 8, 8, requires_grad=True))
        measured = sum(saved.values())
        assert w2_matrices_per_layer() * n * n * 4 == pytest.approx(measured, rel=0.05), (n, measured)
    gram = StyleParams(size=256)
    w2 = gram.replace(style_loss="w2")
    channels = layer_channels("vgg19")
    extra = sum(channels[name] ** 2 for name in gram.style_layers) * w2_matrices_per_layer() * 4
    assert bytes_per_image(w2) - bytes_per_image(gram) == extra
    assert bytes_per_image(gram.replace(ema_decay=0.99)) - bytes_per_image(gram) == 2 * 3 * 256 * 256 * 4


def test_lru_cache_evicts_least_recently_used() -> None:
    cache = LRUCache(2)
    cache["a"], cache["b"] = 1, 2
    _ = cache["a"]
    cache["c"] = 3
    assert list(cache) == ["a", "c"]


def test_local_paths_are_refused_on_a_multi_machine_cluster() -> None:
    remote = ClusterInfo(started_here=False, gpus=4, cpus=32, nodes=2, remote=True)
    with pytest.raises(RemoteLocalPathError, match="local path"):
        check_uris_reachable(["s3://b/out", "/home/me/cat.jpg"], remote)
    check_uris_reachable(["s3://b/out", "gs://b/cat.jpg"], remote)
    check_uris_reachable(["file:///mnt/shared/out", "file:///mnt/shared/cat.jpg"], remote)  # a shared mount
    check_uris_reachable(
        ["/home/me/cat.jpg"], ClusterInfo(started_here=True, gpus=0, cpus=2, nodes=1, remote=False)
    )


def test_worker_plan_is_one_actor_per_gpu_else_cpu_actors() -> None:
    gpu = plan_workers(ClusterInfo(started_here=True, gpus=4, cpus=2, nodes=1, remote=False), None)
    assert (gpu.count, gpu.num_gpus, gpu.num_cpus, gpu.on_gpu) == (4, 1, 0, True)
    cpu = plan_workers(ClusterInfo(started_here=True, gpus=0, cpus=8, nodes=1, remote=False), 2)
    assert (cpu.count, cpu.num_gpus, cpu.num_cpus, cpu.on_gpu) == (2, 0, 4, False)


def test_run_options_are_validated_once_and_are_the_run_record_and_the_worker_config(tmp_path: Path) -> None:
    from pipeline.run.options import RunOptions

    secret = "s3cr3t-value"
    options = RunOptions(
        manifest="m.parquet", out="s3://user:pw@bucket/run", storage_options={"secret": secret}, batch_size="4",
        read_timeout=90, storage_timeout=30, max_pixels=1000,
    )  # fmt: skip
    assert options.manifest == str(Path("m.parquet").resolve()) and options.fixed_batch == 4
    record = options.record()
    assert secret not in str(record) and "pw" not in str(record) and record["batch_size"] == "4"
    config = options.worker_config()
    assert config.out == options.out and config.max_pixels == 1000 and config.read_timeout == 30  # the smaller
    for bad, message in (
        ({"max_attempts": 0}, "--max-attempts"),
        ({"batch_size": "many"}, "--batch-size"),
        ({"read_timeout": 0}, "--read-timeout"),
        ({"out": "s4://typo/run"}, "unknown storage scheme"),
    ):
        with pytest.raises(ValueError, match=message):
            RunOptions(**{"manifest": "m.parquet", "out": str(tmp_path), **bad})  # type: ignore[arg-type]
