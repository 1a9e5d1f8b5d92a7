"""Fixtures for the manifest tests: tiny real images on disk and in fsspec's memory file system."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.jobs.manifest_helpers import write_image


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """content/: 3 images (one nested) + a non-image; style/: 2 images."""
    root = tmp_path / "images"
    write_image(root / "content" / "b.jpg")
    write_image(root / "content" / "a.png", color=(10, 200, 10))
    write_image(root / "content" / "nested" / "c.webp")
    (root / "content" / "notes.txt").write_text("not an image")
    write_image(root / "style" / "wave.jpg", color=(0, 0, 250))
    write_image(root / "style" / "stars.png", color=(250, 250, 0))
    return root


@pytest.fixture
def memfs() -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
    """fsspec's process-wide memory file system, under a unique root that is removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/t-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)
