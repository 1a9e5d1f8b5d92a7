"""Report thumbnails: made once per image under OUT/_report/thumbs/ and reused by every later report.

Called by `build_report` (for the HTML tiles and the contact sheet). An existing thumbnail is never
remade (one listing finds them, not one request per file), so re-reporting a 10,000-row run after a
resume only reads the new rows' images.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from pipeline.store.fs import filesystem, join
from pipeline.store.layout import list_files
from pipeline.store.transfer import read_bytes, write_bytes_atomic

REPORT_DIR = "_report"
THUMBS_DIR = f"{REPORT_DIR}/thumbs"
INPUTS_SUBDIR = "inputs"
DEFAULT_THUMB_SIZE = 160
"""Long side in pixels: sharp on high-density screens at the report's ~110 px tiles, ~5 kB as JPEG."""
JPEG_QUALITY = 85
IO_THREADS = 8
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def thumb_name(key: str) -> str:
    """File name for a row id (kept when filename-safe, else hashed) or any other key."""
    if _SAFE_NAME.match(key) and not key.startswith("."):
        return f"{key}.jpg"
    return hashlib.sha256(key.encode()).hexdigest()[:24] + ".jpg"


def row_thumb_relpath(row_id: str) -> str:
    return f"{THUMBS_DIR}/{thumb_name(row_id)}"


def input_thumb_relpath(uri: str) -> str:
    return f"{THUMBS_DIR}/{INPUTS_SUBDIR}/{hashlib.sha256(uri.encode()).hexdigest()[:24]}.jpg"


def make_thumbnail(data: bytes, size: int = DEFAULT_THUMB_SIZE) -> bytes:
    """JPEG bytes of the image shrunk to fit size × size (aspect kept; never enlarged)."""
    with Image.open(io.BytesIO(data)) as source:
        img = source.convert("RGB")
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def ensure_thumbnails(
    out: str,
    sources: Mapping[str, str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    size: int = DEFAULT_THUMB_SIZE,
) -> dict[str, bool]:
    """Make the missing thumbnails; `sources` maps a relpath under `out` to the image URI it shows.

    Returns relpath → whether the thumbnail exists now. An unreadable source (an input that moved, a
    deleted output) gives False and never stops the report.
    """
    fs, root = filesystem(out, storage_options)
    root = root.rstrip("/")
    present = {p[len(root) + 1:] for p in list_files(join(out, THUMBS_DIR), storage_options)}
    missing = [rel for rel in sources if rel not in present]

    def make(rel: str) -> bool:
        try:
            data = make_thumbnail(read_bytes(sources[rel], storage_options), size)
        except Exception:  # noqa: BLE001 - unreadable/undecodable source: the tile shows a placeholder
            return False
        write_bytes_atomic(join(out, rel), data, storage_options)
        return True

    with ThreadPoolExecutor(IO_THREADS) as pool:
        made = dict(zip(missing, pool.map(make, missing), strict=True))
    return {rel: rel in present or made.get(rel, False) for rel in sources}


def read_thumbnails(
    out: str, relpaths: Sequence[str], storage_options: Mapping[str, Any] | None = None
) -> dict[str, bytes]:
    """relpath → JPEG bytes (for data URIs and the contact sheet); unreadable ones are left out."""

    def read(rel: str) -> bytes | None:
        try:
            return read_bytes(join(out, rel), storage_options)
        except (OSError, ValueError):
            return None

    unique = sorted(set(relpaths))
    with ThreadPoolExecutor(IO_THREADS) as pool:
        return {rel: data for rel, data in zip(unique, pool.map(read, unique), strict=True) if data is not None}
