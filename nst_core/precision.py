"""Arithmetic settings (auto / fp32 / tf32 / bf16 autocast) for the convolutions and CPU denormal flushing; used by targets and engine."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

import torch

from nst_core.params import Precision


def resolve_precision(precision: Precision | str, device: torch.device) -> Precision:
    """The arithmetic `precision` means on `device`: `auto` is bf16 on CUDA devices with bf16 support
    (Ampere and newer), fp32 everywhere else. On CPU fp32 is kept although bf16 is 2x faster on CPUs with
    native bf16 (docs/performance.md): where bf16 is emulated it is 25x slower, and bf16 moves the final
    loss by 0.1-1 %, which matters more than speed for the tests and small jobs CPUs run."""
    precision = Precision(precision)
    if precision is not Precision.auto:
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision.bf16
    return Precision.fp32


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 instructions here (avx512_bf16 or AMX); elsewhere it emulates them."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


_warned_emulated_bf16 = False


def _check_bf16(device: torch.device) -> None:
    global _warned_emulated_bf16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16 is not supported on {torch.cuda.get_device_name(device)}")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision bf16 is only available on cuda and cpu, not {device.type}")
    if device.type == "cpu" and not _warned_emulated_bf16 and not cpu_has_native_bf16():
        # Measured on an AVX2-only EPYC: 6.8 s per 128 px iteration against 0.25 s in fp32 (27x slower).
        _warned_emulated_bf16 = True
        warnings.warn(
            f"precision bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no native bf16) is "
            "emulated and about 25x slower than fp32; use precision fp32 or auto (docs/performance.md)",
            RuntimeWarning,
            stacklevel=3,
        )


def conv_autocast(device: torch.device, precision: Precision | str) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast for the convolutions, or nothing; touches no process-wide switch.

    This is the part of `conv_precision` that may sit inside a `torch.compile`d function: the tf32
    switches are set once per run by `cuda_run_settings` instead.
    """
    if resolve_precision(precision, device) is Precision.bf16:
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
    precision = resolve_precision(precision, device)
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
    precision = resolve_precision(precision, device)
    if device.type != "cuda":
        yield
        return
    if precision is Precision.bf16:
        _check_bf16(device)
    with _tf32_switches(precision is Precision.tf32, True if autotune else None):
        yield


_FTZ_DAZ = 0x8040
"""MXCSR bits: flush-to-zero (results) and denormals-are-zero (inputs)."""


class _FEnv(ctypes.Structure):
    """glibc's x86-64 `fenv_t`: the x87 environment, then MXCSR (the SSE control and status register)."""

    _fields_ = [("x87", ctypes.c_ubyte * 28), ("mxcsr", ctypes.c_uint32)]
    mxcsr: int  # ctypes reads a c_uint32 field as a Python int


class _PoolFlusher:
    """Sets the denormal bits of MXCSR in every thread of the OpenMP pool that runs torch's CPU kernels.

    `torch.set_flush_denormal` changes the calling thread only, so with N intra-op threads the chunks of
    an op computed by the other N−1 keep their denormals (measured: half of a 2-thread op's outputs), and
    a pool thread created while it is on inherits the flag and keeps it afterwards. OpenMP keeps one pool
    per calling thread, so a `GOMP_parallel` region of torch's thread count, started from the thread that
    runs the optimisation, visits the very threads its kernels use; each sets its own MXCSR through
    `fegetenv`/`fesetenv`. Linux x86-64 with torch's libgomp (or an OpenMP runtime exporting the GOMP
    entry points) only; elsewhere `get` returns None.
    """

    _instance: _PoolFlusher | None = None
    _probed = False

    def __init__(self, gomp: ctypes.CDLL, libm: ctypes.CDLL) -> None:
        self._callback_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        gomp.GOMP_parallel.argtypes = [self._callback_type, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        gomp.GOMP_parallel.restype = None
        self._gomp = gomp
        self._libm = libm

    @classmethod
    def get(cls) -> _PoolFlusher | None:
        if not cls._probed:
            cls._probed = True
            cls._instance = cls._load()
        return cls._instance

    @classmethod
    def _load(cls) -> _PoolFlusher | None:
        if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
            return None
        try:
            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if line.rstrip().endswith((".so.1", ".so"))}
            gomp_path = next(
                (p for p in sorted(paths) if os.path.basename(p).startswith(("libgomp", "libomp", "libiomp5"))),
                None,
            )
            libm_name = ctypes.util.find_library("m")
            if gomp_path is None or libm_name is None:
                return None
            gomp, libm = ctypes.CDLL(gomp_path), ctypes.CDLL(libm_name)
            if not hasattr(gomp, "GOMP_parallel"):
                return None
            return cls(gomp, libm)
        except OSError:
            return None

    def _each_thread(self, action: Callable[[int, _FEnv], int | None]) -> None:
        """Runs action(thread id, its fenv) in every pool thread; a returned MXCSR value is written back."""

        def body(_: object) -> None:
            env = _FEnv()
            self._libm.fegetenv(ctypes.byref(env))
            new = action(threading.get_ident(), env)
            if new is not None and new != env.mxcsr:
                env.mxcsr = new
                self._libm.fesetenv(ctypes.byref(env))

        callback = self._callback_type(body)
        self._gomp.GOMP_parallel(callback, None, torch.get_num_threads(), 0)

    def enable(self) -> dict[int, int]:
        """Turns flushing on in every pool thread; returns each thread's previous denormal bits."""
        saved: dict[int, int] = {}

        def on(ident: int, env: _FEnv) -> int:
            saved[ident] = env.mxcsr & _FTZ_DAZ
            return env.mxcsr | _FTZ_DAZ

        self._each_thread(on)
        return saved

    def restore(self, saved: dict[int, int]) -> None:
        """Puts the bits back; a thread created meanwhile gets what the calling thread had."""
        default = saved.get(threading.get_ident(), 0)

        def back(ident: int, env: _FEnv) -> int:
            return (env.mxcsr & ~_FTZ_DAZ) | saved.get(ident, default)

        self._each_thread(back)


@contextlib.contextmanager
def flush_denormals(device: torch.device) -> Iterator[bool]:
    """Treat subnormal floats as zero on the CPU while optimising; yields whether flushing is on.

    Style-loss gradients through a deep network are often subnormal (< 1.2e-38), which x86 CPUs process
    many times slower (figures in docs/performance.md); flushing them changes results by less than 1e-38.
    The flag is per thread, so it is set in every intra-op thread (`_PoolFlusher`) and each thread's
    previous setting is restored on exit. Where the pool cannot be reached, a single-threaded torch is
    flushed through `torch.set_flush_denormal` (then the calling thread is the only one), and otherwise
    nothing is changed: flushing some threads only would make results depend on the thread count.
    """
    if device.type != "cpu":
        yield False
        return
    flusher = _PoolFlusher.get()
    if flusher is not None:
        saved = flusher.enable()
        try:
            yield True
        finally:
            flusher.restore(saved)
        return
    if torch.get_num_threads() == 1 and torch.set_flush_denormal(True):
        try:
            yield True
        finally:
            torch.set_flush_denormal(False)
        return
    yield False
