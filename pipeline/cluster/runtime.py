"""Connect to a Ray cluster, or start an embedded local one sized to this machine; create the worker actors.

Called by `run_manifest`. Keeps every Ray-specific decision about placement (one actor per GPU, CPU
actors otherwise, spreading over nodes) in one place.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fsspec.core import split_protocol

from pipeline.cluster.batching import cpu_count
from pipeline.cluster.tasks import WorkerConfig
from pipeline.store.fs import is_local

LOCAL_OBJECT_STORE_BYTES = 512 * 2**20
"""The driver ships only small messages through Ray; images go through storage."""


LOCAL_ADDRESSES = frozenset({"local"})


ADDRESS_ENV = "RAY_ADDRESS"


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray reads it once, at `import ray`, in every process: "0" makes a node bind and advertise 127.0.0.1 only."""


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


def resolve_address(address: str | None) -> str | None:
    """The cluster to join, or None for an embedded Ray, as Ray's own tools decide it.

    No --address means $RAY_ADDRESS when set (what `ray job submit` gives its entrypoint), else an
    embedded Ray; `--address local` forces an embedded Ray even when $RAY_ADDRESS is set.
    """
    if address is None:
        address = os.environ.get(ADDRESS_ENV) or None
    if address is None or address in LOCAL_ADDRESSES:
        return None
    return address


@contextmanager
def loopback_only() -> Iterator[None]:
    """Make the Ray started inside this block bind 127.0.0.1 only, whether or not `ray` is imported yet.

    The environment variable reaches the processes Ray spawns (GCS, raylet, agents, workers), which read
    it at their own `import ray`; this process read it when it first imported Ray, so when that already
    happened its parsed value is corrected too. Both are restored on exit, so a later connection to a
    real cluster from the same process advertises the machine's address again.
    """
    previous = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    previous_flag = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None:
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 - a module attribute Ray reads at node start
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = previous
        _restore_cluster_flag(previous_flag)


def _restore_cluster_flag(previous_flag: bool | None) -> None:
    """Give this process's parsed flag the value the restored environment means (Ray imported or not)."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is None:
        return
    if previous_flag is None:  # Ray was first imported inside the block: parse as Ray does at import
        parse = getattr(constants, "env_bool", None)
        if parse is None:
            return
        previous_flag = bool(parse(LOOPBACK_ENV, not getattr(constants, "IS_WINDOWS_OR_OSX", False)))
    setattr(constants, "ENABLE_RAY_CLUSTER", previous_flag)  # noqa: B010


def ray_initialized() -> bool:
    """Whether this process is already connected to Ray (without importing Ray to find out)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


@contextmanager
def ray_session(address: str | None) -> Iterator[ClusterInfo]:
    """Reuse an initialised Ray, join `address` (or $RAY_ADDRESS), or start an embedded local Ray.

    An embedded Ray is started with address="local" so it never joins a cluster found through
    $RAY_TMPDIR's last `ray start`, kept on loopback, and shut down on exit.
    """
    target = resolve_address(address)
    if ray_initialized():
        yield cluster_info(target, started_here=False)
        return
    if target is None:
        with loopback_only():
            import ray

            ray.init(
                address="local",
                num_cpus=cpu_count(),
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=True,
                configure_logging=False,
            )
            try:
                yield cluster_info(None, started_here=True)
            finally:
                ray.shutdown()
        return
    import ray

    ray.init(address=target, log_to_driver=True, configure_logging=False)
    try:
        yield cluster_info(target, started_here=True)
    finally:
        ray.shutdown()


def cluster_info(address: str | None, *, started_here: bool) -> ClusterInfo:
    import ray

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


def create_workers(plan: WorkerPlan, config: WorkerConfig, run_id: str, start: int = 0, count: int | None = None) -> list[Any]:
    """Start actors `start`…: they restart after a crash (the driver reschedules their rows itself)."""
    import ray

    from pipeline.cluster.worker import StyleWorker  # torch: imported by the run, never by `nst --help`

    remote_cls = ray.remote(StyleWorker)
    actors = []
    for i in range(start, start + (plan.count if count is None else count)):
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


class WorkerPool:
    """The run's actors: those of the plan, then one more for each GPU that joins the cluster while rows
    remain, up to `limit` (None: as many as there are GPUs). CPU-only plans keep their size.

    Counting every actor started, restarting ones included, keeps a lost node's actor and a newcomer from
    both claiming the GPU that replaces it: Ray restarts the lost one there, and the pool adds nothing.
    """

    def __init__(self, plan: WorkerPlan, config: WorkerConfig, run_id: str, limit: int | None, request_gpus: bool) -> None:
        self.plan, self.config, self.run_id = plan, config, run_id
        self.limit = limit
        self.request_gpus = request_gpus
        self.requested = 0
        self.actors = create_workers(plan, config, run_id)

    def grow(self) -> list[tuple[Any, str]]:
        """Start actors on GPUs the pool does not use yet; (actor, worker name) of each new one."""
        if not self.plan.on_gpu:
            return []
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0))
        target = gpus if self.limit is None else min(gpus, self.limit)
        start = len(self.actors)
        new = create_workers(self.plan, self.config, self.run_id, start=start, count=max(0, target - start))
        self.actors += new
        return [(actor, f"w{start + i}") for i, actor in enumerate(new)]

    def request(self, workers: int) -> None:
        """Ask the autoscaler for one GPU per worker wanted (0 clears the request); only with --request-gpus."""
        if not (self.request_gpus and self.plan.on_gpu) or workers == self.requested:
            return
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"GPU": 1}] * workers)
        self.requested = workers

    def close(self) -> None:
        self.request(0)
        kill_workers(self.actors)


def kill_workers(actors: Sequence[Any]) -> None:
    import ray

    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
