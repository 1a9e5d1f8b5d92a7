"""The storage-outage policy: a store that does not answer is not the row's fault.

When a row fails on storage and the store behind the output or the row's inputs does not answer a probe,
the row goes back to the queue with its attempt count unchanged: rows of the output's store all wait
(dispatching pauses, with a pause that grows with the outage), a row of another input store waits alone.
The run stops once an outage outlasts `--storage-timeout`. No Ray here: the driver calls it with the
rows, the unit tests call it with none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from pipeline.cluster.events import DriverStats
from pipeline.cluster.scheduler import BACKOFF_BASE_S
from pipeline.cluster.tasks import RowTask
from pipeline.store.errors import describe_storage_error
from pipeline.store.fs import filesystem, is_local, unreachable

OUTAGE_PAUSE_CAP_S = 10.0
MAX_OUTAGE_HOLDS = 20
"""A row held back this often without its store ever recovering for it spends attempts again (bounds a
single object that keeps refusing connections while the rest of the store answers)."""
PROBE_TTL_S = 1.0
EPISODE_MERGE_S = 10.0
"""A storage failure within this many seconds of the end of an outage continues that outage (one episode,
and --storage-timeout keeps counting from its first failure) instead of starting a new one: results of
work started before an outage keep arriving during it, and a flapping store must not reset the bound."""


class OutagePolicy:
    def __init__(
        self,
        root: str,
        storage_options: Mapping[str, Any] | None,
        storage_timeout: float,
        stats: DriverStats,
        later: Callable[[RowTask, float], None],
    ) -> None:
        self.root = root
        self.storage_options = storage_options
        self.storage_timeout = storage_timeout
        self.stats = stats
        self.later = later
        """Puts a row back in the queue after a delay (the scheduler's retry heap)."""
        self.outage_since: float | None = None
        self.outage_ended: tuple[float, float] | None = None
        """(start, end) of the last outage, to merge a failure that follows it closely into the same episode."""
        self.outage_error: str | None = None
        self.ledger_down_since: float | None = None
        self.pause_until = 0.0
        self._probes: dict[str, tuple[float, str | None]] = {}

    def paused(self) -> bool:
        """Whether dispatching waits: sending work now would only fail it again."""
        return time.monotonic() < self.pause_until

    def hold(self, task: RowTask, message: str, *, reported_unreachable: bool) -> bool:
        """Hold a row that failed on storage when its store does not answer; False: the row spends an attempt."""
        if task.outage_holds >= MAX_OUTAGE_HOLDS:
            return False
        # A failure to connect is an outage even when the store is back by the time the report arrives
        # (clients retry for seconds before giving up); otherwise ask the store now.
        reason, whole_run = self.store_down(task)
        if reason is None and reported_unreachable:
            reason, whole_run = message, not is_local(self.root)
        if reason is not None and whole_run:
            self.hold_for_outage(task, reason)
            return True
        return reason is not None and self.hold_row(task)

    def store_down(self, task: RowTask) -> tuple[str | None, bool]:
        """(why a store behind the output or this row's inputs does not answer, whether it is the output's
        store: every row then waits), or (None, False) when every one answers.

        Local folders are never treated as down: a local I/O error (disk full, bad sector) counts an attempt.
        An input store other than the output's (an HTTP server holding a few images) only holds its own rows.
        """
        now = time.monotonic()
        root_key = None if is_local(self.root) else self.store_key(self.root)
        for uri in (self.root, *task.input_uris):
            if is_local(uri):
                continue
            key = self.store_key(uri)
            cached = self._probes.get(key)
            if cached is None or now - cached[0] > PROBE_TTL_S:
                cached = (now, unreachable(uri, self.storage_options))
                self._probes[key] = cached
            if cached[1] is not None:
                return cached[1], key == root_key
        self.over()
        return None, False

    def hold_row(self, task: RowTask) -> bool:
        """Requeue a row whose own input store does not answer, without spending an attempt or pausing the
        other rows, for at most --storage-timeout from its first such failure; False once that has passed."""
        now = time.monotonic()
        since = task.held_since if task.held_since is not None else now
        if now - since > self.storage_timeout:
            return False
        self.stats.outage_requeues += 1
        delay = min(OUTAGE_PAUSE_CAP_S, max(BACKOFF_BASE_S, (now - since) / 2))
        self.later(replace(task, outage_holds=task.outage_holds + 1, held_since=since), delay)
        return True

    def store_key(self, uri: str) -> str:
        try:
            fs, path = filesystem(uri, self.storage_options)
        except Exception:  # noqa: BLE001 - an unopenable URI is probed (and fails) on its own
            return uri
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        endpoint = (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url")
        # One endpoint is one store (its buckets fail together); without one, each bucket or host is.
        return f"{protocol}@{endpoint}" if endpoint else f"{protocol}://{path.split('/', 1)[0]}"

    def hold_for_outage(self, task: RowTask, reason: str) -> None:
        """Requeue the row with its attempt unchanged and pause dispatching; backoff grows with the outage."""
        now = time.monotonic()
        if self.outage_since is None:
            if self.outage_ended is not None and now - self.outage_ended[1] < EPISODE_MERGE_S:
                self.outage_since = self.outage_ended[0]  # the same outage, flapping: one episode, one bound
            else:
                self.outage_since = now
                self.stats.storage_outages += 1
        self.outage_error = reason
        self.stats.outage_requeues += 1
        pause = min(OUTAGE_PAUSE_CAP_S, max(BACKOFF_BASE_S, (now - self.outage_since) / 2))
        self.pause_until = max(self.pause_until, now + pause)
        self.later(replace(task, outage_holds=task.outage_holds + 1), pause)

    def over(self) -> None:
        """The store answered (a probe, or a row that committed): the outage, if any, has ended."""
        if self.outage_since is not None:
            self.outage_ended = (self.outage_since, time.monotonic())
        self.outage_since = None
        self.outage_error = None

    def ledger_failed(self, exc: BaseException) -> None:
        """A ledger write failed on storage: the ledger's store counts as down until a write succeeds."""
        if self.ledger_down_since is None:
            self.ledger_down_since = time.monotonic()
        self.outage_error = describe_storage_error(exc, self.storage_options)
        self.pause_until = max(self.pause_until, time.monotonic() + BACKOFF_BASE_S)

    def gave_up(self) -> str | None:
        """Why the run must stop (an outage older than --storage-timeout), or None."""
        now = time.monotonic()
        for since in (self.outage_since, self.ledger_down_since):
            if since is not None and now - since > self.storage_timeout:
                return (
                    f"storage unreachable for {now - since:.0f} s (--storage-timeout {self.storage_timeout:g}): "
                    f"{self.outage_error or 'no answer'}"
                )
        return None
