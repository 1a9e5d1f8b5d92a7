"""Where a run puts things under `--out`: images, curves, ledger parts, run.json (see docs/outputs.md).

Called by the driver (planning names, ledger and run.json), the workers (image and curve URIs) and
`nst status`. Every name is deterministic from the row or batch, so any row can be recomputed alone and a
repeated write lands on the same object.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.storage import filesystem, is_local, join, mask_uri

IMAGES_DIR = "images"
CURVES_DIR = "curves"
LEDGER_DIR = "_ledger"
RUN_JSON = "run.json"
IMAGE_FORMATS: dict[str, str] = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
"""Output extension → encoder format name."""
DEFAULT_EXTENSION = "png"
TMP_PREFIX = ".tmp-"


class OutputNameError(ValueError):
    """A manifest `output_name` that would escape `--out` or has an unsupported extension."""


def validate_output_name(name: str) -> str:
    """The normalised relative path for a manifest `output_name`, or OutputNameError saying why not.

    The name is relative to `images/`: absolute paths, `..` segments, URI schemes, backslashes and hidden
    temporary prefixes are refused, so no row can write outside the output folder or over run records.
    """
    if not isinstance(name, str) or not name.strip():
        raise OutputNameError("output_name is empty")
    if "\\" in name or "\x00" in name:
        raise OutputNameError(f"output_name {name!r} contains a backslash or NUL byte")
    if "://" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise OutputNameError(f"output_name {name!r} must be a relative path inside the output folder")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise OutputNameError(f"output_name {name!r} may not contain empty, '.' or '..' path segments")
    if any(part.startswith(TMP_PREFIX) for part in parts):
        raise OutputNameError(
            f"output_name {name!r} may not start with {TMP_PREFIX!r} (reserved for temporary files)"
        )
    extension = posixpath.splitext(parts[-1])[1].lower().lstrip(".")
    if extension not in IMAGE_FORMATS:
        raise OutputNameError(
            f"output_name {name!r} must end in one of {', '.join('.' + e for e in IMAGE_FORMATS)}"
        )
    return posixpath.normpath(name)


def image_format(name: str) -> str:
    """Encoder format for an image name, from its extension."""
    return IMAGE_FORMATS[posixpath.splitext(name)[1].lower().lstrip(".")]


class OutputLayout:
    """Names under one output root URI."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or root

    def image_relpath(self, row_id: str, output_name: str | None) -> str:
        if output_name is not None:
            return f"{IMAGES_DIR}/{validate_output_name(output_name)}"
        return f"{IMAGES_DIR}/{row_id}.{DEFAULT_EXTENSION}"

    def image_uri(self, row_id: str, output_name: str | None = None) -> str:
        return join(self.root, self.image_relpath(row_id, output_name))

    def curve_uri(self, batch_id: str) -> str:
        return join(self.root, CURVES_DIR, f"{batch_id}.parquet")

    def ledger_dir(self) -> str:
        return join(self.root, LEDGER_DIR)

    def new_ledger_part_uri(self) -> str:
        # Time first so a plain listing is in write order; the uuid makes concurrent writers collision-free.
        return join(self.ledger_dir(), f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet")

    def run_json_uri(self) -> str:
        return join(self.root, RUN_JSON)


def batch_id_for(row_ids: Iterable[str]) -> str:
    """Deterministic id of a batch from its row set: a retried batch rewrites the same curve file."""
    digest = hashlib.sha256("\n".join(sorted(row_ids)).encode()).hexdigest()
    return digest[:20]


def check_inside(root: str, uri: str) -> None:
    """For local outputs, refuse a target whose real path (symlinks resolved) leaves the output folder."""
    if not is_local(root):
        return
    root_real = os.path.realpath(root.removeprefix("file://"))
    parent = os.path.dirname(uri.removeprefix("file://"))
    # Resolve the deepest existing ancestor: a symlinked directory inside --out must not point outside it.
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    real = os.path.realpath(parent or ".")
    if real != root_real and not real.startswith(root_real + os.sep):
        raise OutputNameError(f"output {mask_uri(uri)} resolves outside the output folder (symlink?)")


def check_layout_inside(root: str) -> None:
    """Refuse to start when a folder or file of the layout (images/, curves/, _ledger/, run.json) is a
    symlink leading outside the output folder: every write and every cleanup sweep would follow it."""
    if not is_local(root):
        return
    base = root.removeprefix("file://").rstrip("/") or "/"
    root_real = os.path.realpath(base)
    for name in (IMAGES_DIR, CURVES_DIR, LEDGER_DIR, RUN_JSON):
        path = os.path.join(base, name)
        if not os.path.lexists(path):
            continue
        real = os.path.realpath(path)
        if real != root_real and not real.startswith(root_real + os.sep):
            raise OutputNameError(
                f"{mask_uri(path)} leads outside the output folder (to {real}); refusing to write through "
                "it: remove the link or choose another --out"
            )


def list_files(uri: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Paths (protocol-less, as the filesystem reports them) of every file below `uri`; empty if absent."""
    fs, path = filesystem(uri, storage_options)
    try:
        # Other processes (workers, an earlier driver) write here: never answer from a cached listing.
        fs.invalidate_cache()
        if not fs.exists(path):
            return []
        return sorted(fs.find(path))
    except FileNotFoundError:
        return []


def sweep_temporary(root: str, storage_options: Mapping[str, Any] | None = None) -> int:
    """Delete temporary files left by a killed writer (local outputs only; object stores have none).

    Safe only while no other run writes to the same output, which the driver assumes (one run per --out).
    """
    if not is_local(root):
        return 0
    removed = 0
    base = root.removeprefix("file://")
    if not os.path.isdir(base):
        return 0
    for directory, _dirs, files in os.walk(base):
        for name in files:
            if name.startswith(TMP_PREFIX):
                try:
                    os.unlink(os.path.join(directory, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed
