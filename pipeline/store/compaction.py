"""Compaction while a run writes: ledger parts merged in tiers, so their number is bounded at every instant.

Called by the driver's ledger buffer after each part it writes (`PartTiers.added`). A flushed part is tier
0; when the newest `fan_in` parts all have one tier, they are merged into one part of the next tier, which
may complete a run of that tier in turn (a counter in base `fan_in`). The merged parts are always the
newest, so the merged part, named later than all of them, takes their place in the listing's order. Each
record is rewritten once per tier (log_fan_in of the run's batches), and a run leaves at most
`fan_in - 1` parts per tier: with 64, a 10⁶-row run of 8-row batches holds under 200 parts.

Safe at every instant for the reason `compact` is (`replace_parts`: the merged part is written before
the old ones are deleted, copies are dropped on read), and the only writer is the driver holding the lease.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.store.fs import filesystem
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import part_paths, read_parts, replace_parts, unique_records

FAN_IN = 64
"""Parts of one tier merged at once (also the bound on each tier's parts)."""

MAX_PARTS = 512
"""More parts than this at the start of a run (a ledger written before compaction ran during runs, or
copies killed compactions left) are merged into one before the run adds any."""

_TIER = re.compile(r"-t(\d+)\.parquet$")


def part_tier(path: str) -> int:
    match = _TIER.search(path.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else 0


class PartTiers:
    """The ledger's parts as the driver wrote them, merged a tier at a time as the newest ones accumulate."""

    def __init__(
        self, layout: OutputLayout, storage_options: Mapping[str, Any] | None, *, fan_in: int = FAN_IN
    ) -> None:
        if fan_in < 2:
            raise ValueError(f"fan_in must be >= 2, got {fan_in}")
        self.layout = layout
        self.storage_options = storage_options
        self.fan_in = fan_in
        self.paths: list[str] | None = None
        """The parts in listing order; None until listed (first use, and after a failed merge)."""
        self.merges = 0

    def added(self, uri: str) -> None:
        """A part was written: merge the newest parts while `fan_in` of them share a tier.

        A failure leaves the ledger as `replace_parts` guarantees and makes the next call list it again.
        """
        if self.paths is None:
            self.paths = part_paths(self.layout, self.storage_options)
        else:
            self.paths.append(filesystem(uri, self.storage_options)[1])
        try:
            self._cascade()
        except BaseException:
            self.paths = None
            raise

    def _cascade(self) -> None:
        assert self.paths is not None
        while len(self.paths) >= self.fan_in:
            newest = self.paths[-self.fan_in :]
            tier = part_tier(newest[-1])
            if any(part_tier(p) != tier for p in newest):
                return
            fs, _ = filesystem(self.layout.ledger_dir(), self.storage_options)
            records = unique_records(read_parts(fs, newest))
            uri = replace_parts(self.layout, newest, records, self.storage_options, tier=tier + 1)
            self.paths[-self.fan_in :] = [filesystem(uri, self.storage_options)[1]]
            self.merges += 1
