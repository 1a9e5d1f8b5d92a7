"""Turns a `--weights` value into a loaded VGG: opens fsspec URIs, caches them once per node, checks hashes.

Called by `nst stylize` and by every Ray worker; `check_weights` is called by `run_manifest` before Ray
starts. nst_core only takes paths, file objects or state dicts; remote URIs are this module's job, so a
cluster with no internet can load weights from its own bucket. torch is imported only where a model is
loaded, so checking a `--weights` value stays cheap.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.masking import mask_text, mask_uri
from nst_core.atomic import replaced_atomically
from nst_core.params import Arch
from pipeline.store.errors import StorageError, describe_storage_error, is_storage_error
from pipeline.store.fs import filesystem, is_local

if TYPE_CHECKING:
    import torch

    from nst_core.vgg import VGGFeatures


CACHE_ENV = "NST_CACHE_DIR"


def cache_dir() -> Path:
    """Per-node weights cache: $NST_CACHE_DIR, else ~/.cache/nst/weights."""
    base = os.environ.get(CACHE_ENV)
    return Path(base) if base else Path.home() / ".cache" / "nst" / "weights"


BUILTIN_HINT = "expected 'imagenet', 'random:SEED' or a path/URI to a state dict"


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class WeightsSourceError(ValueError):
    """A `--weights` value that cannot work, found before any worker starts (the message says why)."""


def is_builtin(weights: str) -> bool:
    return weights == "imagenet" or weights.startswith("random:")


def check_weights(
    weights: str,
    *,
    sha256: str | None = None,
    arch: Arch | str = Arch.vgg19,
    storage_options: Mapping[str, Any] | None = None,
    fetch_imagenet: bool = True,
) -> None:
    """Fail now, in one line, for a `--weights` value the workers would reject after Ray and its actors start.

    Checks the `random:SEED` syntax (with a did-you-mean for near misses such as `randum:0`), that a file
    or object exists and is readable, the form of `sha256`, and, with `fetch_imagenet`, that ImageNet
    weights are in this machine's torch cache or can be downloaded into it now (an embedded Ray's workers
    share that cache; on a cluster each node has its own, so the caller passes False there). The file's
    contents are still checked by each worker when it loads them.
    """
    if sha256 is not None:
        if is_builtin(weights):
            raise WeightsSourceError(
                f"--weights-sha256 applies to a weights file, not to {weights!r} (drop --weights-sha256)"
            )
        if not _SHA256.fullmatch(sha256.strip()):
            raise WeightsSourceError(f"--weights-sha256 {sha256!r}: expected 64 hexadecimal characters")
    if weights == "imagenet":
        if fetch_imagenet:
            _check_imagenet(arch)
        return
    if weights.startswith("random:"):
        if not weights.split(":", 1)[1].isdigit():
            raise WeightsSourceError(
                f"--weights {weights!r}: expected random:SEED with a non-negative integer SEED, e.g. random:0"
            )
        return
    if is_local(weights):
        _check_local_file(weights)
        return
    shown = mask_uri(weights)
    try:
        fs, path = filesystem(weights, storage_options)
        info = fs.info(path)
    except FileNotFoundError:
        raise WeightsSourceError(f"--weights {shown}: no such file") from None
    except Exception as exc:
        # Clients quote the URI's `user:password@bucket` part without its scheme: mask with the URI.
        detail = mask_text(describe_storage_error(exc, storage_options), storage_options, (weights,))
        if is_storage_error(exc):
            raise StorageError(f"storage unreachable checking weights {shown}: {detail}") from None
        raise WeightsSourceError(f"--weights {shown}: cannot read it ({detail})") from None
    if info.get("type") == "directory":
        raise WeightsSourceError(f"--weights {mask_uri(weights)} is a folder; give the state-dict file in it")


def _check_local_file(weights: str) -> None:
    path = weights.removeprefix("file://")
    if os.path.isfile(path):
        try:
            with open(path, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise WeightsSourceError(f"--weights {weights}: cannot read it ({exc.strerror or exc})") from None
        return
    if os.path.isdir(path):
        raise WeightsSourceError(f"--weights {weights} is a folder; give the state-dict file in it")
    raise WeightsSourceError(f"--weights {weights!r}: no such file; {BUILTIN_HINT}{_did_you_mean(weights)}")


def _did_you_mean(weights: str) -> str:
    """' (did you mean random:0?)' for a near miss of a builtin spec, else ''."""
    head, sep, tail = weights.partition(":")
    if sep and difflib.get_close_matches(head.lower(), ["random"], n=1, cutoff=0.6):
        return f" (did you mean random:{tail}?)"
    if not sep and difflib.get_close_matches(weights.lower(), ["imagenet"], n=1, cutoff=0.6):
        return " (did you mean imagenet?)"
    if not sep and weights.lower().startswith("random") and weights[6:].isdigit():
        return f" (did you mean random:{weights[6:]}?)"
    return ""


def _check_imagenet(arch: Arch | str) -> None:
    from nst_core.vgg import WeightsError, imagenet_checkpoint

    try:
        imagenet_checkpoint(arch)
    except WeightsError as exc:
        raise WeightsSourceError(f"--weights imagenet: {exc}") from None


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
    from nst_core.vgg import WeightsError

    if target.exists() and (sha256 is None or file_sha256(target) == sha256.lower()):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fs, path = filesystem(weights, storage_options)
    try:
        with replaced_atomically(target) as tmp:
            fs.get_file(path, tmp)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {mask_uri(weights)}") from None
    except Exception as exc:
        # mask_text with the URI: clients quote its `user:password@bucket` part without the scheme.
        detail = mask_text(f"{type(exc).__name__}: {exc}", storage_options, (weights,))
        raise WeightsError(f"cannot download weights from {mask_uri(weights)}: {detail}") from None
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
    from nst_core.vgg import load_vgg

    local = fetch_weights(weights, sha256=sha256, storage_options=storage_options)
    model = load_vgg(arch, local, sha256=sha256, device=device)
    if not is_builtin(weights):
        model.weights_source = mask_uri(weights)
    return model


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; anything else is passed to torch with a clear error if unavailable."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return resolved
