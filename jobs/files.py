"""Check that referenced files exist and decode as images, in parallel; called by the validator.

I/O bound (object-store round trips), so threads: each check opens one URI through fsspec and
decodes it fully with PIL (a truncated JPEG passes a header check but fails a real load).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
from PIL import Image

DEFAULT_WORKERS = 16


def check_image(uri: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """Why this URI is not a usable image, or None when it opens and decodes."""
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as handle:
            data = handle.read()
    except FileNotFoundError:
        return "file not found"
    except IsADirectoryError:
        return "is a directory, not a file"
    except PermissionError:
        return "permission denied"
    except Exception as exc:  # any backend failure is a finding about this file, not a crash
        return f"cannot read ({type(exc).__name__}: {exc})"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        return f"image too large to decode safely ({exc})"
    except Exception as exc:
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return None


def check_images(
    uris: Iterable[str], *, storage_options: Mapping[str, Any] | None = None, workers: int = DEFAULT_WORKERS
) -> dict[str, str]:
    """The failing URIs with their reasons; every URI is checked once."""
    unique = sorted(set(uris))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda u: check_image(u, storage_options), unique)
        return {uri: reason for uri, reason in zip(unique, results, strict=True) if reason is not None}
