"""`run_manifest`: plan a run from the manifest minus the ledger's done set, run it on Ray, record it.

Called by `nst run`, `nst demo` and library users. Planning (what to compute, with which attempt number)
happens before Ray starts, so a fully done output re-runs in seconds without starting a cluster.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import wraps
from typing import Any

from nst_core.params import Arch, StyleParams
from pipeline.lease import LeaseHeld, lease_run_id, one_run_per_output
from pipeline.ledger import (
    ErrorKind,
    LedgerRecord,
    RowState,
    RowStatus,
    compact,
    read_ledger,
    referenced_curves,
    row_states,
    utcnow,
    write_part,
)
from pipeline.outputs import (
    CURVES_DIR,
    OutputLayout,
    OutputNameError,
    check_layout_inside,
    image_format,
    list_files,
    sweep_temporary,
)
from pipeline.process import install_stop_handlers
from pipeline.storage import (
    StorageError,
    describe_storage_error,
    filesystem,
    is_storage_error,
    join,
    known_protocol,
    mask_options,
    mask_text,
    mask_uri,
    protocol_of,
    read_bytes,
    set_operation_timeout,
    storage_errors,
    write_bytes_atomic,
)
from pipeline.tasks import DEFAULT_MAX_PIXELS, READ_TIMEOUT_S, STORAGE_TIMEOUT_S, RowTask, WorkerConfig

STYLE_CACHE_SIZE = 32
DEFAULT_MAX_ROWS = 10_000_000
"""`--max-rows`: the driver keeps one small task per planned row in memory (~1 KB each), so a manifest
far beyond this is more likely a mistake (a cross join) than a run; split it or raise the limit."""


class RunError(RuntimeError):
    """The run could not start or had to stop (the message says why and what to do)."""


@dataclass
class RunSummary:
    run_id: str
    out: str
    manifest_rows: int
    already_done: int
    planned: int
    done: int
    failed: int
    retried: int
    not_retried: int
    """Rows left failed from earlier runs (bad input, or attempts exhausted): see --retry-failed."""
    remaining: int
    """Rows neither done nor failed for good when the run stopped (interrupted, aborted)."""
    duplicates: int
    seconds: float
    rows_per_hour: float
    cache_hits: int
    cache_misses: int
    workers: list[dict[str, Any]] = field(default_factory=list)
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    aborted: str | None = None
    oom_splits: int = 0
    worker_losses: int = 0
    storage_outages: int = 0
    """Episodes in which storage did not answer; their rows were held back without spending attempts."""
    note: str | None = None

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else None

    @property
    def complete(self) -> bool:
        return self.remaining == 0 and not self.interrupted and self.aborted is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cache_hit_rate"] = self.cache_hit_rate
        return data


@dataclass
class Plan:
    tasks: list[RowTask]
    records: list[LedgerRecord]
    """Failures decided while planning (bad manifest rows, bad output names): recorded before the run."""
    manifest_rows: int = 0
    already_done: int = 0
    not_retried: int = 0
    duplicates: int = 0


def plan_rows(
    manifest: str,
    params: StyleParams,
    layout: OutputLayout,
    states: Mapping[str, RowState],
    *,
    run_id: str,
    max_attempts: int,
    retry_failed: bool,
    storage_options: Mapping[str, Any] | None,
) -> Plan:
    """Manifest rows minus done rows; failed rows only while attempts remain (or with --retry-failed)."""
    from jobs import ManifestRow, iter_manifest

    plan = Plan(tasks=[], records=[])
    seen: set[str] = set()
    claimed: dict[str, str] = {}  # output URI -> row id
    for state in states.values():
        if state.done and state.done_record and state.done_record.get("output_uri"):
            claimed[absolute_uri(state.done_record["output_uri"])] = state.row_id  # older runs: relative

    def record_failure(row_id: str, index: int, kind: ErrorKind, message: str, **extra: Any) -> None:
        plan.records.append(
            LedgerRecord(
                record_id=uuid.uuid4().hex,
                run_id=run_id,
                row_id=row_id,
                manifest_index=index,
                status=RowStatus.failed,
                attempt=1,
                error_kind=kind,
                error_message=mask_text(message, storage_options),
                finished_at=utcnow(),
                **extra,
            )
        )

    for item in iter_manifest(manifest, defaults=params, storage_options=dict(storage_options or {})):
        plan.manifest_rows += 1
        if not isinstance(item, ManifestRow):
            row_id = item.row_id or f"manifest-row-{item.index}"
            if row_id in seen:
                plan.duplicates += 1
                continue
            seen.add(row_id)
            state = states.get(row_id)
            if state is not None and state.done:
                plan.already_done += 1
            elif state is not None and not retry_failed:
                plan.not_retried += 1
            else:
                where = f" column {item.column!r}" if item.column else ""
                record_failure(
                    row_id,
                    item.index,
                    ErrorKind.bad_manifest_row,
                    f"manifest row {item.index}{where}: {item.message}",
                )
            continue
        if item.row_id in seen:
            plan.duplicates += 1
            continue
        seen.add(item.row_id)
        state = states.get(item.row_id)
        if state is not None and state.done:
            plan.already_done += 1
            continue
        attempt = 1
        if state is not None and not retry_failed:
            if state.permanent_failure or state.attempt >= max_attempts:
                plan.not_retried += 1
                continue
            attempt = state.attempt + 1
        extra = {
            "content_uri": item.content_uri,
            "style_uri": item.style_uri,
            "metadata": dict(item.metadata),
        }
        try:
            output_uri = layout.image_uri(item.row_id, item.output_name)
            fmt = image_format(output_uri)
        except OutputNameError as exc:
            record_failure(
                item.row_id, item.index, ErrorKind.bad_output_name, f"row {item.index}: {exc}", **extra
            )
            continue
        owner = claimed.setdefault(output_uri, item.row_id)
        if owner != item.row_id:
            record_failure(
                item.row_id,
                item.index,
                ErrorKind.bad_output_name,
                f"row {item.index}: output {mask_uri(output_uri)} is already the output of row {owner}",
                **extra,
            )
            continue
        plan.tasks.append(
            RowTask(
                row_id=item.row_id,
                index=item.index,
                content_uri=item.content_uri,
                style_uri=item.style_uri,
                params=item.params,
                output_uri=output_uri,
                image_format=fmt,
                metadata=dict(item.metadata),
                attempt=attempt,
            )
        )
    return plan


def sweep_orphan_curves(
    layout: OutputLayout, referenced: set[str], storage_options: Mapping[str, Any] | None
) -> int:
    """Delete curve files no done record points to: leftovers of batches whose driver died before recording.

    Their rows are not done, so they are recomputed into a new curve file; keeping the old one would
    leave a second, unreferenced curve for the same row in the listing.
    """
    directory = join(layout.root, CURVES_DIR)
    fs, _ = filesystem(directory, storage_options)
    # By file name (a batch id): the ledger records URIs with any `user:password@` masked.
    refs = {u.rsplit("/", 1)[-1] for u in referenced}
    removed = 0
    for path in list_files(directory, storage_options):
        if path.endswith(".parquet") and path.rsplit("/", 1)[-1] not in refs:
            fs.rm_file(path)
            removed += 1
    return removed


def manifest_sha256(manifest: str, storage_options: Mapping[str, Any] | None) -> str | None:
    try:
        from jobs import manifest_fingerprint

        return str(manifest_fingerprint(manifest, storage_options=dict(storage_options or {})))
    except Exception:  # noqa: BLE001 - the hash is informative; the run itself reads the manifest
        return None


def read_run_json(layout: OutputLayout, storage_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    try:
        return json.loads(read_bytes(layout.run_json_uri(), storage_options))  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return None


def write_run_json(
    layout: OutputLayout, data: dict[str, Any], storage_options: Mapping[str, Any] | None
) -> None:
    write_bytes_atomic(
        layout.run_json_uri(),
        json.dumps(data, indent=2, sort_keys=True, default=str).encode(),
        storage_options,
    )


def _one_run(func: Callable[..., RunSummary]) -> Callable[..., RunSummary]:
    """Hold the output's lease for the whole run (pipeline/lease.py); a held lease is a one-line RunError."""
    leased = one_run_per_output(func)

    @wraps(func)
    def wrapper(**kwargs: Any) -> RunSummary:
        read_timeout = kwargs.get("read_timeout", READ_TIMEOUT_S)
        storage_timeout = kwargs.get("storage_timeout", STORAGE_TIMEOUT_S)
        if read_timeout > 0 and storage_timeout > 0:  # else the run refuses them with its own message
            _bound_storage_operations(read_timeout, storage_timeout)  # the lease is the first operation
        _check_weights_before_ray(  # bad weights fail before anything, the lease included, is written
            kwargs.get("weights", "imagenet"),
            kwargs.get("weights_sha256"),
            _arch_name(kwargs.get("arch", "vgg19")),
            kwargs.get("address"),
            kwargs.get("storage_options"),
        )
        try:
            return leased(**kwargs)
        except LeaseHeld as exc:
            raise RunError(str(exc)) from None

    return wrapper


@_one_run
def run_manifest(
    *,
    manifest: str,
    out: str,
    params: StyleParams,
    address: str | None = None,
    weights: str = "imagenet",
    weights_sha256: str | None = None,
    arch: str = "vgg19",
    batch_size: int | str = "auto",
    max_attempts: int = 3,
    retry_failed: bool = False,
    storage_options: dict[str, Any] | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    progress_interval: float = 30.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_rows: int = DEFAULT_MAX_ROWS,
    storage_timeout: float = STORAGE_TIMEOUT_S,
    compile: bool = False,
    read_timeout: float = READ_TIMEOUT_S,
    force: bool = False,
) -> RunSummary:
    """Stylise every row of `manifest` not yet done in `out`; safe to re-run after any failure.

    One run per output: a second run on the same `out` refuses while the first holds its lease; `force`
    takes over a lease whose heartbeat is stale (pipeline/lease.py). The weights are checked before the
    lease is taken (`_one_run`).
    """
    import ray

    from pipeline.batching import CPU_CAP, GPU_CAP, auto_batch_size, resolved_for
    from pipeline.driver import Driver
    from pipeline.progress import RunProgress
    from pipeline.provenance import package_versions
    from pipeline.ray_runtime import (
        check_uris_reachable,
        create_workers,
        kill_workers,
        plan_workers,
        ray_session,
    )

    if max_attempts < 1:
        raise ValueError(f"--max-attempts must be >= 1, got {max_attempts}")
    if max_pixels < 1 or max_rows < 1:
        raise ValueError(f"--max-pixels and --max-rows must be >= 1, got {max_pixels} and {max_rows}")
    if not storage_timeout > 0:
        raise ValueError(f"--storage-timeout must be > 0 seconds, got {storage_timeout}")
    _bound_storage_operations(read_timeout, storage_timeout)
    fixed_batch = _parse_batch_size(batch_size)
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"--workers must be >= 1, got {num_workers}")
    arch = Arch(arch).value
    for uri, what in ((manifest, "manifest"), (out, "--out")):
        if not known_protocol(uri):
            raise ValueError(f"{what} {mask_uri(uri)}: unknown storage scheme {protocol_of(uri)!r}")
    options = dict(storage_options or {})
    manifest, out = absolute_uri(manifest), absolute_uri(out)
    layout = OutputLayout(out)
    run_id = lease_run_id() or f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    started_wall = time.time()
    started_at = utcnow()

    check_layout_inside(out)  # before any sweep or write could follow a symlink out of --out
    _check_row_count(manifest, max_rows, options)
    with storage_errors(f"reading {mask_uri(out)}", options):
        sweep_temporary(out)
        table = read_ledger(layout, options)
        states = row_states(table)
    plan = plan_rows(
        manifest,
        params,
        layout,
        states,
        run_id=run_id,
        max_attempts=max_attempts,
        retry_failed=retry_failed,
        storage_options=options,
    )
    with storage_errors(f"writing {mask_uri(out)}", options):
        write_part(layout, plan.records, options)
        sweep_orphan_curves(layout, referenced_curves(table), options)
        previous = read_run_json(layout, options) or {}
    history = list(previous.get("history", []))
    record: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "started_at": started_at.isoformat(),
        "manifest": mask_uri(manifest),
        "manifest_sha256": manifest_sha256(manifest, options),
        "out": mask_uri(out),
        "address": _recorded_address(address),
        "params": params.to_dict(),
        "weights": {"source": mask_uri(weights), "sha256": weights_sha256, "arch": arch},
        "batch_size": batch_size,
        "max_attempts": max_attempts,
        "retry_failed": retry_failed,
        "max_pixels": max_pixels,
        "max_rows": max_rows,
        "storage_timeout": storage_timeout,
        "compile": compile,
        "storage_options": mask_options(options),
        "versions": package_versions(),
        "history": history,
    }
    summary = RunSummary(
        run_id=run_id,
        out=mask_uri(out),
        manifest_rows=plan.manifest_rows,
        already_done=plan.already_done,
        planned=len(plan.tasks),
        done=0,
        failed=len(plan.records),
        retried=0,
        not_retried=plan.not_retried,
        remaining=len(plan.tasks),
        duplicates=plan.duplicates,
        seconds=0.0,
        rows_per_hour=0.0,
        cache_hits=0,
        cache_misses=0,
        failures_by_kind=_count_kinds(plan.records),
    )
    if not plan.tasks:
        summary.seconds = time.time() - started_wall
        _close_run(record, summary, layout, options, history)
        return summary

    with storage_errors(f"writing {mask_uri(layout.run_json_uri())}", options):
        write_run_json(layout, record, options)
    with ray_session(address) as info, _ending_recorded(record, layout, options, history):
        install_stop_handlers()  # after ray.init: its C++ SIGTERM handler would abort the process
        check_uris_reachable(
            [out]
            + [t.content_uri for t in plan.tasks]
            + [t.style_uri for t in plan.tasks]
            + ([weights] if "://" in weights or weights.startswith("/") else []),
            info,
        )
        worker_plan = plan_workers(info, num_workers)
        if not worker_plan.on_gpu:
            summary.note = (
                f"no GPU in the Ray cluster: running {worker_plan.count} CPU worker(s); this is slow "
                "(minutes per image at full size)"
            )
        config = WorkerConfig(
            weights=weights,
            weights_sha256=weights_sha256,
            arch=arch,
            storage_options=options,
            out=out,
            target_cache_size=STYLE_CACHE_SIZE,
            max_pixels=max_pixels,
            compile=compile,
            read_timeout=min(read_timeout, storage_timeout),
        )
        actors = create_workers(worker_plan, config, run_id)
        try:
            try:
                infos = ray.get([a.info.remote() for a in actors])
            except ray.exceptions.RayActorError as exc:
                raise RunError(
                    f"workers could not start: {mask_text(_actor_error_text(exc), options, (weights,))}"
                ) from None
            record["workers"] = [{k: i[k] for k in ("name", "node", "device", "gpu_ids")} for i in infos]
            record["weights"].update(
                source=infos[0].get("weights_source"), sha256=infos[0].get("weights_sha256")
            )
            summary.workers = record["workers"]
            min_free = min(int(i["free_bytes"]) for i in infos)
            cap = GPU_CAP if worker_plan.on_gpu else CPU_CAP
            # auto is bf16 only if every worker resolves it so; otherwise size for the larger fp32 activations
            auto_means = {i.get("auto_precision") for i in infos}
            auto_means_all = auto_means.pop() if len(auto_means) == 1 else None

            def size_for(p: StyleParams) -> int:
                if fixed_batch is not None:
                    return fixed_batch
                return auto_batch_size(min_free, resolved_for(p, auto_means_all), arch, cap=cap)

            display = RunProgress(
                enabled=progress,
                total=len(plan.tasks),
                note=summary.note,
                interval=progress_interval,
                already_done=plan.already_done,
                manifest_rows=plan.manifest_rows,
            )
            driver = Driver(
                actors=actors,
                infos=infos,
                layout=layout,
                run_id=run_id,
                batch_size=size_for,
                max_attempts=max_attempts,
                storage_options=options,
                style_cache_size=STYLE_CACHE_SIZE,
                on_event=display.update,
                storage_timeout=storage_timeout,
            )
            driver.add(plan.tasks)
            try:
                with display:
                    stats = driver.run()
            except StorageError:
                raise
            except Exception as exc:
                if not is_storage_error(exc):
                    raise
                raise StorageError(
                    f"storage unreachable writing the ledger {mask_uri(layout.ledger_dir())}: "
                    f"{describe_storage_error(exc, options)}; {len(driver.buffer)} finished row(s) are not "
                    "recorded and will be recomputed by the next run"
                ) from None
        finally:
            kill_workers(actors)
    summary.done = stats.done
    summary.failed += stats.failed
    summary.retried = stats.retried
    summary.remaining = driver.remaining()
    summary.interrupted = stats.interrupted
    summary.aborted = stats.aborted
    summary.oom_splits = stats.oom_splits
    summary.worker_losses = stats.worker_losses
    summary.storage_outages = stats.storage_outages
    for kind, n in stats.failures_by_kind.items():
        summary.failures_by_kind[kind] = summary.failures_by_kind.get(kind, 0) + n
    summary.cache_hits, summary.cache_misses = driver.cache_counts()
    summary.seconds = time.time() - started_wall
    summary.rows_per_hour = summary.done / summary.seconds * 3600 if summary.seconds > 0 else 0.0
    _close_run(record, summary, layout, options, history)
    return summary


def _arch_name(arch: Any) -> str:
    try:
        return Arch(arch).value
    except ValueError:
        return str(arch)  # refused by the weights check with the allowed names


def _bound_storage_operations(read_timeout: float, storage_timeout: float) -> None:
    """Every storage operation of the driver fails after --read-timeout (and never outlasts
    --storage-timeout), so a store that stops answering shows up as failures the outage logic can count."""
    if not read_timeout > 0:
        raise ValueError(f"--read-timeout must be > 0 seconds, got {read_timeout}")
    set_operation_timeout(min(read_timeout, storage_timeout))


def _close_run(
    record: dict[str, Any],
    summary: RunSummary,
    layout: OutputLayout,
    options: dict[str, Any],
    history: list[Any],
) -> None:
    """Compact the ledger (also on a no-op re-run: it removes duplicates a killed compaction left), count
    this run's done rows from the records that exist, and write the final run.json."""
    try:
        compact(layout, options)
    except KeyboardInterrupt:
        summary.interrupted = True
    except Exception as exc:  # noqa: BLE001 - compaction is an optimisation; the parts are intact
        if not is_storage_error(exc):
            raise
    summary.done = _recorded_done(layout, options, summary.run_id, summary.done)
    with storage_errors(f"writing {mask_uri(layout.run_json_uri())}", options):
        _finish_record(record, summary, layout, options, history)


def _recorded_done(layout: OutputLayout, options: dict[str, Any], run_id: str, counted: int) -> int:
    """Rows this run recorded done, from the ledger itself: records lost with a deleted --out do not count."""
    if not counted:
        return counted
    try:
        table = read_ledger(layout, options)
    except Exception:  # noqa: BLE001 - the driver's own count stands when the ledger cannot be read
        return counted
    rows = table.select(["run_id", "status", "row_id"]).to_pylist()
    return len({r["row_id"] for r in rows if r["run_id"] == run_id and r["status"] == RowStatus.done.value})


@contextmanager
def _ending_recorded(
    record: dict[str, Any], layout: OutputLayout, options: dict[str, Any], history: list[Any]
) -> Iterator[None]:
    """run.json never stays `running` after the process ends: an exception or a stop signal escaping the
    run is recorded (`failed` with the error line, or `interrupted`) before it propagates."""
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        record["status"] = "interrupted" if interrupted else "failed"
        record["error"] = "interrupted" if interrupted else mask_text(
            " ".join((str(exc) or type(exc).__name__).split()), options
        )
        record["finished_at"] = utcnow().isoformat()
        history.append({k: record.get(k) for k in ("run_id", "status", "started_at", "finished_at", "error")})
        record["history"] = history[-100:]
        try:
            write_run_json(layout, record, options)
        except Exception:  # noqa: BLE001 - the store may be the reason; the original error matters more
            pass
        raise


def _check_weights_before_ray(
    weights: str, sha256: str | None, arch: str, address: str | None, options: Mapping[str, Any] | None
) -> None:
    """A bad --weights fails here in a second, before Ray is even imported, not after every actor started."""
    from pipeline.ray_runtime import resolve_address
    from pipeline.weights import check_weights

    if not known_protocol(weights):
        raise ValueError(f"--weights {mask_uri(weights)}: unknown storage scheme {protocol_of(weights)!r}")
    # ImageNet weights are fetched into this machine's cache only when the workers share it.
    check_weights(
        weights, sha256=sha256, arch=arch, storage_options=options, fetch_imagenet=resolve_address(address) is None
    )


def absolute_uri(uri: str) -> str:
    """A plain local path made absolute, so run.json and the ledger mean the same file from any directory."""
    from fsspec.core import split_protocol

    if split_protocol(uri)[0] is None:
        return os.path.abspath(os.path.expanduser(uri))
    return uri


def _recorded_address(address: str | None) -> str | None:
    """The cluster this run joins ($RAY_ADDRESS included), or None for an embedded Ray."""
    from pipeline.ray_runtime import resolve_address

    target = resolve_address(address)
    return mask_uri(target) if target else None


def _check_row_count(manifest: str, max_rows: int, options: Mapping[str, Any] | None) -> None:
    """Refuse a manifest larger than --max-rows from its footer alone, before reading any row."""
    from jobs import ManifestError
    from jobs.reader import manifest_layout

    try:
        _, rows = manifest_layout(manifest, options)
    except ManifestError:
        return  # unreadable: plan_rows reports it with its own message
    if rows > max_rows:
        raise RunError(
            f"manifest {mask_uri(manifest)} has {rows} rows, more than --max-rows {max_rows}; "
            "split it into several runs or raise --max-rows"
        )


def _finish_record(
    record: dict[str, Any],
    summary: RunSummary,
    layout: OutputLayout,
    options: dict[str, Any],
    history: list[Any],
) -> None:
    record["status"] = "interrupted" if summary.interrupted else "aborted" if summary.aborted else "completed"
    record["finished_at"] = utcnow().isoformat()
    record["stats"] = summary.to_dict()
    history.append(
        {k: record.get(k) for k in ("run_id", "status", "started_at", "finished_at")}
        | {"done": summary.done, "failed": summary.failed, "seconds": summary.seconds}
    )
    record["history"] = history[-100:]
    write_run_json(layout, record, options)


def _count_kinds(records: list[LedgerRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        key = r.error_kind.value if r.error_kind is not None else "unknown"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _parse_batch_size(batch_size: int | str) -> int | None:
    if isinstance(batch_size, int) and not isinstance(batch_size, bool):
        value = batch_size
    elif isinstance(batch_size, str) and batch_size.strip().lower() == "auto":
        return None
    else:
        try:
            value = int(str(batch_size))
        except ValueError:
            raise ValueError(
                f"--batch-size must be a positive integer or 'auto', got {batch_size!r}"
            ) from None
    if value < 1:
        raise ValueError(f"--batch-size must be a positive integer or 'auto', got {batch_size!r}")
    return value


def _actor_error_text(exc: BaseException) -> str:
    text = str(exc)
    # Ray's message embeds the constructor's traceback; its last line is the actual error.
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
