"""Run planned rows on Ray: start (or join) a cluster, start one worker per GPU, drive them, stop them.

Called by `run_manifest` once planning has left rows to do; the only place a run starts Ray. Everything
placement-specific is in `runtime`, the scheduling loop in `driver`; this module only puts them in order
and turns a failure to start into one clear line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from jobs.masking import mask_text, mask_uri
from nst_core.params import StyleParams
from pipeline.cluster.batching import CPU_CAP, GPU_CAP, auto_batch_size, resolved_for
from pipeline.cluster.driver import Driver
from pipeline.cluster.events import DriverStats, Execution, OnEvent, RunEnded, RunStarted
from pipeline.cluster.process import install_stop_handlers
from pipeline.cluster.runtime import WorkerPool, check_uris_reachable, plan_workers, ray_session
from pipeline.cluster.tasks import RowTask, WorkerConfig
from pipeline.store.errors import RunError, StorageError, describe_storage_error, is_storage_error
from pipeline.store.layout import OutputLayout


@dataclass(frozen=True)
class Settings:
    """The run-level settings the cluster side needs besides the workers' own `WorkerConfig`."""

    address: str | None
    num_workers: int | None
    fixed_batch: int | None
    max_attempts: int
    storage_timeout: float
    already_done: int = 0
    manifest_rows: int = 0
    max_workers: int | None = None
    """GPU clusters: grow onto GPUs that join, up to this many workers (None: one per GPU)."""
    request_gpus: bool = False


def execute(
    tasks: Sequence[RowTask],
    *,
    run_id: str,
    config: WorkerConfig,
    settings: Settings,
    on_workers: Callable[[list[dict[str, Any]]], None] | None = None,
    on_event: OnEvent | None = None,
) -> Execution:
    """Stylise `tasks`; every finished row is in the ledger when this returns (or raises)."""
    layout = OutputLayout(config.out)
    with ray_session(settings.address) as info:
        install_stop_handlers()  # after ray.init: its C++ SIGTERM handler would abort the process
        weights = [config.weights] if "://" in config.weights or config.weights.startswith("/") else []
        check_uris_reachable(
            [config.out, *(u for t in tasks for u in t.input_uris), *weights], info
        )
        plan = plan_workers(info, settings.num_workers)
        note = None
        if not plan.on_gpu:
            note = (
                f"no GPU in the Ray cluster: running {plan.count} CPU worker(s); this is slow "
                "(minutes per image at full size)"
            )
        pool = WorkerPool(plan, config, run_id, settings.max_workers, settings.request_gpus)
        actors = pool.actors
        try:
            infos = _worker_infos(actors, config)
            if on_workers is not None:
                on_workers(infos)
            driver = Driver(
                actors=actors,
                infos=infos,
                layout=layout,
                run_id=run_id,
                batch_size=_batch_sizer(infos, settings.fixed_batch, config.arch, GPU_CAP if plan.on_gpu else CPU_CAP),
                max_attempts=settings.max_attempts,
                storage_options=config.storage_options,
                style_cache_size=config.target_cache_size,
                on_event=on_event,
                storage_timeout=settings.storage_timeout,
                pool=pool,
            )
            driver.add(tasks)
            stats = _drive(driver, layout, config, settings, note, on_event)
        finally:
            pool.close()
    hits, misses = driver.cache_counts()
    workers = driver.worker_records()
    return Execution(stats=stats, remaining=driver.remaining(), cache_hits=hits, cache_misses=misses, workers=workers, note=note)


def _drive(
    driver: Driver, layout: OutputLayout, config: WorkerConfig, settings: Settings, note: str | None, on_event: OnEvent | None
) -> DriverStats:
    """The driver loop between a RunStarted and a RunEnded event; a ledger the store refuses is one line."""
    if on_event is not None:
        on_event(RunStarted(driver.total, settings.already_done, settings.manifest_rows, note))
    try:
        return driver.run()
    except StorageError:
        raise
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        raise StorageError(
            f"storage unreachable writing the ledger {mask_uri(layout.ledger_dir())}: "
            f"{describe_storage_error(exc, config.storage_options)}; {len(driver.buffer)} finished row(s) are not "
            "recorded and will be recomputed by the next run"
        ) from None
    finally:
        if on_event is not None:
            on_event(RunEnded())


def _worker_infos(actors: Sequence[Any], config: WorkerConfig) -> list[dict[str, Any]]:
    try:
        return list(ray.get([a.info.remote() for a in actors]))
    except ray.exceptions.RayActorError as exc:
        text = mask_text(_actor_error_text(exc), config.storage_options, (config.weights,))
        raise RunError(f"workers could not start: {text}") from None


def _batch_sizer(
    infos: Sequence[dict[str, Any]], fixed: int | None, arch: str, cap: int
) -> Callable[[StyleParams], int]:
    """Rows per batch for a parameter set: the fixed --batch-size, else what the smallest worker's free
    memory holds. `auto` precision counts as bf16 only if every worker resolves it so; otherwise the
    larger fp32 activations are sized for."""
    min_free = min(int(i["free_bytes"]) for i in infos)
    auto_means = {i.get("auto_precision") for i in infos}
    auto_means_all = auto_means.pop() if len(auto_means) == 1 else None

    def size_for(params: StyleParams) -> int:
        if fixed is not None:
            return fixed
        return auto_batch_size(min_free, resolved_for(params, auto_means_all), arch, cap=cap)

    return size_for


def _actor_error_text(exc: BaseException) -> str:
    text = str(exc)
    # Ray's message embeds the constructor's traceback; its last line is the actual error.
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
