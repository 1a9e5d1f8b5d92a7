"""The live view of a run (rows done/failed/remaining, images per hour, ETA, each worker) and its final table.

`nst run` and `nst demo` pass a `RunProgress` to `run_manifest` as its event callback, and print
`summary_table` at the end. With a
terminal on stderr the view is live; without one (nohup, `ray job logs -f`, CI) it is one plain line per
interval, so a log always shows how far a run is.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipeline.cluster.events import RunEnded, RunEvent, RunProgressed, RunStarted, WorkerView
from pipeline.run.summary import RunSummary


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunProgress:
    """The run's progress on stderr: a live view on a terminal, else a plain line every `interval` seconds.

    Called with the run's events: RunStarted opens the view (`total` rows to do; `already_done` of
    `manifest_rows` were done by earlier runs), RunProgressed updates it, RunEnded closes it.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        total: int = 0,
        note: str | None = None,
        console: Console | None = None,
        interval: float = 30.0,
        already_done: int = 0,
        manifest_rows: int | None = None,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.live = enabled and self.console.is_terminal and sys.stderr.isatty()
        self.plain = enabled and not self.live
        self.enabled = enabled
        self.total = total
        self.note = note
        self.interval = interval
        self.already_done = already_done
        self.manifest_rows = manifest_rows if manifest_rows is not None else total + already_done
        self.started = time.monotonic()
        self.workers: tuple[WorkerView, ...] | None = None
        self._live: Live | None = None
        self._snapshot = (0, 0, total)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self.total, self.note, self.already_done = event.total, event.note, event.already_done
            self.manifest_rows = event.manifest_rows
            self._snapshot = (0, 0, event.total)
            self.__enter__()
        elif isinstance(event, RunProgressed):
            self.workers = event.workers
            self._snapshot = (event.done, event.failed, event.remaining)
        elif isinstance(event, RunEnded):
            self.__exit__(None, None, None)

    def __enter__(self) -> RunProgress:
        self.started = time.monotonic()
        if self.enabled:
            self._say(self.start_line())
        if self.plain and self.note:
            self._say(f"note: {self.note}")
        if self.live:
            self._live = Live(
                get_renderable=self.render, console=self.console, refresh_per_second=2, transient=False
            )
            self._live.__enter__()
        elif self.plain:
            self._ticker = threading.Thread(target=self._tick, name="nst-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join(timeout=5)
            self._ticker = None
            self._say(self.line())

    def start_line(self) -> str:
        """What this run will do, and how much earlier runs already did (a resumed run says so)."""
        text = f"run: {self.total} row(s) to do of {self.manifest_rows} in the manifest"
        if self.already_done:
            text += f"; {self.already_done} of {self.manifest_rows} already done by earlier runs"
        return text

    def counts(self) -> tuple[int, int, int, float, float | None, float]:
        """(done, failed, remaining, rows/hour, ETA seconds or None, elapsed seconds) of this run so far.

        From the snapshot the last RunProgressed event carried, so the ticker reads only immutable values.
        """
        elapsed = time.monotonic() - self.started
        done, failed, remaining = self._snapshot
        rate = done / elapsed * 3600 if elapsed > 0 and done else 0.0
        eta = remaining / rate * 3600 if rate else None
        return done, failed, remaining, rate, eta, elapsed

    def line(self) -> str:
        """One plain progress line (no colour, no cursor movement) for logs."""
        done, failed, remaining, rate, eta, elapsed = self.counts()
        return (
            f"progress: done {done}, failed {failed}, remaining {remaining} of {self.total}; "
            f"{rate:,.0f} rows/h; elapsed {_duration(elapsed)}; ETA {_duration(eta) if eta else '-'}"
        )

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._say(self.line())

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def render(self) -> Group:
        done, failed, remaining, rate, eta, elapsed = self.counts()
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
        if self.workers is not None:
            table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
            for column in ("worker", "device", "node", "state", "rows done", "cache hits"):
                table.add_column(column)
            for worker in self.workers:
                state = (
                    worker.current or "restarting"  # "starting": joined the pool, loading its model
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
