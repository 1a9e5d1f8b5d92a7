"""Check that referenced files exist and decode as images, in parallel; called by the validator.

I/O bound (object-store round trips), so threads: each check reads one URI's bytes through fsspec and
decodes them with the engine's own `decode_image`, so the validator accepts and rejects exactly what a
run will (a truncated JPEG passes a header check but fails a real load; an oversized image is refused).
A decode holds the whole image as float32 (12 bytes a pixel, ~600 MiB for a 50-megapixel photo), so
fewer decodes than reads run at once: reads wait on the network, decodes on the CPU.
The decoder is imported on first use: it brings torch (~1 s, ~500 MB), which `import jobs` must not pay.
Region masks are decoded with the engine's `decode_mask`, so a mask with too many colours is found here too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import fsspec

from jobs.masking import mask_text
from jobs.options import options_for

DEFAULT_WORKERS = 16


def default_decoders() -> int:
    """Concurrent decodes: one per core (PIL releases the GIL while decoding), at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def check_image(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    decode_slots: threading.Semaphore | None = None,
    as_mask: bool = False,
) -> str | None:
    """Why this URI is not a usable image (or region mask), or None when it opens and decodes."""
    try:
        with fsspec.open(uri, "rb", **options_for(uri, storage_options)) as handle:
            data = handle.read()
    except FileNotFoundError:
        return "file not found"
    except IsADirectoryError:
        return "is a directory, not a file"
    except PermissionError:
        return "permission denied"
    except Exception as exc:  # any backend failure is a finding about this file, not a crash
        return "cannot read (" + mask_text(f"{type(exc).__name__}: {exc}", storage_options, (uri,)) + ")"
    from nst_core.images import ImageError, decode_image
    from nst_core.masks import decode_mask

    try:
        with decode_slots if decode_slots is not None else nullcontext():
            (decode_mask if as_mask else decode_image)(data, name=uri)
    except ImageError as exc:
        return _without_label(str(exc).removeprefix("mask "), uri)
    except Exception as exc:  # a decoder bug is still a finding about this file, not a crash of the check
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return None


def _without_label(message: str, uri: str) -> str:
    """ImageError messages start with the name; the validator already names the URI and its column."""
    prefix = f"{uri}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def check_images(
    uris: Iterable[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    workers: int = DEFAULT_WORKERS,
    decoders: int | None = None,
    as_masks: bool = False,
) -> dict[str, str]:
    """The failing URIs with their reasons; every URI is checked once (as region masks with `as_masks`).

    `workers` reads run at once, of which at most `decoders` (default: `default_decoders()`) decode.
    """
    import nst_core.images  # noqa: F401 - import once here, not under the import lock in every thread

    unique = sorted(set(uris))
    slots = threading.BoundedSemaphore(max(1, decoders if decoders is not None else default_decoders()))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda u: check_image(u, storage_options, decode_slots=slots, as_mask=as_masks), unique)
        return {uri: reason for uri, reason in zip(unique, results, strict=True) if reason is not None}
