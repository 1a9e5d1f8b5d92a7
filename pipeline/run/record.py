"""The run record: `run.json` (what was asked, what happened, the last 100 runs) in the output folder.

Written at the start (status `running`), at the end (counts from the ledger itself) and on any error or
stop signal, so run.json never stays `running` after the process ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jobs import manifest_fingerprint
from jobs.masking import mask_text, mask_uri
from pipeline.run.summary import RunSummary
from pipeline.store.errors import is_storage_error, storage_errors
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import compact, read_ledger
from pipeline.store.records import RowStatus, utcnow
from pipeline.store.transfer import read_bytes, write_bytes_atomic

HISTORY = 100
"""Runs kept in run.json's `history`."""


def manifest_sha256(manifest: str, storage_options: Mapping[str, Any] | None) -> str | None:
    try:
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


def write_run_json(layout: OutputLayout, data: dict[str, Any], storage_options: Mapping[str, Any] | None) -> None:
    write_bytes_atomic(
        layout.run_json_uri(), json.dumps(data, indent=2, sort_keys=True, default=str).encode(), storage_options
    )


class RunRecord:
    """run.json of the run in progress: its header (`RunOptions.record()` and more), then how it ended."""

    def __init__(
        self, layout: OutputLayout, storage_options: Mapping[str, Any], data: dict[str, Any], history: list[Any]
    ) -> None:
        self.layout = layout
        self.storage_options = storage_options
        self.data = data | {"status": "running", "history": history}
        self.history = history

    def write(self) -> None:
        with storage_errors(f"writing {mask_uri(self.layout.run_json_uri())}", self.storage_options):
            write_run_json(self.layout, self.data, self.storage_options)

    def set_workers(self, infos: list[dict[str, Any]]) -> None:
        """The workers that started, and the weights they actually loaded (source and hash)."""
        self.data["workers"] = [{k: i[k] for k in ("name", "node", "device", "gpu_ids")} for i in infos]
        self.data["weights"].update(source=infos[0].get("weights_source"), sha256=infos[0].get("weights_sha256"))

    @contextmanager
    def ending_recorded(self) -> Iterator[None]:
        """An exception or a stop signal escaping the block is recorded (`failed` with the error line, or
        `interrupted`) before it propagates."""
        try:
            yield
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            self.data["status"] = "interrupted" if interrupted else "failed"
            self.data["error"] = (
                "interrupted"
                if interrupted
                else mask_text(" ".join((str(exc) or type(exc).__name__).split()), self.storage_options)
            )
            self._end(("run_id", "status", "started_at", "finished_at", "error"), {})
            try:
                write_run_json(self.layout, self.data, self.storage_options)
            except Exception:  # noqa: BLE001 - the store may be the reason; the original error matters more
                pass
            raise

    def close(self, summary: RunSummary) -> None:
        """Compact the ledger (also on a no-op re-run: it removes duplicates a killed compaction left), count
        this run's done rows from the records that exist, and write the final run.json."""
        try:
            compact(self.layout, self.storage_options)
        except KeyboardInterrupt:
            summary.interrupted = True
        except Exception as exc:  # noqa: BLE001 - compaction is an optimisation; the parts are intact
            if not is_storage_error(exc):
                raise
        summary.done = self._recorded_done(summary.run_id, summary.done)
        self.data["status"] = (
            "interrupted" if summary.interrupted else "aborted" if summary.aborted else "completed"
        )
        self.data["stats"] = summary.to_dict()
        if summary.workers:  # every worker of the pool, those that joined later included, with its lifetime
            started = {str(w.get("name")): w for w in self.data.get("workers", [])}
            self.data["workers"] = [started.get(str(w["name"]), {}) | w for w in summary.workers]
        self._end(
            ("run_id", "status", "started_at", "finished_at"),
            {"done": summary.done, "failed": summary.failed, "seconds": summary.seconds},
        )
        self.write()

    def _end(self, keys: tuple[str, ...], extra: dict[str, Any]) -> None:
        self.data["finished_at"] = utcnow().isoformat()
        self.history.append({k: self.data.get(k) for k in keys} | extra)
        self.data["history"] = self.history[-HISTORY:]

    def _recorded_done(self, run_id: str, counted: int) -> int:
        """Rows this run recorded done, from the ledger itself: records lost with a deleted --out do not count."""
        if not counted:
            return counted
        try:
            table = read_ledger(self.layout, self.storage_options)
        except Exception:  # noqa: BLE001 - the driver's own count stands when the ledger cannot be read
            return counted
        rows = table.select(["run_id", "status", "row_id"]).to_pylist()
        return len({r["row_id"] for r in rows if r["run_id"] == run_id and r["status"] == RowStatus.done.value})
