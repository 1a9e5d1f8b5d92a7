"""Expand a `--content`/`--style` source into a sorted list of image URIs; called by the manifest builder.

A source is a directory (searched recursively for image extensions), a glob, a single image, or a
`.txt` (one URI per line) / `.csv` (a `uri`, `content_uri` or `style_uri` column) list, on any fsspec
file system. Sorting makes the manifest independent of listing order, which object stores do not promise.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import split_protocol

from jobs.masking import mask_text, mask_uri
from jobs.options import options_for

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
LIST_EXTENSIONS: tuple[str, ...] = (".txt", ".csv")


def _uri(fs: Any, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return os.path.abspath(path)
    return str(fs.unstrip_protocol(path))


def _read_list(src: str, fs: Any, path: str, column: str) -> list[str]:
    text = fs.cat_file(path).decode("utf-8-sig")
    if path.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        key = next((k for k in (column, "uri") if k in header), None)
        if key is None:
            raise ValueError(
                f"{src}: CSV lists need a {column!r} or 'uri' column; found {', '.join(header) or 'none'}"
            )
        entries = [(row.get(key) or "").strip() for row in reader]
    else:
        entries = [line.strip() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    local_list = split_protocol(src)[0] in (None, "file", "local")
    base = os.path.dirname(os.path.abspath(path)) if local_list else None
    out = []
    for entry in entries:
        # relative local entries are relative to the list file, so a folder with its list can be moved whole
        if base is not None and split_protocol(entry)[0] is None and not os.path.isabs(entry):
            entry = os.path.join(base, entry)
        out.append(entry)
    return out


def list_sources(src: str, *, column: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Sorted, de-duplicated URIs for one source; ValueError when it names nothing or matches no image."""
    try:
        fs, path = fsspec.core.url_to_fs(src, **options_for(src, storage_options))
    except (ImportError, ValueError) as exc:
        raise ValueError(f"cannot open {mask_uri(src)}: " + mask_text(str(exc), storage_options, (src,))) from None
    if any(ch in path for ch in "*?["):
        found = [p for p, info in fs.glob(path, detail=True).items() if info.get("type") == "file"]
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.lower().endswith(IMAGE_EXTENSIONS)]
    elif fs.isfile(path):
        if path.lower().endswith(LIST_EXTENSIONS):
            return sorted(set(_read_list(src, fs, path, column)))
        found = [path]
    else:
        raise ValueError(f"{src}: no such file, directory or glob match")
    if not found:
        raise ValueError(f"{src}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return sorted({_uri(fs, p) for p in found})
