"""Helpers shared by the manifest tests (a uniquely named module: tests/ has no packages)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def write_image(
    path: Path, size: tuple[int, int] = (48, 32), color: tuple[int, int, int] = (200, 30, 30)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_table(path: Path | str, table: pa.Table) -> str:
    pq.write_table(table, str(path))
    return str(path)
