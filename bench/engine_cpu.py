"""CPU benchmark of the engine against the PyTorch tutorial loop: seconds per image-iteration.

Run: .venv/bin/python -m bench.engine_cpu [--sizes 128,256] [--steps 4] [--batches 1,4] [--quick]
Both sides use the same loss (Gatys 2016: ½Σ(F−P)² on relu4_2, paper-normalised Gram loss on
relu1_1…relu5_1, avg pooling, α=1, β=1e6) and random:0 weights. The reference is the PyTorch tutorial's
loop as published: one image, eager, frozen weights (`requires_grad_(False)`), the network cut after the
deepest loss layer, `loss.item()` every step. A second reference row keeps the old, weaker baseline
(weight gradients on, all 37 modules) for comparison with earlier figures. neural-style-pt and pystiche
rows appear when those packages are installed (`bench/peers.py`); they keep their own max pooling and
in-place ReLUs, so an engine row with `pooling=max` is their like-for-like. The machine may be shared:
compare ratios within one run, not seconds across runs.
Steady state: the time between the first and the last completed iteration (setup such as style targets
and content features excluded on both sides), after one warm-up run per configuration.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.peers import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    frozen_convs,
    neural_style_pt_seconds,
    pystiche_seconds,
)
from nst_core.engine import Stylizer
from nst_core.layers import LAYER_NAMES
from nst_core.losses import content_loss, gram
from nst_core.params import Pooling, Precision, StyleParams
from nst_core.precision import flush_denormals
from nst_core.targets import Style
from nst_core.vgg import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures, load_vgg


def reference_seconds(
    vgg: VGGFeatures,
    content: torch.Tensor,
    style: torch.Tensor,
    steps: int,
    *,
    frozen: bool = True,
    truncated: bool = True,
) -> float:
    """The tutorial loop: frozen, truncated copy of the feature stack, one image, .item() per step.

    frozen=False, truncated=False is the old baseline (weight gradients, all 37 modules)."""
    names = LAYER_NAMES["vgg19"]
    convs = iter(frozen_convs(vgg))  # requires_grad is set for the whole net below
    layers: list[nn.Module] = []
    for module in vgg.features:
        if isinstance(module, nn.MaxPool2d):
            layers.append(nn.AvgPool2d(2, 2))  # same pooling as the engine's default
        elif isinstance(module, nn.ReLU):
            layers.append(nn.ReLU(inplace=False))
        else:
            layers.append(next(convs))
    deepest = max(names.index(n) for n in (*STYLE_LAYERS, CONTENT_LAYER))
    if truncated:
        layers, names = layers[: deepest + 1], names[: deepest + 1]
    net = nn.Sequential(*layers)
    net.requires_grad_(not frozen)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, h = {}, (x - mean) / std
        for name, layer in zip(names, net, strict=True):
            h = layer(h)
            out[name] = h
        return out

    with torch.no_grad():
        p = features(content)[CONTENT_LAYER]
        sf = features(style)
        targets = {n: gram(sf[n])[0] / (sf[n].shape[2] * sf[n].shape[3]) for n in STYLE_LAYERS}
    x = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.02)
    stamps = []
    for _ in range(steps):
        opt.zero_grad()
        f = features(x)
        lc = content_loss(f[CONTENT_LAYER], p).sum()
        ls = torch.zeros(())
        for n in STYLE_LAYERS:
            g = gram(f[n])[0] / (f[n].shape[2] * f[n].shape[3])
            ls = ls + 0.2 * ((g - targets[n]) / (2 * f[n].shape[1])).square().sum()
        loss = lc + 1e6 * ls
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        loss.item()  # per-step host sync, as tutorials print it
        stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / (steps - 1)


def engine_seconds(
    vgg: VGGFeatures,
    contents: list[torch.Tensor],
    style: torch.Tensor,
    steps: int,
    size: int,
    precision: Precision,
    channels_last: bool,
    pooling: Pooling = Pooling.avg,
) -> float:
    stylizer = Stylizer(vgg, channels_last=channels_last)
    params = StyleParams(size=size, steps=steps, precision=precision, pooling=pooling, log_every=max(1, steps))
    stylizer.stylize(contents, Style((style,)), params.replace(steps=1))  # warm-up
    stamps: list[float] = []
    stylizer.stylize(
        contents, Style((style,)), params, callback=lambda report: stamps.append(time.perf_counter())
    )
    return (stamps[-1] - stamps[0]) / (steps - 1)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def size_rows(
    vgg: VGGFeatures, size: int, steps: int, batches: list[int], repeats: int, precisions: list[Precision]
) -> list[tuple]:
    """Every configuration timed `repeats` times, interleaved, keeping the fastest: on a shared machine
    the minimum is the least disturbed figure."""
    gen = torch.Generator().manual_seed(0)
    contents = [torch.rand(3, size, size, generator=gen) for _ in range(max(batches))]
    style = torch.rand(3, size, size, generator=gen)
    one, s1 = contents[0][None], style[None]

    def flushed_reference() -> float:
        with flush_denormals(torch.device("cpu")):  # the engine's denormal flushing, on its own
            return reference_seconds(vgg, one, s1, steps)

    configs: list[tuple[tuple, Callable[[], float | None]]] = [
        (("reference (tutorial loop)", 1, "fp32", "no"), lambda: reference_seconds(vgg, one, s1, steps)),
        (("reference + denormals flushed", 1, "fp32", "no"), flushed_reference),
        (
            ("old baseline (weight grads, 37 modules)", 1, "fp32", "no"),
            lambda: reference_seconds(vgg, one, s1, steps, frozen=False, truncated=False),
        ),
        (("neural-style-pt 0.5.7 (its modules)", 1, "fp32", "no"), lambda: neural_style_pt_seconds(vgg, one, s1, steps)),
        (("pystiche 1.0.1 (its loss and loop)", 1, "fp32", "no"), lambda: pystiche_seconds(vgg, one, s1, steps)),
        (
            ("engine, max pooling as the peers", 1, "fp32", "no"),
            lambda: engine_seconds(vgg, contents[:1], style, steps, size, Precision.fp32, False, Pooling.max),
        ),
    ]
    for batch in batches:
        for precision, cl in ((Precision.fp32, False), (Precision.fp32, True), (Precision.bf16, False)):
            if precision not in precisions:
                continue
            configs.append(
                (
                    ("engine", batch, precision.value, "yes" if cl else "no"),
                    lambda b=batch, p=precision, c=cl: engine_seconds(vgg, contents[:b], style, steps, size, p, c) / b,
                )
            )
    reference_seconds(vgg, one, s1, 2)  # warm-up
    best: dict[int, float] = {}
    for _ in range(repeats):
        for i, (_, measure) in enumerate(configs):
            seconds = measure()
            if seconds is not None:
                best[i] = min(seconds, best.get(i, float("inf")))
    return [(*label, best[i]) for i, (label, _) in enumerate(configs) if i in best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256", help="comma-separated long sides in px")
    ap.add_argument("--steps", type=int, default=4, help="timed iterations per configuration")
    ap.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    ap.add_argument(
        "--precisions", default="fp32,bf16", help="engine rows to time (bf16 is ~25x slower where it is emulated)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timings per configuration; the fastest is kept")
    ap.add_argument("--quick", action="store_true", help="64 px, 3 steps, 1 repeat: a smoke run")
    args = ap.parse_args()
    sizes, steps = ([64], 3) if args.quick else ([int(s) for s in args.sizes.split(",")], args.steps)
    repeats = 1 if args.quick else args.repeats
    if steps < 2:
        raise SystemExit("--steps must be >= 2 (time is measured between iterations)")
    batches = [int(b) for b in args.batches.split(",")]
    precisions = [Precision(p) for p in args.precisions.split(",")]
    vgg = load_vgg("vgg19", "random:0")
    print(
        f"CPU: {cpu_model()}  threads: {torch.get_num_threads()}  torch {torch.__version__}  "
        f"sizes {sizes} px, {steps} steps, fastest of {repeats}"
    )
    print()
    print("| size | run | batch | convs | channels_last | s / image-iteration | speed-up vs reference |")
    print("|---:|---|---:|---|---|---:|---:|")
    for size in sizes:
        rows = size_rows(vgg, size, steps, batches, repeats, precisions)
        ref = rows[0][4]
        for name, batch, prec, cl, sec in rows:
            print(f"| {size} | {name} | {batch} | {prec} | {cl} | {sec:.3f} | {ref / sec:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
