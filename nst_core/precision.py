"""Arithmetic settings (fp32 / tf32 / bf16 autocast) for the convolutions; used by targets and engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from nst_core.params import Precision


def _check_bf16(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16 is not supported on {torch.cuda.get_device_name(device)}")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision bf16 is only available on cuda and cpu, not {device.type}")


def conv_autocast(device: torch.device, precision: Precision | str) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast for the convolutions, or nothing; touches no process-wide switch.

    This is the part of `conv_precision` that may sit inside a `torch.compile`d function: the tf32
    switches are set once per run by `cuda_run_settings` instead.
    """
    if Precision(precision) is Precision.bf16:
        _check_bf16(device)
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _tf32_switches(allow: bool, benchmark: bool | None = None) -> Iterator[None]:
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    try:
        yield
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark,
        ) = saved


@contextlib.contextmanager
def conv_precision(device: torch.device, precision: Precision | str) -> Iterator[None]:
    """Run the VGG forward pass in the requested precision; losses and Gram matrices stay fp32 regardless.

    tf32 only exists on CUDA (on CPU it is plain fp32). The CUDA tf32 switches are process-wide, so they
    are restored on exit. bf16 uses autocast on CUDA devices that support it and on CPU. Covers a
    forward pass only (used for targets); an optimisation also needs `cuda_run_settings`, because
    autograd launches the backward convolutions after this context has exited.
    """
    precision = Precision(precision)
    if precision is Precision.bf16:
        with conv_autocast(device, precision):
            yield
        return
    if device.type != "cuda":
        yield
        return
    with _tf32_switches(precision is Precision.tf32):
        yield


@contextlib.contextmanager
def cuda_run_settings(device: torch.device, precision: Precision | str, *, autotune: bool) -> Iterator[None]:
    """Process-wide CUDA math switches for a whole optimisation: forward AND backward passes.

    TF32 is allowed only for precision tf32. PyTorch's own default allows TF32 in cuDNN convolutions, so
    without this an fp32 run's backward convolutions (launched by autograd outside any forward-only
    context) would silently run in TF32 on Ampere and newer GPUs. In bf16 the remaining fp32 work is
    the Gram matrices and losses, which stay full fp32. `autotune` turns on cuDNN's algorithm search
    (`cudnn.benchmark`): the shapes repeat for hundreds of steps, so the one-off search pays off. All
    switches are restored on exit; no effect off CUDA.
    """
    precision = Precision(precision)
    if device.type != "cuda":
        yield
        return
    if precision is Precision.bf16:
        _check_bf16(device)
    with _tf32_switches(precision is Precision.tf32, True if autotune else None):
        yield


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
