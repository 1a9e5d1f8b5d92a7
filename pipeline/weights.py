"""Turns a `--weights` value into a loaded VGG: opens fsspec URIs, caches them once per node, checks hashes.

Called by `nst stylize` and by every Ray worker. nst_core only takes paths, file objects or state dicts;
remote URIs are this module's job, so a cluster with no internet can load weights from its own bucket.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nst_core.params import Arch
from nst_core.vgg import VGGFeatures, WeightsError, load_vgg
from pipeline.storage import filesystem, is_local, mask_text, mask_uri

CACHE_ENV = "NST_CACHE_DIR"


def cache_dir() -> Path:
    """Per-node weights cache: $NST_CACHE_DIR, else ~/.cache/nst/weights."""
    base = os.environ.get(CACHE_ENV)
    return Path(base) if base else Path.home() / ".cache" / "nst" / "weights"


def is_builtin(weights: str) -> bool:
    return weights == "imagenet" or weights.startswith("random:")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_weights(
    weights: str, *, sha256: str | None = None, storage_options: Mapping[str, Any] | None = None
) -> str:
    """A local path (or builtin spec) for `weights`; remote URIs are downloaded once into the node cache.

    The cached file is named after the expected hash when one is given (so a changed file at the same URI
    is never mistaken for the cached one), else after the URI. Concurrent workers on one node may both
    download; each writes its own temporary file and renames it into place, so the cache is never partial.
    """
    if is_builtin(weights):
        return weights
    if is_local(weights):
        return weights.removeprefix("file://")
    name = os.path.basename(weights.rstrip("/")) or "weights.pth"
    key = sha256.lower() if sha256 else hashlib.sha256(weights.encode()).hexdigest()[:16]
    target = cache_dir() / f"{key}-{name}"
    if target.exists() and (sha256 is None or file_sha256(target) == sha256.lower()):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fs, path = filesystem(weights, storage_options)
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    try:
        fs.get_file(path, str(tmp))
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {mask_uri(weights)}") from None
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        # mask_text with the URI: clients quote its `user:password@bucket` part without the scheme.
        detail = mask_text(f"{type(exc).__name__}: {exc}", storage_options, (weights,))
        raise WeightsError(f"cannot download weights from {mask_uri(weights)}: {detail}") from None
    os.replace(tmp, target)
    return str(target)


def load_model(
    weights: str = "imagenet",
    *,
    sha256: str | None = None,
    arch: Arch | str = Arch.vgg19,
    device: str | torch.device = "cpu",
    storage_options: Mapping[str, Any] | None = None,
) -> VGGFeatures:
    """Load the VGG feature extractor for a `--weights` value (builtin, local path or any fsspec URI)."""
    local = fetch_weights(weights, sha256=sha256, storage_options=storage_options)
    model = load_vgg(arch, local, sha256=sha256, device=device)
    if not is_builtin(weights):
        model.weights_source = mask_uri(weights)
    return model


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; anything else is passed to torch with a clear error if unavailable."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return resolved
