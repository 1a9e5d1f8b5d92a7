"""`nst status` on a terminal: the counts, and the failures grouped by kind with example rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def render_status(report: Mapping[str, Any]) -> Group:
    counts = Table(title=Text(str(report["out"])), show_header=False, box=None)
    counts.add_column("what", style="bold")
    counts.add_column("value")
    counts.add_row("last run", Text(f"{report['run_id'] or '–'} ({report['run_status'] or 'unknown'})"))
    if report["manifest_rows"] is not None:
        counts.add_row("manifest rows", str(report["manifest_rows"]))
    counts.add_row("done", f"[green]{report['done']}[/]")
    counts.add_row("failed", f"[red]{report['failed']}[/]" if report["failed"] else "0")
    counts.add_row("  bad input (not retried)", str(report["failed_permanent"]))
    counts.add_row("  attempts exhausted", str(report["failed_exhausted"]))
    counts.add_row("  will retry on re-run", str(report["failed_will_retry"]))
    if report["not_started"] is not None:
        counts.add_row("not started", str(report["not_started"]))
    outside = report.get("not_in_manifest")
    if outside and outside["rows"]:
        counts.add_row("no longer in the manifest", f"{outside['rows']} ({outside['done']} done)")
    rate = report["images_per_hour"]
    counts.add_row("images/hour", f"{rate:,.0f}" if rate else "–")
    parts: list[Any] = [counts]
    if report["failures"]:
        failures = Table(title="failures by kind", header_style="bold")
        for column in ("kind", "rows", "retried", "example row", "message"):
            failures.add_column(column, overflow="fold")
        for kind, entry in sorted(report["failures"].items()):
            for i, example in enumerate(entry["examples"]):
                failures.add_row(
                    kind if i == 0 else "",
                    str(entry["rows"]) if i == 0 else "",
                    ("yes" if entry["retryable"] else "no") if i == 0 else "",
                    Text(str(example["row_id"])),  # user-controlled text: never parsed as markup
                    Text(example["message"] or ""),
                )
        parts.append(failures)
        parts.append(
            Text(
                "Re-run the same `nst run` to retry; add --retry-failed to retry every failed row.",
                style="dim",
            )
        )
    return Group(*parts)
