"""The peers' own loss modules and loops, fed the engine's weights, for `bench/engine_cpu.py`.

neural-style-pt (PyPI `neural-style`, 0.5.7) and pystiche (1.0.1) are optional: each adapter returns None
when its package is missing. Both get the same frozen VGG19 weights, images and Adam (lr 0.02) as the
engine and the tutorial reference, and keep their own architecture choices (max pooling, their losses'
normalisation): the bench compares the cost of a step, not their results. Steady state is the difference
between a run of `steps + 1` and one of 1 step, divided by `steps`, so setup (targets, content features)
is excluded as it is for the engine.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from nst_core.layers import LAYER_NAMES
from nst_core.vgg import VGGFeatures

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"
"""The loss layers of every row of `bench/engine_cpu.py`: the paper's."""


def _steady(run: Callable[[int], None], steps: int) -> float:
    start = time.perf_counter()
    run(1)
    one = time.perf_counter() - start
    start = time.perf_counter()
    run(steps + 1)
    return (time.perf_counter() - start - one) / steps


def frozen_convs(vgg: VGGFeatures) -> list[nn.Conv2d]:
    """Copies of the engine's convolutions, so a peer's net never shares (or trains) the engine's."""
    convs = []
    for module in vgg.features:
        if isinstance(module, nn.Conv2d):
            conv = nn.Conv2d(module.in_channels, module.out_channels, 3, padding=1)
            conv.load_state_dict(module.state_dict())
            conv.requires_grad_(False)
            convs.append(conv)
    return convs


def neural_style_pt_seconds(vgg: VGGFeatures, content: torch.Tensor, style: torch.Tensor, steps: int) -> float | None:
    """neural-style-pt's net: VGG layers up to the deepest loss, its ContentLoss / StyleLoss modules
    inserted after their ReLUs (capture, then loss mode), its `feval` closure under Adam."""
    argv, sys.argv = sys.argv, sys.argv[:1]  # the module parses the command line when imported
    try:
        ns = importlib.import_module("neural_style.neural_style")
    except ImportError:
        return None
    finally:
        sys.argv = argv
    names = LAYER_NAMES["vgg19"]
    deepest = max(names.index(n) for n in (*STYLE_LAYERS, CONTENT_LAYER))
    convs = iter(frozen_convs(vgg))
    layers: list[nn.Module] = []
    content_losses, style_losses = [], []
    for name in names[: deepest + 1]:
        if name.startswith("conv"):
            layers.append(next(convs))
        elif name.startswith("relu"):
            layers.append(nn.ReLU(inplace=True))
        else:
            layers.append(nn.MaxPool2d(2, 2))
        if name == CONTENT_LAYER:
            content_losses.append(ns.ContentLoss(5.0))
            layers.append(content_losses[-1])
        if name in STYLE_LAYERS:
            style_losses.append(ns.StyleLoss(100.0))
            layers.append(style_losses[-1])
    net = nn.Sequential(*layers)
    for module in content_losses:
        module.mode = "capture"
    net(content.clone())
    for module in content_losses:
        module.mode = "None"
    for module in style_losses:
        module.mode = "capture"
    net(style.clone())
    for module in (*content_losses, *style_losses):
        module.mode = "loss"

    def run(n: int) -> None:
        img = content.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([img], lr=0.02)

        def feval() -> torch.Tensor:
            optimizer.zero_grad()
            net(img)
            loss = sum(m.loss for m in (*content_losses, *style_losses))
            loss.backward()
            return loss

        for _ in range(n):
            optimizer.step(feval)

    return _steady(run, steps)


def _pystiche_shim() -> None:
    """pystiche 1.0.1 reads `model_urls` from torchvision modules that dropped it in 0.13."""
    urls = {"alexnet": ["alexnet"], "vgg": [f"vgg{n}{bn}" for n in (11, 13, 16, 19) for bn in ("", "_bn")]}
    for name, keys in urls.items():
        module = importlib.import_module(f"torchvision.models.{name}")
        if not hasattr(module, "model_urls"):
            module.model_urls = {k: "" for k in keys}


def pystiche_seconds(vgg: VGGFeatures, content: torch.Tensor, style: torch.Tensor, steps: int) -> float | None:
    """pystiche's PerceptualLoss (FeatureReconstructionLoss + GramLoss per layer) and its
    `image_optimization` loop, on its VGG19 multi-layer encoder loaded with the engine's weights."""
    try:
        _pystiche_shim()
        from pystiche import enc, loss, optim
    except ImportError:
        return None
    mle = enc.vgg19_multi_layer_encoder(pretrained=False, internal_preprocessing=False)
    theirs = [m for m in mle.modules() if isinstance(m, nn.Conv2d)]
    for dst, src in zip(theirs, frozen_convs(vgg), strict=True):
        dst.load_state_dict(src.state_dict())
    mle.requires_grad_(False)
    criterion = loss.PerceptualLoss(
        loss.FeatureReconstructionLoss(mle.extract_encoder(CONTENT_LAYER)),
        loss.MultiLayerEncodingLoss(
            mle, STYLE_LAYERS, lambda encoder, weight: loss.GramLoss(encoder, score_weight=weight),
            score_weight=1e3,
        ),
    )
    criterion.set_content_image(content)
    criterion.set_style_image(style)

    def run(n: int) -> None:
        image = content.clone()
        optim.image_optimization(
            image, criterion, optimizer=lambda img: torch.optim.Adam([img.requires_grad_(True)], lr=0.02), num_steps=n, quiet=True
        )

    return _steady(run, steps)
