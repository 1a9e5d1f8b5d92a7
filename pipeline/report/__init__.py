"""`nst report`: a static HTML gallery (and optional contact sheet) of a run's output folder.

`build_report` is the one entry point, called by `pipeline.cli.report.report_command` and by library
users. Layout of what it writes: the HTML (default OUT/report.html), thumbnails under
OUT/_report/thumbs/ (made once, reused), and the sheet PNG where asked.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from jobs.masking import mask_uri
from pipeline.report.data import ReportData, load_report_data
from pipeline.report.html import build_payload, render_html
from pipeline.report.sheet import SheetCell, contact_sheet, png_bytes
from pipeline.report.thumbs import (
    DEFAULT_THUMB_SIZE,
    ensure_thumbnails,
    input_thumb_relpath,
    read_thumbnails,
    row_thumb_relpath,
)
from pipeline.store.fs import exists, filesystem, is_local, join, protocol_of
from pipeline.store.layout import OutputLayout
from pipeline.store.transfer import write_bytes_atomic

REPORT_NAME = "report.html"

__all__ = [
    "REPORT_NAME", "NoRunError", "ReportData", "ReportResult", "build_report", "load_report_data", "link_base",
]  # fmt: skip


class NoRunError(ValueError):
    """The folder holds no run (a mistyped path, or not yet started): nothing is written then."""


def check_holds_run(out: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Refuse, before writing anything, a folder with neither a run.json nor a ledger."""
    layout = OutputLayout(out)
    if not (exists(layout.run_json_uri(), storage_options) or exists(layout.ledger_dir(), storage_options)):
        raise NoRunError(
            f"{mask_uri(out)} holds no nst run (no run.json, no ledger/): check the path, or run "
            "`nst run MANIFEST --out` into it first"
        )


@dataclass(frozen=True)
class ReportResult:
    report: str
    """Where the HTML was written (masked)."""
    sheet: str | None
    rows: int
    done: int
    failed: int
    embedded: bool
    thumbnails: int
    """Thumbnails available to the report (made now or earlier)."""


def link_base(out: str, report: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """Relative URL prefix from the report's folder to `out` ('' when the report is inside it), or None
    when no relative link can reach it (another storage system or bucket): then images are embedded."""
    if is_local(out) != is_local(report) or (not is_local(out) and protocol_of(out) != protocol_of(report)):
        return None
    _, out_path = filesystem(out, storage_options)
    _, report_path = filesystem(report, storage_options)
    out_path = out_path.rstrip("/")
    report_dir = posixpath.dirname(report_path)
    if is_local(out):
        rel = os.path.relpath(out_path, report_dir).replace(os.sep, "/")
    else:
        if out_path.split("/", 1)[0] != report_dir.split("/", 1)[0]:
            return None  # another bucket: not reachable by a relative link from a hosted page
        rel = posixpath.relpath(out_path, report_dir)
    return "" if rel == "." else rel.rstrip("/") + "/"


def build_report(
    *,
    out: str,
    output: str | None = None,
    sheet: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    manifest: str | None = None,
    embed: bool | None = None,
    thumb_size: int = DEFAULT_THUMB_SIZE,
    sheet_cell: int | None = None,
) -> ReportResult:
    """Write the HTML report of the run in `out` (default `out`/report.html) and, if asked, a sheet PNG.

    embed: None links images relatively when the report's location can reach `out` and embeds
    thumbnails as data URIs otherwise; True always embeds (one portable file, full images not linked);
    False always links and fails when no relative link exists.
    """
    options = dict(storage_options or {})
    check_holds_run(out, options)
    target = output or join(out, REPORT_NAME)
    base = link_base(out, target, options)
    if embed is False and base is None:
        raise ValueError(
            f"report {mask_uri(target)} cannot link to {mask_uri(out)} with relative URLs (another storage "
            "system or bucket); write it inside the output folder or allow embedding"
        )
    embedded = bool(embed) or base is None
    data = load_report_data(out, options, manifest=manifest)

    sources, row_thumbs, input_thumbs = thumbnail_plan(data.rows)
    available = ensure_thumbnails(out, sources, options, size=thumb_size)
    row_ok = {k: (v if available.get(v) else None) for k, v in row_thumbs.items()}
    input_ok = {k: (v if available.get(v) else None) for k, v in input_thumbs.items()}

    blobs: dict[str, bytes] = {}
    if embedded or sheet:
        wanted = [rel for rel, ok in available.items() if ok]
        blobs = read_thumbnails(out, wanted, options)
    payload = build_payload(
        data, base=base or "", row_thumbs=row_ok, input_thumbs=input_ok, embedded=blobs if embedded else None
    )
    write_bytes_atomic(target, render_html(payload).encode("utf-8"), options)

    sheet_uri = None
    if sheet:
        image = _sheet(data, row_ok, input_ok, blobs, sheet_cell)
        write_bytes_atomic(sheet, png_bytes(image), options)
        sheet_uri = mask_uri(sheet)
    done = sum(1 for r in data.rows if r["status"] == "done")
    return ReportResult(
        report=mask_uri(target), sheet=sheet_uri, rows=len(data.rows), done=done, failed=len(data.rows) - done,
        embedded=embedded, thumbnails=sum(1 for ok in available.values() if ok),
    )


def thumbnail_plan(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The thumbnails a report needs, as (relpath → source URI, row id → relpath, input URI → relpath):
    one per done row with an output, and one per content or style image however many rows share it."""
    sources: dict[str, str] = {}
    row_thumbs: dict[str, str] = {}
    for row in rows:
        if row["status"] == "done" and row.get("output_uri"):
            rel = row_thumb_relpath(row["id"])
            sources[rel] = row["output_uri"]
            row_thumbs[row["id"]] = rel
    input_thumbs: dict[str, str] = {}
    for row in rows:
        for key in ("content_uri", "style_uri"):
            uri = row.get(key)
            if uri and uri not in input_thumbs:
                input_thumbs[uri] = input_thumb_relpath(uri)
                sources[input_thumbs[uri]] = uri
    return sources, row_thumbs, input_thumbs


def _sheet(
    data: ReportData,
    row_thumbs: Mapping[str, str | None],
    input_thumbs: Mapping[str, str | None],
    blobs: Mapping[str, bytes],
    cell: int | None,
) -> Image.Image:
    contents: dict[str, int] = {}
    styles: dict[str, int] = {}
    cells: list[SheetCell] = []
    for row in data.rows:
        if not row.get("content_uri") or not row.get("style_uri"):
            continue
        c = contents.setdefault(row["content_uri"], len(contents))
        s = styles.setdefault(row["style_uri"], len(styles))
        cells.append(SheetCell(c, s, row_thumbs.get(row["id"]), failed=row["status"] != "done"))
    cells.sort(key=lambda x: x.failed)  # a pair's first done row wins its cell
    def name(uri: str) -> str:
        return uri.rstrip("/").rsplit("/", 1)[-1]

    return contact_sheet(
        [input_thumbs.get(u) for u in contents], [input_thumbs.get(u) for u in styles], cells, blobs, cell=cell,
        content_labels=[name(u) for u in contents], style_labels=[name(u) for u in styles],
    )
