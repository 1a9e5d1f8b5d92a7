"""The live view of a run (rows done/failed/remaining, images per hour, ETA, each worker) and its final table.

Called by `run_manifest` (live view, on the driver's events) and by `nst run` (summary table). The live
view is off when disabled or when stderr is not a terminal, so logs and tests stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from pipeline.driver import Driver
    from pipeline.run import RunSummary


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunProgress:
    def __init__(
        self, *, enabled: bool, total: int, note: str | None = None, console: Console | None = None
    ) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal and sys.stderr.isatty()
        self.total = total
        self.note = note
        self.started = time.monotonic()
        self.driver: Driver | None = None
        self._live: Live | None = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._live = Live(
                get_renderable=self.render, console=self.console, refresh_per_second=2, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def update(self, driver: Driver) -> None:
        self.driver = driver

    def render(self) -> Group:
        driver = self.driver
        elapsed = time.monotonic() - self.started
        done = driver.stats.done if driver else 0
        failed = driver.stats.failed if driver else 0
        remaining = driver.remaining() if driver else self.total
        rate = done / elapsed * 3600 if elapsed > 0 and done else 0.0
        eta = remaining / rate * 3600 if rate else None
        head = Text.assemble(
            ("done ", "bold"),
            (f"{done}", "green"),
            "  ",
            ("failed ", "bold"),
            (f"{failed}", "red"),
            "  ",
            ("remaining ", "bold"),
            f"{remaining}/{self.total}",
            "  ",
            ("images/h ", "bold"),
            f"{rate:,.0f}",
            "  ",
            ("elapsed ", "bold"),
            _duration(elapsed),
            "  ",
            ("ETA ", "bold"),
            _duration(eta) if eta else "–",
        )
        parts: list[Any] = [head]
        if self.note:
            parts.insert(0, Text(self.note, style="yellow"))
        if driver is not None:
            table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
            for column in ("worker", "device", "node", "state", "rows done", "cache hits"):
                table.add_column(column)
            for worker in driver.workers:
                state = (
                    "restarting"
                    if not worker.alive
                    else (f"{worker.in_flight} batch(es): {worker.current}" if worker.in_flight else "idle")
                )
                lookups = worker.cache_hits + worker.cache_misses
                table.add_row(
                    worker.name,
                    worker.device,
                    worker.node,
                    state,
                    str(worker.rows_done),
                    f"{worker.cache_hits}/{lookups}" if lookups else "–",
                )
            parts.append(table)
        return Group(*parts)


def summary_table(summary: RunSummary) -> Table:
    """The final table `nst run` prints."""
    table = Table(title=f"run {summary.run_id}", show_header=False, box=None)
    table.add_column("what", style="bold")
    table.add_column("value")
    rate = summary.cache_hit_rate
    rows = [
        ("manifest rows", str(summary.manifest_rows)),
        ("already done", str(summary.already_done)),
        ("done now", f"[green]{summary.done}[/]"),
        ("failed", f"[red]{summary.failed}[/]" if summary.failed else "0"),
        ("retries", str(summary.retried)),
        ("left failed from earlier runs", str(summary.not_retried)),
        ("remaining", str(summary.remaining)),
        ("time", _duration(summary.seconds)),
        ("images/hour", f"{summary.rows_per_hour:,.0f}"),
        (
            "style cache hit rate",
            f"{rate:.0%} ({summary.cache_hits}/{summary.cache_hits + summary.cache_misses})"
            if rate is not None
            else "–",
        ),
    ]
    if summary.duplicates:
        rows.append(("duplicate rows skipped", str(summary.duplicates)))
    if summary.oom_splits:
        rows.append(("out-of-memory splits", str(summary.oom_splits)))
    if summary.worker_losses:
        rows.append(("worker losses", str(summary.worker_losses)))
    for kind, n in sorted(summary.failures_by_kind.items()):
        rows.append((f"  failures: {kind}", str(n)))
    if summary.interrupted:
        rows.append(("stopped", "[yellow]interrupted: re-run the same command to finish[/]"))
    if summary.aborted:
        rows.append(("stopped", f"[red]{summary.aborted}[/]"))
    for what, value in rows:
        table.add_row(what, value)
    return table
