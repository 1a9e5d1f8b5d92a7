"""The self-contained HTML report: one page, inline CSS and script, the data as one embedded JSON blob.

Called by `build_report`. Images are referenced by relative URLs (the report lives in, or beside, the
output folder, so it works from a file or from object storage), or embedded as data URIs when the
report is written somewhere the output folder cannot be reached from.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from jobs.masking import mask_uri
from pipeline.report.assets import CSS, JS
from pipeline.report.data import ReportData
from pipeline.report.svg import curve_plot
from pipeline.report.values import METRIC_HELP

PAYLOAD_VERSION = 1


def image_src(relpath: str, base: str) -> str:
    """URL of a file below the output folder, for a page whose folder reaches it through `base`."""
    return base + quote(relpath)


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def row_name(row: Mapping[str, Any]) -> str:
    """A readable tile label: the output's own name when the manifest gave one, else content × style."""
    output = row.get("output_uri") or ""
    file = output.rsplit("/", 1)[-1]
    if file and not file.startswith(str(row["id"])):
        return file
    def stem(uri: Any) -> str:
        name = str(uri or "?").rstrip("/").rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name else name
    return f"{stem(row.get('content_uri'))} × {stem(row.get('style_uri'))}"


def build_payload(
    data: ReportData,
    *,
    base: str,
    row_thumbs: Mapping[str, str | None],
    input_thumbs: Mapping[str, str | None],
    embedded: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """The JSON blob the page renders. row_thumbs: row id → thumbnail relpath; input_thumbs: input URI →
    thumbnail relpath. With `embedded` (relpath → bytes) thumbnails become data URIs and full images are
    not linked (they are not reachable from where the page is)."""

    def src(rel: str | None) -> str | None:
        if rel is None:
            return None
        if embedded is not None:
            blob = embedded.get(rel)
            return data_uri(blob) if blob is not None else None
        return image_src(rel, base)

    contents: dict[str, int] = {}
    styles: dict[str, int] = {}
    rows = []
    for r in data.rows:
        c = contents.setdefault(r["content_uri"], len(contents)) if r.get("content_uri") else None
        s = styles.setdefault(r["style_uri"], len(styles)) if r.get("style_uri") else None
        thumb = src(row_thumbs.get(r["id"])) if r["status"] == "done" else None
        rows.append(payload_row(r, c, s, thumb=thumb, image_base=None if embedded is not None else base))
    run = {k: data.run.get(k) for k in ("run_id", "status", "started_at", "finished_at", "manifest", "weights",
                                        "versions", "stats", "history", "params")}
    return {
        "version": PAYLOAD_VERSION,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "out": data.out,
        "embedded": embedded is not None,
        "status": data.status,
        "run": run,
        "workers": data.workers,
        "numeric": data.numeric,
        "help": {k: v for k, v in METRIC_HELP.items()},
        "defaults": data.defaults,
        "params_known": not any("parameters unavailable" in n for n in data.notes),
        "notes": data.notes,
        "contents": [{"uri": _masked(u), "thumb": src(input_thumbs.get(u))} for u in contents],
        "styles": [{"uri": _masked(u), "thumb": src(input_thumbs.get(u))} for u in styles],
        "rows": rows,
    }


def payload_row(
    r: Mapping[str, Any], c: int | None, s: int | None, *, thumb: str | None, image_base: str | None
) -> dict[str, Any]:
    """One row of the page's blob, in its short keys; None values are left out. c and s: the row's content
    and style indices; thumb: its thumbnail's src; image_base: where full images are linked from, None
    when they are not reachable from the page."""
    row: dict[str, Any] = {"id": r["id"], "st": r["status"], "c": c, "s": s, "v": r["values"], "name": row_name(r)}
    if r["status"] == "done":
        row["th"] = thumb
        if r.get("image") and image_base is not None:
            row["img"] = image_src(r["image"], image_base)
        row["out"] = r.get("output_uri") and _masked(r["output_uri"])
        row["cv"] = curve_plot(r["curve"]) if r.get("curve") else None
    else:
        row["ek"] = r.get("error_kind")
        row["err"] = r.get("error")
    row.update(
        {"att": r.get("attempt"), "w": r.get("worker"), "dev": r.get("device"), "node": r.get("node"),
         "fin": r.get("finished_at"), "content": r.get("content"), "style": r.get("style")}
    )
    if r.get("params"):
        row["p"] = r["params"]
    if r.get("metadata"):
        row["md"] = r["metadata"]
    return {k: v for k, v in row.items() if v is not None}


def _masked(uri: str) -> str:
    return mask_uri(uri)


def script_json(payload: Mapping[str, Any]) -> str:
    """JSON that is safe inside <script>: '<', '>' and '&' escaped, so no value can close the element."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(payload: Mapping[str, Any]) -> str:
    title = f"nst report — {payload.get('out', '')}"
    status = payload.get("status") or {}
    subtitle = (
        f"{payload.get('out', '')} · run {((payload.get('run') or {}).get('run_id')) or '–'} · "
        f"{status.get('done', 0)} done, {status.get('failed', 0)} failed · generated {payload.get('generated', '')}"
    )
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
        f"<style>\n{CSS}</style></head>\n<body>\n"
        "<header><h1>Style-transfer run report</h1>"
        f"<div class=\"sub\">{html.escape(subtitle)}</div><div id=\"view-summary\"></div><nav id=\"tabs\"></nav></header>\n"
        "<main>\n"
        "<section id=\"view-gallery\"><div class=\"controls\">"
        "<label>status <select id=\"status\"><option value=\"all\">all</option><option value=\"done\">done</option>"
        "<option value=\"failed\">failed</option></select></label>"
        "<label>search <input id=\"q\" type=\"search\" placeholder=\"row id, file, error, tag\"></label>"
        "<label>sort by <select id=\"sort\"></select></label>"
        "<label><select id=\"dir\"><option value=\"1\">ascending</option><option value=\"-1\">descending</option>"
        "</select></label>"
        "<label>filter <select id=\"metric\"></select></label>"
        "<label>min <input id=\"min\" type=\"number\" step=\"any\"></label>"
        "<label>max <input id=\"max\" type=\"number\" step=\"any\"></label>"
        "</div><div id=\"gallery\" class=\"tiles\"></div><div id=\"gallery-pager\" class=\"pager\"></div></section>\n"
        "<section id=\"view-grid\" hidden><div id=\"grid-pager\" class=\"pager\"></div><div id=\"grid\"></div></section>\n"
        "<section id=\"view-sweeps\" hidden><div id=\"sweeps\"></div><div id=\"sweeps-pager\" class=\"pager\"></div></section>\n"
        "<section id=\"view-failures\" hidden><div id=\"failures\"></div><div id=\"failures-pager\" class=\"pager\">"
        "</div></section>\n</main>\n"
        "<div id=\"detail\" class=\"overlay\" hidden><div class=\"panel\"></div></div>\n"
        f"<script type=\"application/json\" id=\"nst-data\">{script_json(payload)}</script>\n"
        f"<script>\n{JS}</script>\n</body></html>\n"
    )
