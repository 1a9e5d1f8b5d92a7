"""Arithmetic settings (fp32 / tf32 / bf16 autocast) for the convolutions; used by targets and engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from nst_core.params import Precision


@contextlib.contextmanager
def conv_precision(device: torch.device, precision: Precision | str) -> Iterator[None]:
    """Run the VGG forward pass in the requested precision; losses and Gram matrices stay fp32 regardless.

    tf32 only exists on CUDA (on CPU it is plain fp32). The CUDA tf32 switches are process-wide, so they
    are restored on exit. bf16 uses autocast on CUDA devices that support it and on CPU.
    """
    precision = Precision(precision)
    if precision is Precision.bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision bf16 is not supported on {torch.cuda.get_device_name(device)}")
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"precision bf16 is only available on cuda and cpu, not {device.type}")
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    if device.type != "cuda":
        yield
        return
    allow = precision is Precision.tf32
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while optimising.

    Style-loss gradients through a deep network are often subnormal (< 1.2e-38), which x86 CPUs process
    up to ~100× slower; flushing them changes results by less than 1e-38. The flag is per thread and
    has no getter, so it is switched back to PyTorch's default (off) afterwards.
    """
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
