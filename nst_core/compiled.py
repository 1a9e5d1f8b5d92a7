"""The engine's per-step loss-and-gradient, eager or through torch.compile with an eager fallback; used by engine.Stylizer."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

Backend = str | Callable[..., object]


def _call(objective: nn.Module, x: Tensor) -> Tensor:
    terms: Tensor = objective(x)
    return terms


def _loss_and_grad(fn: Callable[[nn.Module, Tensor], Tensor], objective: nn.Module, x: Tensor) -> Tensor:
    """[B, len(losses.LOSS_TERMS)] loss terms of objective(x), detached; x.grad becomes the gradient of their
    column 0 (the total) summed.

    Summing over the batch gives every image exactly its own gradient (the losses are per image).
    """
    x.grad = None
    terms = fn(objective, x)
    terms[:, 0].sum().backward()
    return terms.detach()


def _describe(exc: BaseException) -> str:
    """`Type: message` on one line, with the root cause (dynamo wraps a backend's error in its own)."""

    def line(e: BaseException) -> str:
        return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]

    root = exc
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = inner
    return line(exc) if root is exc or str(root) in str(exc) else f"{line(exc)} (caused by {line(root)})"


class StepFunction:
    """Computes one step's losses and pixel gradient; compiled when asked, eager otherwise.

    torch.compile is lazy: the forward graph is compiled on the first call and its backward (through
    AOTAutograd) on the first `backward()`, and a new shape may trigger a recompile at any later call.
    Every compiled call is therefore guarded: if it raises, the failure is reported once as a
    RuntimeWarning, this StepFunction switches to eager for good, and the step is recomputed eagerly
    (from scratch: x.grad is reset and x itself is never modified here), so results do not depend on
    whether compiling worked. A genuine error (bad input, out of memory) raises again from the eager
    run; out-of-memory errors are re-raised at once so the caller can split its batch.
    """

    def __init__(self, *, compile: bool = False, backend: Backend = "inductor", mode: str | None = None) -> None:
        self.compiled: Callable[[nn.Module, Tensor], Tensor] | None = None
        self.error: str | None = None
        """Why compiling was abandoned (`Type: message`), or None."""
        if compile:
            if not hasattr(torch, "compile"):  # pragma: no cover - every supported torch has it
                self.error = "torch.compile is not available in this torch build"
            else:
                self.compiled = torch.compile(_call, backend=backend, mode=mode)

    @property
    def is_compiled(self) -> bool:
        """True while steps run through torch.compile (False when off or after a fallback)."""
        return self.compiled is not None and self.error is None

    def __call__(self, objective: nn.Module, x: Tensor) -> Tensor:
        if self.compiled is not None and self.error is None:
            try:
                return _loss_and_grad(self.compiled, objective, x)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # dynamo/inductor raise many unrelated types; all mean "not compiled"
                self.error = _describe(exc)
                warnings.warn(
                    f"torch.compile of the style-transfer step failed ({self.error}); continuing eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return _loss_and_grad(_call, objective, x)


__all__ = ["Backend", "StepFunction"]
