"""One run per output: a lease object `_lease.json` in `--out`, taken before a run touches anything there.

Taken by `run_manifest` (via `output_lease`) before the start-up sweeps; read by `nst status`. Two
runs on one output would compute and record every row twice and sweep each other's files, so the second
one refuses. The lease is created only if absent (`O_EXCL` on local disks, a conditional PUT —
`open(path, "xb")` — on object stores: the first writer wins), refreshed every LEASE_HEARTBEAT_S by a
thread, deleted at exit. A lease left by a killed run is taken over at once when its holder ran on this
host and its process is gone; otherwise only with `--force` once its heartbeat is older than
LEASE_STALE_S.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jobs.masking import mask_uri
from pipeline.store.bounded import bounded, call_bounded
from pipeline.store.errors import storage_errors
from pipeline.store.fs import filesystem, is_local, join, known_protocol
from pipeline.store.layout import LEASE, check_layout_inside
from pipeline.store.transfer import write_bytes_atomic

LEASE_HEARTBEAT_S = 10.0


LEASE_STALE_S = 60.0
"""A lease whose heartbeat is older than this may be taken over with --force (clocks of the hosts involved
are assumed to agree within a few seconds)."""


TAKE_ATTEMPTS = 3


class LeaseHeld(RuntimeError):
    """Another run holds the output's lease (the message names it and says what to do)."""


@dataclass
class Lease:
    uri: str
    token: str
    body: dict[str, Any]
    storage_options: Mapping[str, Any] | None
    lost: str | None = None
    """Why the lease is no longer ours (another run took it over), once the heartbeat notices."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start_heartbeat(self, interval: float = LEASE_HEARTBEAT_S) -> None:
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True, name="nst-lease")
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                current = read_lease(self.uri, self.storage_options)
                if current is not None and current.get("token") != self.token:
                    self.lost = f"the output's lease was taken over by run {current.get('run_id')}"
                    print(f"nst: {self.lost}; stopping", file=sys.stderr, flush=True)
                    return
                self.body["heartbeat_at"] = time.time()
                _write(self.uri, self.body, self.storage_options, exclusive=False)
            except Exception:  # noqa: BLE001 - a missed heartbeat only ages the lease; the run goes on
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost:
            return
        try:
            current = read_lease(self.uri, self.storage_options)
            if current is not None and current.get("token") == self.token:
                fs, path = filesystem(self.uri, self.storage_options)
                bounded(fs, "rm_file", path, uri=self.uri)
        except Exception:  # noqa: BLE001 - a lease left behind is taken over by the next run on this host
            pass


_current: list[Lease] = []


def lost_reason() -> str | None:
    """Why the lease of the run in this process was lost, or None (checked by the driver loop)."""
    return _current[-1].lost if _current else None


def lease_run_id() -> str | None:
    """The run id the lease of the run in this process was taken for (the run records the same id)."""
    return str(_current[-1].body["run_id"]) if _current else None


def read_lease(uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    fs, path = filesystem(uri, storage_options)
    try:
        if is_local(uri):
            with open(path, "rb") as fh:
                data = fh.read(1 << 16)
        else:
            fs.invalidate_cache()
            data = bounded(fs, "cat_file", path, uri=uri)
    except FileNotFoundError:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return {"token": None, "run_id": "unknown (unreadable lease)", "heartbeat_at": 0.0}
    return value if isinstance(value, dict) else None


def _write(uri: str, body: dict[str, Any], storage_options: Mapping[str, Any] | None, *, exclusive: bool) -> bool:
    """Write the lease; with `exclusive`, only if absent (False when it already exists)."""
    data = json.dumps(body, sort_keys=True).encode()
    fs, path = filesystem(uri, storage_options)
    if is_local(uri):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if not exclusive:
            write_bytes_atomic(uri, data, storage_options)
            return True
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return True
    if not exclusive:
        bounded(fs, "pipe_file", path, data, uri=uri)
        return True

    def create() -> bool:
        try:
            with fs.open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        return True

    return bool(call_bounded(create, uri=uri, what="creating the lease", fs=fs))


def _holder_dead(holder: Mapping[str, Any]) -> bool:
    """Whether the holder provably no longer runs: it ran on this host and its process is gone."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    if holder["pid"] == os.getpid():
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed process not yet reaped by its parent (a zombie) still answers kill(pid, 0)
        with open(f"/proc/{holder['pid']}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


def _describe(holder: Mapping[str, Any], age: float) -> str:
    return (
        f"run {holder.get('run_id')} (pid {holder.get('pid')} on {holder.get('host')}, started "
        f"{holder.get('started_at')}, last heartbeat {age:.0f} s ago)"
    )


def acquire(
    out: str,
    run_id: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
    stale_after: float = LEASE_STALE_S,
) -> Lease:
    """Take the output's lease or raise LeaseHeld naming its holder."""
    uri = join(out, LEASE)
    now = time.time()
    body: dict[str, Any] = {
        "token": uuid.uuid4().hex,
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "heartbeat_at": now,
    }
    for _ in range(TAKE_ATTEMPTS):
        if _write(uri, body, storage_options, exclusive=True):
            return Lease(uri=uri, token=body["token"], body=body, storage_options=storage_options)
        holder = read_lease(uri, storage_options)
        if holder is None:
            continue  # released between our attempt and the read
        age = time.time() - float(holder.get("heartbeat_at") or 0.0)
        if _holder_dead(holder) or (force and age > stale_after):
            again = read_lease(uri, storage_options)
            if again is not None and again.get("token") == holder.get("token"):
                fs, path = filesystem(uri, storage_options)
                try:
                    bounded(fs, "rm_file", path, uri=uri)
                except FileNotFoundError:
                    pass
            continue
        if force:
            raise LeaseHeld(
                f"output {mask_uri(out)} is in use by {_describe(holder, age)}; --force takes over only a lease "
                f"whose heartbeat is older than {stale_after:g} s"
            )
        raise LeaseHeld(
            f"output {mask_uri(out)} is in use by {_describe(holder, age)}; wait for it to finish, or, if that "
            f"run is gone, re-run with --force once its heartbeat is older than {stale_after:g} s"
        )
    raise LeaseHeld(f"output {mask_uri(out)}: another run keeps taking its lease; try again")


@contextmanager
def output_lease(out: str, storage_options: Mapping[str, Any] | None, *, force: bool = False) -> Iterator[str]:
    """Hold the lease of `out` inside the block (`force` allows a stale takeover); yields the run id.

    The run id is chosen here, so the lease and the run's records name the same run.
    """
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if not known_protocol(out):
        yield run_id  # the run itself reports the unknown scheme
        return
    check_layout_inside(out)  # the lease is the first write: never through a symlink out of --out
    with storage_errors(f"taking the lease of {mask_uri(out)}", storage_options):
        lease = acquire(out, run_id, storage_options, force=force)
    lease.start_heartbeat()
    _current.append(lease)
    try:
        yield run_id
    finally:
        _current.remove(lease)
        lease.release()
