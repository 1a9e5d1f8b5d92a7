"""Speed paths of the engine: precision scoping, fp32 Gram under bf16, no host syncs in the step loop, torch.compile."""

from __future__ import annotations

import contextlib
import inspect
import platform
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from nst_core.engine import ImageResult, StepReport, Stylizer
from nst_core.losses import ContentLoss, StyleLoss, gram
from nst_core.params import Init, OptimizerName, Precision, StyleParams
from nst_core.precision import conv_autocast, cuda_run_settings, flush_denormals
from nst_core.targets import Style
from nst_core.vgg import VGGFeatures

SMALL = StyleParams(size=32, steps=6, log_every=2, lr=0.05)
TORCH_DIR = str(Path(torch.__file__).resolve().parent)
SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy", "__repr__", "__format__")
"""Tensor methods that make the host wait for the device (or print, which does)."""


def _rand(seed: int, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def sync_detector() -> Iterator[tuple[list[str], Callable[[bool], None]]]:
    """Records every call of a syncing Tensor method made from code outside torch while switched on.

    torch's own calls are exempt: Adam's non-capturable `step` counter is a CPU tensor read with
    `.item()`, which never waits for a GPU. Yields (calls as "method at file:line", switch).
    """
    calls: list[str] = []
    state = {"on": False}
    saved = {name: torch.Tensor.__dict__.get(name) for name in SYNCING}

    def wrap(name: str) -> Callable[..., object]:
        original = getattr(torch.Tensor, name)

        def method(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            if state["on"]:
                caller = inspect.currentframe().f_back  # type: ignore[union-attr]
                path = str(Path(caller.f_code.co_filename).resolve())  # type: ignore[union-attr]
                if not path.startswith(TORCH_DIR):
                    calls.append(f"{name} at {path}:{caller.f_lineno}")  # type: ignore[union-attr]
            return original(self, *args, **kwargs)

        return method

    def switch(on: bool) -> None:
        state["on"] = on

    for name in SYNCING:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield calls, switch
    finally:
        for name, value in saved.items():
            if value is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, value)


def _run_watched(stylizer: Stylizer, params: StyleParams, *, extra: Callable[[], object] | None = None) -> list[str]:
    """Stylises two images with the detector on from the end of step 1 to the end of the last step.

    Steps 2…N run entirely inside that window (every kind of step: logged, not logged, early-stop
    checks), while setup before the loop and the host copies after it are outside.
    """
    with sync_detector() as (calls, switch):

        def callback(report: StepReport) -> None:
            if extra is not None:
                extra()
            switch(report.step < report.steps)

        stylizer.stylize([_rand(1), _rand(2)], Style((_rand(3),)), params, callback=callback)
    return calls


# ---------------------------------------------------------------- precision


def test_gram_and_losses_stay_fp32_under_bf16_autocast(vgg: VGGFeatures) -> None:
    x = _rand(10)[None]
    with conv_autocast(torch.device("cpu"), Precision.bf16):
        feats = vgg(x, ("relu1_1", "relu2_1"), "avg")
        f = feats["relu2_1"]
        g = gram(f)
        style = StyleLoss(torch.rand(1, 128, 128))(f)
        content = ContentLoss(torch.rand_like(f, dtype=torch.float32))(f)
    assert f.dtype == torch.bfloat16  # the convolution really ran in bf16 ...
    assert g.dtype == style.dtype == content.dtype == torch.float32  # ... its Gram and losses did not
    flat = f.float().flatten(2)
    torch.testing.assert_close(g, flat @ flat.transpose(1, 2), rtol=1e-6, atol=1e-6)
    with conv_autocast(torch.device("cpu"), Precision.fp32):
        assert vgg(x, ("relu1_1",), "avg")["relu1_1"].dtype == torch.float32


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_that_emulates_it_warns_once(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """Emulated bf16 was 27x slower than fp32 on an AVX2-only CPU: a user asking for it must hear so."""
    from nst_core import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(precision, "_warned_emulated_bf16", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            with conv_autocast(torch.device("cpu"), Precision.bf16):
                pass
        with conv_autocast(torch.device("cpu"), Precision.auto):  # auto is fp32 on CPU: nothing to warn
            pass
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if native:
        assert messages == []
    else:
        assert len(messages) == 1 and "emulated" in messages[0] and "fp32" in messages[0], messages


def test_cuda_run_settings_cover_the_run_and_are_restored() -> None:
    """The switches are process-wide flags, settable without a GPU; they must hold for forward and
    backward alike (the whole `with`) and come back exactly as they were."""
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"), (
        torch.backends.cudnn,
        "benchmark",
    )
    before = [getattr(o, a) for o, a in flags]
    try:
        for o, a in flags:
            setattr(o, a, True)  # PyTorch's cuDNN default is TF32 on: fp32 must switch it off
        with cuda_run_settings(torch.device("cuda"), Precision.fp32, autotune=True):
            assert [getattr(o, a) for o, a in flags] == [False, False, True]
        assert [getattr(o, a) for o, a in flags] == [True, True, True]
        for o, a in flags:
            setattr(o, a, False)
        with cuda_run_settings(torch.device("cuda"), "tf32", autotune=False):
            assert [getattr(o, a) for o, a in flags] == [True, True, False]
        with cuda_run_settings(torch.device("cpu"), "tf32", autotune=True):
            assert [getattr(o, a) for o, a in flags] == [False, False, False]  # CPU runs touch nothing
        assert [getattr(o, a) for o, a in flags] == [False, False, False]
    finally:
        for (o, a), v in zip(flags, before, strict=True):
            setattr(o, a, v)


def test_stylizer_defaults_are_device_dependent(vgg: VGGFeatures) -> None:
    s = Stylizer(vgg)
    assert (s.channels_last, s.autotune, s.step_function.is_compiled) == (False, False, False)
    assert Stylizer(vgg, autotune=True).autotune is True


# ---------------------------------------------------------------- host syncs


@pytest.mark.parametrize("optimizer", [OptimizerName.adam, OptimizerName.gd])
def test_step_loop_never_syncs_without_early_stop(stylizer: Stylizer, optimizer: OptimizerName) -> None:
    calls = _run_watched(stylizer, SMALL.replace(optimizer=optimizer, early_stop=0.0))
    assert calls == []


def test_step_loop_syncs_once_per_log_interval_with_early_stop(stylizer: Stylizer) -> None:
    params = SMALL.replace(steps=9, log_every=2, early_stop=1e-12)  # never fires: all 9 steps run
    calls = _run_watched(stylizer, params)
    # logged steps 0, 2, 4, 6, 8; the check runs from the second one on, and step 0 is before the window
    assert len(calls) == 4 and all(c.startswith("__bool__ at ") and "engine.py" in c for c in calls), calls


def test_sync_detector_sees_syncs_outside_torch(stylizer: Stylizer) -> None:
    """Control: a sync made by non-torch code inside the window is caught (so the tests above can fail)."""
    probe = torch.ones(2)
    calls = _run_watched(stylizer, SMALL.replace(steps=3), extra=lambda: float(probe.sum()))
    assert len(calls) == 2 and all(c.startswith("__float__ at ") for c in calls), calls


# ---------------------------------------------------------------- torch.compile


def _compare(a: list[ImageResult], b: list[ImageResult], tol: float) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        torch.testing.assert_close(ra.image, rb.image, rtol=tol, atol=tol)
        assert ra.curve.step == rb.curve.step
        torch.testing.assert_close(torch.tensor(ra.curve.total), torch.tensor(rb.curve.total), rtol=tol, atol=0)
        assert ra.steps_run == rb.steps_run


def _pair_run(stylizer: Stylizer, params: StyleParams) -> list[ImageResult]:
    return stylizer.stylize([_rand(20), _rand(21)], [Style((_rand(22),)), Style((_rand(23),))], params)


def test_compiled_step_matches_eager(stylizer: Stylizer, vgg: VGGFeatures) -> None:
    """Dynamo capture and AOTAutograd's forward/backward split on CPU. aot_eager runs the captured graphs
    with eager kernels, so this checks the plumbing, not inductor's code generation (see next test)."""
    params = SMALL.replace(steps=3, log_every=1, early_stop=1e-12)
    eager = _pair_run(stylizer, params)
    compiled = Stylizer(vgg, compile=True, compile_backend="aot_eager")
    out = _pair_run(compiled, params)
    assert compiled.step_function.is_compiled and compiled.step_function.error is None
    _compare(eager, out, 1e-5)
    # A second batch (new targets, new objective module) reuses the compiled graph and still matches.
    graphs = counters["stats"]["unique_graphs"]
    again = _pair_run(compiled, params.replace(init=Init.noise))
    assert counters["stats"]["unique_graphs"] == graphs
    _compare(_pair_run(stylizer, params.replace(init=Init.noise)), again, 1e-5)


@pytest.mark.slow  # inductor's C++ build takes ~40 s on 2 cores; it is what `--compile` runs, so CI pays it
def test_inductor_step_matches_eager(stylizer: Stylizer, vgg: VGGFeatures) -> None:
    params = SMALL.replace(steps=3, log_every=1)
    eager = _pair_run(stylizer, params)
    compiled = Stylizer(vgg, compile=True)
    out = _pair_run(compiled, params)
    assert compiled.step_function.is_compiled
    _compare(eager, out, 1e-4)  # inductor fuses and reorders fp32 sums


def test_failed_compile_warns_and_runs_eagerly(stylizer: Stylizer, vgg: VGGFeatures) -> None:
    def broken_backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable[..., object]:
        raise RuntimeError("no compiler on this machine")

    params = SMALL.replace(steps=3)
    compiled = Stylizer(vgg, compile=True, compile_backend=broken_backend)
    with pytest.warns(RuntimeWarning, match=r"torch.compile of the style-transfer step failed .*no compiler"):
        out = _pair_run(compiled, params)
    assert not compiled.step_function.is_compiled
    assert "no compiler on this machine" in (compiled.step_function.error or "")
    _compare(_pair_run(stylizer, params), out, 0.0)  # the fallback is the eager path itself: bit-identical



# ---------------------------------------------------------------- denormals


def _flushed_share(x: torch.Tensor) -> float:
    """Share of a subnormal tensor that one elementwise op (split over the intra-op threads) flushes to 0."""
    return float(((x * 1.0 + 0.0) == 0).float().mean())


def test_flush_denormals_holds_for_every_intra_op_thread_and_is_restored() -> None:
    """torch.set_flush_denormal alone flushes the calling thread only: half of a 2-thread op's outputs
    stayed subnormal, and pool threads created meanwhile kept flushing after the run."""
    threads = torch.get_num_threads()
    x = torch.full((1 << 20,), 1e-39)
    try:
        torch.set_num_threads(2)
        assert _flushed_share(x) == 0.0
        with flush_denormals(torch.device("cpu")) as on:
            if not on:
                assert not (sys.platform == "linux" and platform.machine() == "x86_64")
                pytest.skip("denormal flushing is only implemented for Linux x86-64")
            assert _flushed_share(x) == 1.0
            torch.set_num_threads(3)  # a pool thread created during the run inherits the flag
            assert _flushed_share(x) == 1.0
        assert _flushed_share(x) == 0.0  # every thread, the new one included, is back to its setting
        torch.set_num_threads(2)
        assert _flushed_share(x) == 0.0
    finally:
        torch.set_num_threads(threads)
