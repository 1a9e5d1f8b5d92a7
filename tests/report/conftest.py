"""Fixtures of the report tests: a seeded random VGG, one real small run on an embedded local Ray, Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline.store.layout import OutputLayout

from nst_core.params import StyleParams
from nst_core.vgg import VGGFeatures, load_vgg

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def vgg() -> VGGFeatures:
    return load_vgg("vgg19", "random:0")


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PARAMS = StyleParams(size=32, steps=4, log_every=1)
SWEEP_STYLE_WEIGHT = 1e3


def write_png(path: Path, shape: tuple[int, int], seed: int) -> str:
    """A smooth random-colour PNG (a real file the decoder reads)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(low).resize((shape[1], shape[0]), Image.Resampling.BICUBIC).save(path)
    return str(path)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real run on an embedded local Ray: 2 contents × 2 styles, one sweep row, one corrupt content."""
    from pipeline.run.manifest_run import run_manifest

    base = tmp_path_factory.mktemp("report-run")
    inputs = base / "inputs"
    inputs.mkdir()
    c = [write_png(inputs / "content0.png", (32, 40), 1), write_png(inputs / "content1.png", (40, 32), 2)]
    s = [write_png(inputs / "style0.png", (32, 32), 3), write_png(inputs / "style1.png", (36, 36), 4)]
    bad = inputs / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really an image")
    rows: list[dict[str, Any]] = [
        {"content_uri": ci, "style_uri": si, "style_weight": None, "tag": f"c{i}s{j}"}
        for i, ci in enumerate(c) for j, si in enumerate(s)
    ]
    rows.append({"content_uri": c[0], "style_uri": s[0], "style_weight": SWEEP_STYLE_WEIGHT, "tag": "sweep"})
    rows.append({"content_uri": str(bad), "style_uri": s[1], "style_weight": None, "tag": "broken"})
    manifest = str(base / "manifest.parquet")
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    out = str(base / "out")
    summary = run_manifest(manifest=manifest, out=out, params=PARAMS, weights="random:0")
    assert summary.done == 5 and summary.failed == 1, summary
    return {"out": out, "manifest": manifest, "contents": c, "styles": s, "bad": str(bad), "rows": rows}


@pytest.fixture(scope="session")
def run_with_metrics(small_run: dict[str, Any]) -> str:
    """The run itself: its workers record `metric_*` columns for every done row."""
    from pipeline.store.ledger import read_ledger

    done = [r for r in read_ledger(OutputLayout(small_run["out"])).to_pylist() if r["status"] == "done"]
    assert done and all(r["metric_ssim"] is not None for r in done)
    return str(small_run["out"])


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by selenium through the system chromedriver (Debian packages)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = "chromium is not installed: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (.ci/run installs it; CI must not skip the browser tests)")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()
