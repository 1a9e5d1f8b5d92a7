"""Memory model behind `--batch-size auto`: bytes one image costs during optimisation vs the device's free memory.

Called by the workers (which know their device's free memory) when the driver asks for a batch size. The
estimate is deliberately conservative; a CUDA out-of-memory error still splits the batch in half.
"""

from __future__ import annotations

import math
import os

from nst_core.layers import LAYER_NAMES, layer_channels
from nst_core.params import W2_NEWTON_SCHULZ_ITERATIONS, OptimizerName, Precision, StyleLossKind, StyleParams

SAFETY = 0.6
"""Fraction of the free memory the model may plan to use (allocator fragmentation, cuDNN workspaces)."""


GPU_CAP = 64


CPU_CAP = 8
"""On CPU a larger batch gains little throughput and makes a slow run's progress coarse."""


MODEL_BYTES = 80 * 2**20  # VGG19 `features` in fp32 (~20 M parameters); VGG16 is smaller


WORKSPACE_BYTES = 256 * 2**20


def _activation_elements(height: int, width: int, layers: tuple[str, ...], arch: str) -> tuple[int, int]:
    """(sum of activation elements kept for backward, largest single activation) up to the deepest layer."""
    names = LAYER_NAMES[arch]
    channels = layer_channels(arch)
    deepest = max(names.index(name) for name in layers)
    h, w = height, width
    total = largest = 0
    for name in names[: deepest + 1]:
        if name.startswith("pool"):
            h, w = max(1, h // 2), max(1, w // 2)
        n = channels[name] * h * w
        total += n
        largest = max(largest, n)
    return total, largest


def bytes_per_image(
    params: StyleParams, arch: str = "vgg19", height: int | None = None, width: int | None = None
) -> int:
    """Peak bytes one content image adds to a batch at the largest stage of `params`.

    Terms: the VGG activations kept for the backward pass (conv and ReLU outputs, in the convolution
    precision) plus one gradient of the largest activation; the optimised pixels, their gradient and the
    optimiser state (Adam: 2 moments; L-BFGS: `params.lbfgs_history` pairs; `ema_decay`: the average and
    the returned image); the content targets; with `style_loss=w2`, the N×N matrices autograd keeps per
    style layer (`w2_matrices_per_layer`, measured in tests/pipeline/test_run_units.py). Without
    a shape the square of the long side is used, the worst case for any aspect ratio. `precision=auto`
    depends on the device, which `params` does not know: it counts as fp32 (the larger) unless the caller
    resolved it first (`resolved_for`).
    """
    long_side = max(size for size, _ in params.stages())
    h = height if height is not None else long_side
    w = width if width is not None else long_side
    layers = tuple(params.content_layers) + tuple(params.style_layers)
    total, largest = _activation_elements(h, w, layers, arch)
    act_bytes = 2 if params.precision == Precision.bf16 else 4
    pixels = 3 * h * w
    optimiser_copies = {
        OptimizerName.adam: 2,
        OptimizerName.lbfgs: 2 * params.lbfgs_history + 2,
        OptimizerName.gd: 0,
    }[params.optimizer]
    if params.ema_decay > 0:
        optimiser_copies += 2
    if params.warm_start and params.early_stop > 0 and params.optimizer is OptimizerName.adam:
        optimiser_copies += 2  # the moments of the step before, to freeze those of an image that stopped
    content_target, _ = _activation_elements(h, w, tuple(params.content_layers), arch)
    w2 = 0
    if params.style_loss is StyleLossKind.w2:
        channels = layer_channels(arch)
        w2 = sum(channels[name] ** 2 for name in params.style_layers) * w2_matrices_per_layer() * 4
    return int(
        total * act_bytes + 2 * largest * 4 + pixels * 4 * (2 + optimiser_copies) + content_target * 4 + w2
    )


def w2_matrices_per_layer() -> int:
    """N×N fp32 matrices the W2 loss saves for backward per image and layer: three per Newton–Schulz
    iteration (T, Y, Z) and four more (covariance, cross products); 512 channels × 20 iterations is 64 MiB."""
    return 3 * W2_NEWTON_SCHULZ_ITERATIONS + 4


def resolved_for(params: StyleParams, auto_means: Precision | str | None) -> StyleParams:
    """`params` with `precision=auto` replaced by what it means on the device (`auto_means`, as the
    workers report it); unchanged when the precision is explicit or the meaning is unknown."""
    if params.precision != Precision.auto or auto_means is None:
        return params
    return params.replace(precision=Precision(auto_means))


def fixed_bytes(params: StyleParams, arch: str = "vgg19") -> int:
    """Per-batch cost independent of the batch size: weights, Gram targets, workspaces."""
    channels = layer_channels(arch)
    grams = sum(channels[name] ** 2 * 4 for name in params.style_layers)
    return MODEL_BYTES + grams + WORKSPACE_BYTES


def auto_batch_size(free_bytes: int, params: StyleParams, arch: str = "vgg19", *, cap: int = GPU_CAP) -> int:
    """Largest batch whose estimate fits in `SAFETY` × free memory; at least 1, at most `cap`."""
    budget = free_bytes * SAFETY - fixed_bytes(params, arch)
    per_image = bytes_per_image(params, arch)
    return max(1, min(cap, math.floor(budget / per_image) if budget > 0 else 1))


def host_free_bytes() -> int:
    """Available host memory (Linux /proc/meminfo MemAvailable; falls back to 4 GiB elsewhere)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def device_free_bytes(device: str) -> int:
    """Free memory on the worker's device: CUDA's own count on a GPU, host memory on CPU."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return host_free_bytes()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
