"""Where a run puts things under `--out`: images, curves, ledger parts, run.json (see docs/outputs.md).

Called by the driver (planning names, ledger and run.json), the workers (image and curve URIs) and
`nst status`. Every name is deterministic from the row or batch, so any row can be recomputed alone and a
repeated write lands on the same object.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from jobs.masking import mask_uri
from jobs.names import DEFAULT_EXTENSION, IMAGE_FORMATS, image_format, output_name_problem, row_id_problem
from nst_core.atomic import TMP_PREFIX
from pipeline.store.bounded import bounded
from pipeline.store.errors import StorageError
from pipeline.store.fs import filesystem, is_local, join

__all__ = ["IMAGE_FORMATS", "TMP_PREFIX", "image_format"]


IMAGES_DIR = "images"


CURVES_DIR = "curves"


LEDGER_DIR = "_ledger"


RUN_JSON = "run.json"


LEASE = "_lease.json"


class OutputNameError(ValueError):
    """A manifest `output_name` that would escape `--out` or has an unsupported extension."""


def validate_output_name(name: str) -> str:
    """`name` itself when it may name an output file under `images/` (jobs/names.py: the one rule that
    `manifest validate` applies too), else OutputNameError saying why not."""
    problem = output_name_problem(name) if isinstance(name, str) else "output_name is not a string"
    if problem is not None:
        raise OutputNameError(problem)
    return name


def validate_row_id(row_id: str) -> str:
    """`row_id` itself when `<row_id>.png` may name an output file, else OutputNameError."""
    problem = row_id_problem(row_id) if isinstance(row_id, str) else "row_id is not a string"
    if problem is not None:
        raise OutputNameError(problem)
    return row_id


class OutputLayout:
    """Names under one output root URI."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or root

    def image_relpath(self, row_id: str, output_name: str | None) -> str:
        if output_name is not None:
            return f"{IMAGES_DIR}/{validate_output_name(output_name)}"
        return f"{IMAGES_DIR}/{validate_row_id(row_id)}.{DEFAULT_EXTENSION}"

    def image_uri(self, row_id: str, output_name: str | None = None) -> str:
        return join(self.root, self.image_relpath(row_id, output_name))

    def curve_uri(self, batch_id: str) -> str:
        return join(self.root, CURVES_DIR, f"{batch_id}.parquet")

    def ledger_dir(self) -> str:
        return join(self.root, LEDGER_DIR)

    def new_ledger_part_uri(self, tier: int = 0) -> str:
        # Time first so a plain listing is in write order; the uuid makes concurrent writers collision-free.
        # A merged part names its compaction tier (pipeline/store/compaction.py); a flushed part has none.
        suffix = f"-t{tier}" if tier else ""
        return join(self.ledger_dir(), f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{suffix}.parquet")

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
    base = root.removeprefix("file://").rstrip("/") or "/"
    if not os.path.isdir(base):
        # A vanished --out is a storage failure (retried), never a verdict on the row's name.
        raise StorageError(f"output folder {mask_uri(root)} is missing (deleted or unmounted?)")
    root_real = os.path.realpath(base)
    parent = os.path.dirname(uri.removeprefix("file://"))
    # Resolve the deepest existing ancestor (never above --out, which exists): a symlinked directory inside
    # --out must not point outside it.
    while parent and len(parent) > len(base) and not os.path.exists(parent):
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
    for name in (IMAGES_DIR, CURVES_DIR, LEDGER_DIR, RUN_JSON, LEASE):
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
        if not bounded(fs, "exists", path, uri=uri):
            return []
        return sorted(bounded(fs, "find", path, uri=uri))
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
