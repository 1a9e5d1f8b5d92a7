"""`nst report OUT [-o …] [--sheet …]` through Typer: the HTML, the summary line and the contact sheet's grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer
from PIL import Image
from pipeline.cli.report import report_command
from typer.testing import CliRunner

from pipeline.report.sheet import FAILED_MARK, PAD, auto_cell, sheet_size


def cli() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("report")(report_command)

    @app.callback()
    def root() -> None:
        """Test root (so `report` stays a sub-command)."""

    return app


def test_report_command_writes_html_and_a_contact_sheet(small_run: dict[str, Any], tmp_path: Path) -> None:
    html, sheet = tmp_path / "r.html", tmp_path / "sheet.png"
    result = CliRunner().invoke(
        cli(), ["report", small_run["out"], "-o", str(html), "--sheet", str(sheet), "--sheet-cell", "40"]
    )
    assert result.exit_code == 0, result.output
    assert f"report: {html} (6 rows: 5 done, 1 failed; images linked)" in result.output
    assert f"sheet: {sheet}" in result.output
    page = html.read_text()
    assert page.startswith("<!doctype html>") and 'id="nst-data"' in page
    assert "../" in page or "images/" in page  # images linked relatively from beside the run

    # 3 contents (the corrupt one included: its row is a failed cell) × 2 styles, plus the header row/column.
    image = np.asarray(Image.open(sheet).convert("RGB"))
    width, height = PAD + 3 * (40 + PAD), PAD + 4 * (40 + PAD)
    assert (image.shape[1], image.shape[0]) == (width, height) == sheet_size(3, 2, 40)
    step = 40 + PAD

    def cell(row: int, col: int) -> np.ndarray:
        y, x = PAD + row * step, PAD + col * step
        return image[y:y + 40, x:x + 40].astype(float)

    def flat(a: np.ndarray) -> bool:
        return bool((a == a[0, 0]).all())

    assert flat(cell(0, 0))  # the empty corner
    for r, c in [(0, 1), (0, 2), (1, 0), (2, 0), (1, 1), (1, 2), (2, 1), (2, 2)]:
        assert cell(r, c).std() > 3, f"cell {(r, c)} has no picture"
    # Every header cell carries its file name in a band along its bottom edge (dark text on white).
    from pipeline.report.sheet import LABEL_BAND

    for r, c in [(0, 1), (0, 2), (1, 0), (2, 0), (3, 0)]:
        band = cell(r, c)[40 - LABEL_BAND:]
        assert (band.sum(axis=2) < 300).sum() > 5, f"header {(r, c)} has no label"
    assert flat(cell(0, 0))  # the corner stays empty
    # The corrupt content: no header picture, and its row's only cell (style 1) carries the failure cross.
    assert flat(cell(3, 0)[: 40 - LABEL_BAND])
    failed = cell(3, 2)
    assert (np.abs(failed - np.array(FAILED_MARK)).sum(axis=2) < 30).sum() > 40
    assert flat(cell(3, 1)) and tuple(cell(3, 1)[0, 0]) == (255.0, 255.0, 255.0)  # no such row


def test_report_command_default_location_and_bad_output_error(small_run: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli(), ["report", small_run["out"]])
    assert result.exit_code == 0, result.output
    assert (Path(small_run["out"]) / "report.html").exists()
    failed = CliRunner().invoke(cli(), ["report", small_run["out"], "-o", "memory://x/r.html", "--link"])
    assert failed.exit_code != 0 and "cannot link" in str(failed.exception)


def test_auto_cell_keeps_big_grids_within_bounds() -> None:
    assert auto_cell(2, 2) == 128
    cell = auto_cell(100, 100)
    assert max(sheet_size(100, 100, cell)) <= 8192 and cell >= 70
    assert auto_cell(5000, 3) == 16


def test_report_json_names_what_was_written(small_run: dict[str, Any], tmp_path: Path) -> None:
    import json

    html = tmp_path / "j.html"
    result = CliRunner().invoke(cli(), ["report", small_run["out"], "-o", str(html), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["report"] == str(html) and (data["rows"], data["done"], data["failed"]) == (6, 5, 1)
    assert html.exists()


def test_report_on_a_path_without_a_run_exits_1_and_creates_nothing(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    for target in (tmp_path / "typo", tmp_path / "empty"):
        if target.name == "empty":
            target.mkdir()
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "report", str(target)],
            cwd=repo, env=dict(os.environ), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "holds no nst run" in lines[0] and str(target) in lines[0]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "typo").exists()
    assert list((tmp_path / "empty").iterdir()) == []
