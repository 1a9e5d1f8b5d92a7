"""The ledger at scale without Ray: vectorised row states against a per-record reference, concurrent part
reads in part order, old parts, and compaction during a run that keeps the part count bounded."""

from __future__ import annotations

import io
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import part_paths, read_ledger, row_states, write_part
from pipeline.store.ledger_states import done_records
from pipeline.store.records import LEDGER_SCHEMA, ErrorKind, LedgerRecord, RowStatus
from pipeline.store.transfer import write_bytes_atomic

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
KINDS = [ErrorKind.storage, ErrorKind.worker_lost, ErrorKind.bad_input, ErrorKind.oom, ErrorKind.numerical]


def reference_states(table: pa.Table) -> dict[str, dict[str, Any]]:
    """The per-record merge the vectorised version replaces, written out plainly: records in time order
    (nulls last, ties in table order), the first done record wins, else the latest record's failure."""
    states: dict[str, dict[str, Any]] = {}
    rows = table.to_pylist()
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["finished_at"] is None, rows[i]["finished_at"] or T0, i))
    for i in order:
        rec = rows[i]
        state = states.setdefault(
            rec["row_id"],
            {"done": False, "done_record": None, "attempt": 0, "kind": None, "message": None, "done_records": 0},
        )
        if rec["status"] == "done":
            state["done_records"] += 1
            if not state["done"]:
                state["done"], state["done_record"] = True, rec
        if not state["done"]:
            state["attempt"] = int(rec["attempt"] or 0)
            state["kind"], state["message"] = rec["error_kind"], rec["error_message"]
    return states


def random_records(rng: random.Random, rows: int) -> list[LedgerRecord]:
    """Rows with 1–4 attempts each: failures of every kind, done rows, a second done record now and then,
    failures recorded after a row was done, and many records sharing one `finished_at`."""
    records = []
    for r in range(rows):
        for attempt in range(1, rng.randint(1, 4) + 1):
            done = rng.random() < 0.4
            kind = None if done else rng.choice(KINDS)
            records.append(
                LedgerRecord(
                    record_id=f"rec-{r}-{attempt}-{rng.random()}",
                    run_id=rng.choice(["run-a", "run-b"]),
                    row_id=f"row-{r:04d}",
                    status=RowStatus.done if done else RowStatus.failed,
                    attempt=rng.choice([attempt, 1]),
                    finished_at=T0 + timedelta(seconds=rng.randint(0, 20)),
                    manifest_index=r,
                    error_kind=kind,
                    error_message=f"{kind.value} #{attempt}" if kind else None,
                    output_uri=f"/out/images/row-{r:04d}-{attempt}.png" if done else None,
                )
            )
    rng.shuffle(records)
    return records


def test_vectorised_row_states_match_the_per_record_reference(tmp_path: Path) -> None:
    rng = random.Random(15)
    layout = OutputLayout(str(tmp_path))
    records = random_records(rng, 400)
    for start in range(0, len(records), 37):
        write_part(layout, records[start : start + 37])
    # a copy of two parts, as a compaction killed before its deletes leaves them, and a record without a time
    paths = part_paths(layout)
    copy = pa.concat_tables([pq.read_table(p) for p in paths[3:5]])
    sink = io.BytesIO()
    pq.write_table(copy, sink)
    write_bytes_atomic(layout.new_ledger_part_uri(), sink.getvalue())
    untimed = pq.read_table(paths[0]).slice(0, 1).to_pylist()[0] | {"record_id": "untimed", "finished_at": None}
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([untimed], schema=LEDGER_SCHEMA), sink)
    write_bytes_atomic(layout.new_ledger_part_uri(), sink.getvalue())

    table = read_ledger(layout)
    assert table.num_rows == len(records) + 1  # the copies dropped by record id
    expected = reference_states(table)
    states = row_states(table)
    assert set(states) == set(expected) and len(states) == len(expected) == 400
    assert any(s["done_records"] > 1 for s in expected.values()) and any(s["attempt"] for s in expected.values())
    for row_id, want in expected.items():
        got = states[row_id]
        assert (got.done, got.attempt, got.last_error_kind, got.last_error_message, got.done_records) == (
            want["done"], want["attempt"], want["kind"], want["message"], want["done_records"]
        ), row_id
        assert (dict(got.done_record) if got.done_record is not None else None) == want["done_record"], row_id
        assert got.permanent_failure == (not want["done"] and want["kind"] in {"bad_input", "numerical"})
    assert done_records(states) == {k: v["done_record"] for k, v in expected.items() if v["done"]}
    ids, uris = states.done_column("output_uri")
    assert dict(zip(ids, uris, strict=True)) == {
        k: v["done_record"]["output_uri"] for k, v in expected.items() if v["done"]
    }


def test_concurrent_reads_keep_part_order_and_read_old_parts(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    old = pa.table({"record_id": ["old"], "run_id": ["r0"], "row_id": ["x"], "status": ["done"],
                    "attempt": pa.array([1], pa.int32()), "finished_at": pa.array([T0], LEDGER_SCHEMA.field("finished_at").type)})
    sink = io.BytesIO()
    pq.write_table(old, sink)  # a part from before most columns existed
    write_bytes_atomic(layout.new_ledger_part_uri(), sink.getvalue())
    for i in range(50):
        write_part(layout, [LedgerRecord(record_id=f"r{i}", run_id="r1", row_id=f"y{i}", status=RowStatus.done,
                                         attempt=1, finished_at=T0)])
    table = read_ledger(layout)
    assert table.schema == LEDGER_SCHEMA
    assert table.column("record_id").to_pylist() == ["old"] + [f"r{i}" for i in range(50)]
    assert table.column("params").null_count == 51 and row_states(table)["x"].done
    assert row_states(LEDGER_SCHEMA.empty_table()) == {}


def test_compaction_during_a_run_keeps_the_part_count_bounded_and_every_record_once(tmp_path: Path) -> None:
    from pipeline.cluster.events import DriverStats
    from pipeline.cluster.ledger_buffer import LedgerBuffer
    from pipeline.cluster.outage import OutagePolicy
    from pipeline.store.compaction import part_tier

    layout = OutputLayout(str(tmp_path))
    fan_in, flushes = 4, 300
    outage = OutagePolicy(str(tmp_path), None, 300.0, DriverStats(), lambda task, delay: None)
    buffer = LedgerBuffer(layout, None, outage, fan_in=fan_in)
    written: list[str] = []
    most = 0
    for i in range(flushes):
        for j in range(1 + i % 3):
            written.append(f"r{i}-{j}")
            buffer.append(LedgerRecord(record_id=written[-1], run_id="run", row_id=written[-1],
                                       status=RowStatus.done, attempt=1, finished_at=T0))
        buffer.flush()
        parts = part_paths(layout)
        most = max(most, len(parts))
        # never more than fan_in - 1 parts per tier once a flush's merges are over
        tiers = [part_tier(p) for p in parts]
        assert all(tiers.count(t) < fan_in for t in set(tiers)), tiers
        assert tiers == sorted(tiers, reverse=True)  # older parts hold higher tiers: the listing stays in order
    levels = 1 + max(part_tier(p) for p in part_paths(layout))
    assert levels >= 4 and most <= (fan_in - 1) * levels and buffer.tiers.merges > flushes // fan_in
    table = read_ledger(layout)
    assert table.column("record_id").to_pylist() == written  # each record once, in write order
