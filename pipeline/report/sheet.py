"""`nst report --sheet`: one contact-sheet PNG of the content × style grid, built from the report thumbnails.

Called by `build_report`. Layout: a header row of style thumbnails, a header column of content
thumbnails, and in each cell the output of that pair (the first done row when a sweep has several).
Sheet size: width = PAD + (styles + 1)·(cell + PAD), height = PAD + (contents + 1)·(cell + PAD).
Each header cell carries its input's file name in a band along its bottom edge (cells of LABEL_MIN_CELL
pixels or more), so the rows and columns stay identifiable once the sheet leaves the report.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

PAD = 4
MAX_CELL = 128
MIN_CELL = 16
MAX_SIDE = 8192
"""Longest sheet side when the cell size is automatic (a 100 × 100 grid gets ~77 px cells)."""
BACKGROUND = (255, 255, 255)
EMPTY = (236, 236, 240)
FAILED = (251, 233, 233)
FAILED_MARK = (198, 40, 40)
LABEL_MIN_CELL = 32
LABEL_BAND = 12
LABEL_TEXT = (20, 20, 24)


@dataclass(frozen=True)
class SheetCell:
    content: int
    style: int
    thumb: str | None
    """Thumbnail relpath of the output, None for a failed or unreadable row."""
    failed: bool


def auto_cell(n_contents: int, n_styles: int) -> int:
    """Cells as large as MAX_CELL while the sheet stays within MAX_SIDE pixels (never below MIN_CELL)."""
    n = max(n_contents, n_styles) + 1
    return max(MIN_CELL, min(MAX_CELL, (MAX_SIDE - PAD) // n - PAD))


def sheet_size(n_contents: int, n_styles: int, cell: int) -> tuple[int, int]:
    return PAD + (n_styles + 1) * (cell + PAD), PAD + (n_contents + 1) * (cell + PAD)


def _paste(sheet: Image.Image, data: bytes | None, x: int, y: int, cell: int, fill: tuple[int, int, int]) -> None:
    if data is None:
        sheet.paste(fill, (x, y, x + cell, y + cell))
        return
    with Image.open(io.BytesIO(data)) as source:
        img = source.convert("RGB")
        img.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        sheet.paste(EMPTY, (x, y, x + cell, y + cell))
        sheet.paste(img, (x + (cell - img.width) // 2, y + (cell - img.height) // 2))


def contact_sheet(
    contents: Sequence[str | None],
    styles: Sequence[str | None],
    cells: Sequence[SheetCell],
    thumbs: Mapping[str, bytes],
    *,
    cell: int | None = None,
    content_labels: Sequence[str] = (),
    style_labels: Sequence[str] = (),
) -> Image.Image:
    """contents/styles: thumbnail relpath of each input (None when unreadable); thumbs: relpath → JPEG bytes;
    the labels (file names) are drawn on the header cells in the same order."""
    size = cell if cell is not None else auto_cell(len(contents), len(styles))
    if size < 1:
        raise ValueError(f"sheet cell size must be >= 1 pixel, got {size}")
    sheet = Image.new("RGB", sheet_size(len(contents), len(styles), size), BACKGROUND)
    step = size + PAD
    for j, rel in enumerate(styles):
        _paste(sheet, thumbs.get(rel) if rel else None, PAD + (j + 1) * step, PAD, size, EMPTY)
    for i, rel in enumerate(contents):
        _paste(sheet, thumbs.get(rel) if rel else None, PAD, PAD + (i + 1) * step, size, EMPTY)
    draw = ImageDraw.Draw(sheet)
    if size >= LABEL_MIN_CELL:
        for j, text in enumerate(style_labels):
            _label(draw, text, PAD + (j + 1) * step, PAD, size)
        for i, text in enumerate(content_labels):
            _label(draw, text, PAD, PAD + (i + 1) * step, size)
    placed: set[tuple[int, int]] = set()
    for c in cells:
        if (c.content, c.style) in placed:
            continue
        placed.add((c.content, c.style))
        x, y = PAD + (c.style + 1) * step, PAD + (c.content + 1) * step
        data = thumbs.get(c.thumb) if c.thumb else None
        _paste(sheet, data, x, y, size, FAILED if c.failed else EMPTY)
        if c.failed:
            width = max(1, size // 16)
            draw.line((x + size // 4, y + size // 4, x + 3 * size // 4, y + 3 * size // 4), fill=FAILED_MARK, width=width)
            draw.line((x + 3 * size // 4, y + size // 4, x + size // 4, y + 3 * size // 4), fill=FAILED_MARK, width=width)
    return sheet


def _label(draw: ImageDraw.ImageDraw, text: str, x: int, y: int, cell: int) -> None:
    """`text` on a white band along the bottom of the cell at (x, y), cut with '…' to fit its width."""
    font = ImageFont.load_default()
    top = y + cell - LABEL_BAND
    draw.rectangle((x, top, x + cell - 1, y + cell - 1), fill=BACKGROUND)
    shown = text
    while shown and draw.textlength(shown, font=font) > cell - 2:
        shown = shown[:-2] + "…" if len(shown) > 2 else ""
    draw.text((x + 1, top), shown, fill=LABEL_TEXT, font=font)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
