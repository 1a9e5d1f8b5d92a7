"""Each row's state from its ledger records, computed in Arrow and numpy: done wins, else the latest failure.

Read by planning (what to skip, which attempt comes next), `nst status` and the report through
`ledger.row_states`. Vectorised (one sort of integer row codes by time, then per-group reductions) because
a resumed 10⁶-row run has that many records, and a Python dict per record costs seconds per 10⁵; a row's
`RowState` and its done record are only built when a caller asks for that row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.store.records import PERMANENT_KINDS, RowStatus

_PERMANENT = frozenset(k.value for k in PERMANENT_KINDS)


class LazyRecord(Mapping[str, Any]):
    """One record of a ledger table as a mapping, converted to Python values on first access: a done row's
    record is rarely read, and converting 10⁶ of them up front would cost more than the whole state."""

    def __init__(self, table: pa.Table, index: int) -> None:
        self._table = table
        self._index = index
        self._values: dict[str, Any] | None = None

    def _dict(self) -> dict[str, Any]:
        if self._values is None:
            self._values = self._table.slice(self._index, 1).to_pylist()[0]
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.column_names)

    def __len__(self) -> int:
        return int(self._table.num_columns)


@dataclass
class RowState:
    """A row's state merged from its records: done wins over everything; otherwise the latest failure."""

    row_id: str
    done: bool = False
    done_record: Mapping[str, Any] | None = None
    attempt: int = 0
    """Attempt number of the latest record before the row was done (restarts at 1 after --retry-failed)."""
    last_error_kind: str | None = None
    last_error_message: str | None = None
    done_records: int = 0

    @property
    def permanent_failure(self) -> bool:
        return not self.done and self.last_error_kind in _PERMANENT


class RowStates(Mapping[str, RowState]):
    """row id → `RowState`, held as columns (`table`: one row per row id) with a lookup built on first use."""

    def __init__(self, source: pa.Table, table: pa.Table, done_index: np.ndarray) -> None:
        self.source = source
        self.table = table
        """Columns row_id, done, attempt, last_error_kind, last_error_message, done_records (one row per row id)."""
        self.done_index = done_index
        """Position in `source` of each row's first done record, -1 for rows not done."""
        self._lookup: dict[str, int] | None = None
        self._columns: dict[str, list[Any]] | None = None

    def _positions(self) -> dict[str, int]:
        if self._lookup is None:
            self._lookup = {rid: i for i, rid in enumerate(self.table.column("row_id").to_pylist())}
            self._columns = {name: self.table.column(name).to_pylist() for name in self.table.column_names}
        return self._lookup

    def state_at(self, i: int) -> RowState:
        self._positions()
        assert self._columns is not None
        c = self._columns
        done_at = int(self.done_index[i])
        return RowState(
            row_id=c["row_id"][i],
            done=c["done"][i],
            done_record=LazyRecord(self.source, done_at) if done_at >= 0 else None,
            attempt=c["attempt"][i],
            last_error_kind=c["last_error_kind"][i],
            last_error_message=c["last_error_message"][i],
            done_records=c["done_records"][i],
        )

    def __getitem__(self, row_id: str) -> RowState:
        return self.state_at(self._positions()[row_id])

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._positions()

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.column("row_id").to_pylist())

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def values(self) -> Iterator[RowState]:  # type: ignore[override]
        return (self.state_at(i) for i in range(len(self)))

    def items(self) -> Iterator[tuple[str, RowState]]:  # type: ignore[override]
        return ((s.row_id, s) for s in self.values())

    def done_column(self, name: str) -> tuple[list[str], list[Any]]:
        """(row ids, `name` of each one's done record) for the done rows, without building their states."""
        done = self.done_index >= 0
        ids = self.table.column("row_id").filter(pa.array(done)).to_pylist()
        return ids, self.source.column(name).take(pa.array(self.done_index[done])).to_pylist()


def done_records(states: Mapping[str, RowState]) -> dict[str, Mapping[str, Any]]:
    """row id → done record of every done row, converted in one pass (for callers that show them all)."""
    if isinstance(states, RowStates):
        done = states.done_index >= 0
        ids = states.table.column("row_id").filter(pa.array(done)).to_pylist()
        return dict(zip(ids, states.source.take(pa.array(states.done_index[done])).to_pylist(), strict=True))
    return {s.row_id: s.done_record for s in states.values() if s.done and s.done_record is not None}


def done_column(states: Mapping[str, RowState], name: str) -> tuple[list[str], list[Any]]:
    """(row ids, `name` of each one's done record) for the done rows of any mapping of states."""
    if isinstance(states, RowStates):
        return states.done_column(name)
    done = [s for s in states.values() if s.done and s.done_record is not None]
    return [s.row_id for s in done], [s.done_record[name] for s in done if s.done_record is not None]


_STATE_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("done", pa.bool_()),
        ("attempt", pa.int64()),
        ("last_error_kind", pa.string()),
        ("last_error_message", pa.string()),
        ("done_records", pa.int64()),
    ]
)


def row_states(table: pa.Table) -> RowStates:
    """The state of every row in `table`, in the order rows first appear in it.

    Records are taken in time order (`finished_at`, nulls last, ties in table order as a stable sort keeps
    them); the first done record makes the row done and is its done record; `attempt` and the last error
    come from the latest record before that (for rows never done: the latest record).
    """
    n = table.num_rows
    if n == 0:
        return RowStates(table, _STATE_SCHEMA.empty_table(), np.empty(0, np.int64))
    finished = pc.cast(table.column("finished_at").combine_chunks(), pa.int64())
    times = pc.fill_null(finished, np.iinfo(np.int64).max).to_numpy(zero_copy_only=False)  # nulls last
    encoded = pc.dictionary_encode(table.column("row_id").combine_chunks(), null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((times, codes))  # grouped by row, each in time order; stable: ties in table order
    grouped = codes[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    group_of = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, n]))
    done = pc.fill_null(pc.equal(table.column("status"), RowStatus.done.value), False)
    is_done = done.to_numpy(zero_copy_only=False)[order].astype(np.int64)
    running = np.cumsum(is_done)
    done_so_far = running - np.r_[0, running[starts[1:] - 1]][group_of]  # done records up to here, in group
    done_records = np.add.reduceat(is_done, starts)
    done_index = np.full(starts.size, -1, np.int64)
    first_done = np.flatnonzero((is_done == 1) & (done_so_far == 1))
    done_index[group_of[first_done]] = order[first_done]
    before_done = np.where(done_so_far == 0, np.arange(n), -1)
    latest = np.maximum.reduceat(before_done, starts)  # -1: the row's first record was done
    source_latest = pa.array(np.where(latest >= 0, order[np.maximum(latest, 0)], 0))
    has_latest = pa.array(latest >= 0)
    attempts = pc.fill_null(table.column("attempt").take(source_latest), 0).cast(pa.int64())
    states = pa.table(
        {
            "row_id": encoded.dictionary.take(pa.array(grouped[starts])).cast(pa.string()),
            "done": pa.array(done_records > 0),
            "attempt": pc.if_else(has_latest, attempts, 0),
            "last_error_kind": pc.if_else(has_latest, table.column("error_kind").take(source_latest), None),
            "last_error_message": pc.if_else(has_latest, table.column("error_message").take(source_latest), None),
            "done_records": pa.array(done_records),
        },
        schema=_STATE_SCHEMA,
    )
    return RowStates(table, states, done_index)
