"""Connect to a Ray cluster, or start an embedded local one sized to this machine; create the worker actors.

Called by `run_manifest`. Keeps every Ray-specific decision about placement (one actor per GPU, CPU
actors otherwise, spreading over nodes) in one place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ray
from fsspec.core import split_protocol

from pipeline.batching import cpu_count
from pipeline.storage import is_local
from pipeline.tasks import WorkerConfig

LOCAL_OBJECT_STORE_BYTES = 512 * 2**20
"""The driver ships only small messages through Ray; images go through storage."""
LOCAL_ADDRESSES = frozenset({"local"})


class RemoteLocalPathError(ValueError):
    """A local path given while the workers run on other machines, which cannot see it."""


@dataclass(frozen=True)
class ClusterInfo:
    started_here: bool
    gpus: int
    cpus: int
    nodes: int
    remote: bool
    """Whether any worker may run on another machine (a ray:// client or a node with another IP)."""


@contextmanager
def ray_session(address: str | None) -> Iterator[ClusterInfo]:
    """Reuse an initialised Ray, connect to `address`, or start a local Ray (shut down on exit)."""
    started = False
    if not ray.is_initialized():
        if address in (None, *LOCAL_ADDRESSES):
            # Keep an embedded Ray on loopback; it must never try to form a cluster across interfaces.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray.init(
                address="local",
                num_cpus=cpu_count(),
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=True,
                configure_logging=False,
            )
        else:
            ray.init(address=address, log_to_driver=True, configure_logging=False)
        started = True
    try:
        yield cluster_info(address, started_here=started)
    finally:
        if started:
            ray.shutdown()


def cluster_info(address: str | None, *, started_here: bool) -> ClusterInfo:
    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    driver_ip = ray.util.get_node_ip_address()
    other_ip = any(n.get("NodeManagerAddress") != driver_ip for n in nodes)
    client = bool(address and address.startswith("ray://"))
    return ClusterInfo(
        started_here=started_here,
        gpus=int(resources.get("GPU", 0)),
        cpus=int(resources.get("CPU", 0)),
        nodes=len(nodes),
        remote=client or other_ip,
    )


def check_uris_reachable(uris: Sequence[str], info: ClusterInfo) -> None:
    """Fail before starting when local paths would be read or written on other machines.

    A plain path is this machine's; an explicit `file://` URI is the user's statement that the path is a
    mount shared by every node (NFS, FSx, a Kubernetes volume), so it is allowed.
    """
    if not info.remote:
        return
    local = [u for u in uris if is_local(u) and split_protocol(u)[0] is None]
    if local:
        shown = ", ".join(sorted(set(local))[:3])
        raise RemoteLocalPathError(
            f"{len(set(local))} local path(s) (e.g. {shown}) cannot be used with a multi-machine Ray cluster: "
            "workers on other machines cannot see this machine's files. Put inputs and --out on shared "
            "storage (s3://, gs://, az:// or a mount at the same path on every node given as file://) and retry."
        )


@dataclass(frozen=True)
class WorkerPlan:
    count: int
    num_gpus: float
    num_cpus: float
    on_gpu: bool


def plan_workers(info: ClusterInfo, num_workers: int | None) -> WorkerPlan:
    """One actor per GPU (num_cpus=0, so a GPU actor never waits for a CPU slot); else CPU actors.

    CPU actors split the CPUs between them: Ray sets each actor's OMP_NUM_THREADS from its num_cpus,
    which is the thread count torch then uses.
    """
    if info.gpus > 0:
        count = min(num_workers or info.gpus, info.gpus)
        return WorkerPlan(count=count, num_gpus=1, num_cpus=0, on_gpu=True)
    count = max(1, num_workers or 1)
    per_actor = max(1, info.cpus // count) if info.nodes == 1 else 1
    return WorkerPlan(count=count, num_gpus=0, num_cpus=per_actor, on_gpu=False)


def create_workers(plan: WorkerPlan, config: WorkerConfig, run_id: str) -> list[Any]:
    """Start the actors. They restart after a crash (the driver reschedules their rows itself)."""
    from pipeline.worker import StyleWorker

    remote_cls = ray.remote(StyleWorker)
    actors = []
    for i in range(plan.count):
        name = f"nst-worker-{run_id}-{i}"
        actor = remote_cls.options(
            name=name,
            num_gpus=plan.num_gpus,
            num_cpus=plan.num_cpus,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=2,
            scheduling_strategy="SPREAD",
        ).remote(config, name=f"w{i}")
        actors.append(actor)
    return actors


def kill_workers(actors: Sequence[Any]) -> None:
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
