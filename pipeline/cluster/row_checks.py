"""What a worker checks about a row and how it names a failure: shapes the VGG stack accepts, numerical
problems of a result, and the error kind of an exception (the row's fault, or worth retrying).

Plain functions of tensors and exceptions, so each rule has its own unit test without Ray.
"""

from __future__ import annotations

import math
import re

import torch

from nst_core.engine import ImageResult
from nst_core.images import ImageError, resized_shape
from nst_core.params import StyleParams
from pipeline.store.errors import InputMissing, InputRefused, StorageError, is_storage_error
from pipeline.store.layout import OutputNameError
from pipeline.store.records import ErrorKind


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def classify_read_error(exc: BaseException) -> ErrorKind:
    """Bad input is the row's fault (not retried); an I/O failure may pass (retried)."""
    if isinstance(exc, (InputMissing, InputRefused, ImageError, OutputNameError)):
        return ErrorKind.bad_input
    if is_storage_error(exc):
        return ErrorKind.storage
    if isinstance(exc, ValueError) or _is_client_validation(exc):
        # A URI the storage client refuses to send (botocore's ParamValidationError for a bucket name like
        # "user:password@bucket"): the row's URI is at fault and retrying cannot help.
        return ErrorKind.bad_input
    return ErrorKind.internal


def _is_client_validation(exc: BaseException) -> bool:
    return any(c.__name__ in ("ParamValidationError", "InvalidBucketName") for c in type(exc).__mro__)


def numerical_problem(result: ImageResult, content: torch.Tensor) -> str | None:
    """Why a finished row must not be recorded done, or None: non-finite losses or pixels (NaN weights or
    an overflow give an all-black image that looks like a result), or a uniform image after optimising a
    non-uniform content (a collapsed optimisation). Such a row fails as `numerical` and is not retried:
    the same inputs and parameters fail the same way."""
    bad = sorted(k for k, v in result.final.items() if not math.isfinite(float(v)))
    if bad:
        return f"non-finite loss ({', '.join(f'{k}={result.final[k]}' for k in bad)}) after {result.steps_run} steps"
    image = result.image
    if not bool(torch.isfinite(image).all()):
        return f"the image has non-finite pixels after {result.steps_run} steps"
    if result.steps_run > 0 and _uniform(image) and not _uniform(content):
        value = [round(float(v), 4) for v in image[:, 0, 0]]
        return (
            f"degenerate image: every pixel is {value} after {result.steps_run} steps of a non-uniform content "
            "(check the weights and the loss weights)"
        )
    return None


def _uniform(image: torch.Tensor) -> bool:
    flat = image.detach().reshape(image.shape[0], -1).float()
    return bool((flat.amax(dim=1) - flat.amin(dim=1)).max() == 0)


_LAYER_BLOCK = re.compile(r"^(conv|relu|pool)(\d+)")


def min_side(params: StyleParams) -> int:
    """Smallest image side the VGG stack accepts for the layers in use: each 2x2 pooling halves it, so a
    layer after k poolings needs 2**k pixels (relu5_1, after four, needs 16)."""
    pools = 0
    for layer in (*params.content_layers, *params.style_layers):
        match = _LAYER_BLOCK.match(layer)
        if match:
            block = int(match.group(2))
            pools = max(pools, block if match.group(1) == "pool" else block - 1)
    return int(2**pools)


def check_shape(image: torch.Tensor, long_side: int, need: int, label: str) -> None:
    """Refuse, as bad input, an image so elongated that its resized short side is below `need` pixels.

    Without this the optimisation fails inside VGG's pooling with a RuntimeError, which looks transient
    and would be retried, and it would fail every other row optimised in the same batch.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    rh, rw = resized_shape(h, w, long_side)
    if min(rh, rw) < need:
        raise ImageError(
            f"{label}: {w}x{h} is too elongated: at a long side of {long_side} px its short side would be "
            f"{min(rh, rw)} px, below the {need} px the VGG layers in use need; crop it or raise --size"
        )


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return (
        text
        if isinstance(exc, (InputMissing, InputRefused, ImageError, StorageError))
        else f"{type(exc).__name__}: {text}"
    )


def content_side(params: StyleParams) -> int:
    return max(side for side, _ in params.stages())


def style_side(params: StyleParams) -> int:
    return max(1, math.ceil(content_side(params) * params.style_scale))
