"""The HTML report rendered in a real headless Chromium: loads cleanly, one tile per row, failures listed."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from pipeline.report import build_report
from pipeline.report.data import ReportData
from pipeline.report.html import build_payload, render_html

pytestmark = pytest.mark.browser


def load(browser: Any, path: str | Path) -> list[dict[str, Any]]:
    """Open the page; return the console entries it logged (selenium's get_log drains them)."""
    browser.get_log("browser")
    browser.get(Path(path).resolve().as_uri())
    assert browser.execute_script("return document.body.getAttribute('data-ready')") == "1"
    # Let the lazily loaded thumbnails in view arrive (and fail, if a link were broken).
    browser.set_script_timeout(30)
    browser.execute_async_script(
        "const done = arguments[0];"
        "Promise.all(Array.from(document.images).filter(i => i.offsetParent !== null"
        " && i.getBoundingClientRect().top < innerHeight)"
        ".map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; }))).then(() => done());"
    )
    return list(browser.get_log("browser"))


def errors(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("level") in ("SEVERE", "ERROR")]


def tile_ids(browser: Any, selector: str = "#gallery .tile") -> list[str]:
    return [t.get_attribute("data-row") for t in browser.find_elements(By.CSS_SELECTOR, selector)]


def test_report_of_a_real_run_in_chromium(run_with_metrics: str, browser: Any, tmp_path: Path) -> None:
    result = build_report(out=run_with_metrics)
    assert not result.embedded and result.rows == 6
    logs = load(browser, Path(run_with_metrics) / "report.html")
    assert errors(logs) == []

    # One tile per row; every done tile's thumbnail really loaded through its relative link.
    ids = tile_ids(browser)
    assert len(ids) == 6 and len(set(ids)) == 6
    loaded = browser.execute_script(
        "return Array.from(document.querySelectorAll('#gallery .tile img')).map(i => i.complete && i.naturalWidth > 0)")
    assert loaded == [True] * 5
    # Tiles are labelled by what they show (content × style file names), not by row-id hashes.
    names = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#gallery .tile figcaption b")]
    assert names[0] == "content0 × style0" and not any(i[:10] in " ".join(names) for i in ids)

    # The headline counts the whole output; the last run's facts are labelled as the last run's.
    summary = browser.find_element(By.ID, "view-summary").text
    assert "images / hour (all runs)" in summary and "Last run " in summary
    assert "device s / row" in summary

    # A screenshot that is not blank.
    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"), dtype=float)
    assert shot.std() > 10, "screenshot looks blank"

    # The failed row is in the failure list with its error.
    browser.find_element(By.CSS_SELECTOR, "[data-view=failures]").click()
    failed = browser.find_elements(By.CSS_SELECTOR, "#failures tr.failed-row")
    assert len(failed) == 1
    assert "bad_input" in failed[0].text and "broken.png" in failed[0].text

    # Client-side sorting by a metric: descending SSIM puts the largest first.
    browser.find_element(By.CSS_SELECTOR, "[data-view=gallery]").click()
    Select(browser.find_element(By.ID, "sort")).select_by_value("ssim")
    Select(browser.find_element(By.ID, "dir")).select_by_value("-1")
    ssim = browser.execute_script(
        "const d = JSON.parse(document.getElementById('nst-data').textContent);"
        "return Object.fromEntries(d.rows.filter(r => r.v.ssim !== undefined).map(r => [r.id, r.v.ssim]));")
    ordered = tile_ids(browser)
    assert ordered[:5] == sorted(ssim, key=lambda k: -ssim[k]) and ordered[5] not in ssim
    # Filtering by status.
    Select(browser.find_element(By.ID, "status")).select_by_value("failed")
    assert len(tile_ids(browser)) == 1

    # A tile opens the full image, its loss curve and its metrics.
    Select(browser.find_element(By.ID, "status")).select_by_value("done")
    browser.find_elements(By.CSS_SELECTOR, "#gallery .tile")[0].click()
    panel = browser.find_element(By.CSS_SELECTOR, "#detail .panel")
    assert len(panel.find_elements(By.CSS_SELECTOR, "svg.curve polyline")) >= 2
    full = panel.find_element(By.CSS_SELECTOR, "img.full")
    assert full.get_attribute("src").endswith(".png")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", full) > 0
    assert "ssim" in panel.text and "gram err relu1 1" in panel.text
    browser.find_element(By.CSS_SELECTOR, "#detail .panel button").click()

    # Content × style grid: 3 contents (one unreadable) × 2 styles, the sweep pair badged.
    browser.find_element(By.CSS_SELECTOR, "[data-view=grid]").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid tr")) == 4
    badges = browser.find_elements(By.CSS_SELECTOR, "#grid .badge")
    assert [b.text for b in badges] == ["×2"]
    badges[0].click()
    sweep = browser.find_element(By.CSS_SELECTOR, ".sweep.hl")
    captions = [c.text for c in sweep.find_elements(By.CSS_SELECTOR, "figcaption")]
    assert sorted(captions) == ["style_weight=1000", "style_weight=1e6"]
    assert errors(browser.get_log("browser")) == []


def synthetic_rows(n: int, thumb: str) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        failed = i % 97 == 0
        rows.append({
            "id": f"row{i:05d}", "status": "failed" if failed else "done", "index": i, "attempt": 1,
            "error_kind": "bad_input" if failed else None, "error": f"content c{i}.png: corrupt" if failed else None,
            "content_uri": f"s3://b/c{i // 100}.png", "style_uri": f"s3://b/s{i % 100}.png",
            "content": f"s3://b/c{i // 100}.png", "style": f"s3://b/s{i % 100}.png",
            "output_uri": None if failed else f"s3://b/out/images/row{i:05d}.png",
            "image": None if failed else thumb, "worker": "w0", "node": "n", "device": "cpu",
            "finished_at": None, "metadata": {}, "params": {},
            "values": {} if failed else {"ssim": float(rng.random()), "loss_total": float(rng.random())},
            "curve": None if failed else {"step": list(range(0, 500, 10)), "total": list(np.geomspace(1e5, 10, 50)),
                                          "content": list(np.linspace(0.1, 5, 50)), "style": list(np.geomspace(1e5, 5, 50))},
        })
    return rows


def test_ten_thousand_rows_stay_paged(browser: Any, tmp_path: Path, small_run: dict[str, Any]) -> None:
    n = 10_000
    thumb = "thumb.jpg"
    shutil.copy(next((Path(small_run["out"]) / "images").glob("*.png")), tmp_path / "full.png")
    Image.open(tmp_path / "full.png").convert("RGB").save(tmp_path / thumb)
    rows = synthetic_rows(n, thumb)
    data = ReportData(out="s3://b/out", run={}, status={"rows": n, "done": n - 104, "failed": 104},
                      rows=rows, numeric=["ssim", "loss_total"], workers=[], defaults={})
    payload = build_payload(data, base="", row_thumbs={r["id"]: thumb for r in rows if r["status"] == "done"},
                            input_thumbs={})
    page = tmp_path / "big.html"
    page.write_text(render_html(payload))
    assert errors(load(browser, page)) == []
    assert len(tile_ids(browser)) == 120  # one page of tiles in the DOM, not 10,000
    assert "page 1 / 84" in browser.find_element(By.ID, "gallery-pager").text
    Select(browser.find_element(By.ID, "sort")).select_by_value("ssim")
    Select(browser.find_element(By.ID, "dir")).select_by_value("-1")
    best = max((r for r in rows if r["values"]), key=lambda r: r["values"]["ssim"])
    assert tile_ids(browser)[0] == best["id"]
    Select(browser.find_element(By.ID, "status")).select_by_value("failed")
    assert len(tile_ids(browser)) == 104
    browser.find_element(By.CSS_SELECTOR, "[data-view=grid]").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid tr")) == 21  # 20 contents per page + header
    assert "page 1 / 5" in browser.find_element(By.ID, "grid-pager").text
    assert errors(browser.get_log("browser")) == []
    assert page.stat().st_size < 30 * 2**20
