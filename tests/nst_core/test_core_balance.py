"""style_ratio: β from the step-0 gradient norms holds the style/content balance whatever the feature scale."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from nst_core.engine import Stylizer
from nst_core.losses import content_loss, style_loss
from nst_core.params import Init, OptimizerName, StyleParams
from nst_core.targets import Style, compute_style_targets
from nst_core.vgg import VGGFeatures

SIZE = 24
RATIO = 0.5
BASE = StyleParams(size=SIZE, steps=3, log_every=2, init=Init.noise, seed=7, style_ratio=RATIO)


def _rand(seed: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _scaled(vgg: VGGFeatures, factor: float) -> VGGFeatures:
    """A copy whose every feature is `factor` times the original's.

    The first convolution's weights and bias are scaled, and every later bias too: a later convolution
    sees factor·f, so W(factor·f) + factor·b = factor·(Wf + b); ReLU and pooling are positively homogeneous.
    """
    out = copy.deepcopy(vgg)
    convs = [m for m in out.features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        convs[0].weight.mul_(factor)
        for conv in convs:
            assert conv.bias is not None
            conv.bias.mul_(factor)
    return out


def test_balance_holds_when_every_feature_is_scaled_by_ten(vgg: VGGFeatures) -> None:
    scaled = _scaled(vgg, 10.0)
    layers = (*BASE.style_layers, *BASE.content_layers)
    probe = _rand(3, SIZE, SIZE).unsqueeze(0)
    plain_feats, scaled_feats = vgg(probe, layers), scaled(probe, layers)
    for name in layers:
        torch.testing.assert_close(scaled_feats[name], 10 * plain_feats[name], rtol=1e-4, atol=1e-5)

    content, style = _rand(1, SIZE, SIZE), Style((_rand(2, SIZE, SIZE),))
    a, b = Stylizer(vgg), Stylizer(scaled)
    adam = BASE.replace(lr=0.05)
    ra, rb = a.stylize([content], style, adam)[0], b.stylize([content], style, adam)[0]
    # L_content ∝ F² and the paper's Gram error ∝ F⁴ (targets from the same network), and so are their
    # gradients with respect to the pixels: β must shrink by 10² for the same balance.
    assert math.isclose(rb.style_weights[0] / ra.style_weights[0], 1e-2, rel_tol=1e-4)
    # The whole objective is then 10² larger, to which Adam's update is blind, up to pixels whose gradient
    # is near 0, where rounding flips the sign of a ±lr step (as in test_core_engine's batch test).
    assert (rb.image - ra.image).abs().mean() < 1e-3
    # Gradient descent sees the 10² in its step: with lr / 10² it follows the same path.
    gd = BASE.replace(optimizer=OptimizerName.gd, lr=1.0)
    ga = a.stylize([content], style, gd)[0]
    gb = b.stylize([content], style, gd.replace(lr=1e-2))[0]
    torch.testing.assert_close(gb.image, ga.image, atol=1e-4, rtol=0)
    start = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(gd.seed))
    assert (ga.image - start).abs().max() > 1e-2  # the steps moved the pixels

    # A fixed β does not carry over: the scaled network weighs style 10² more.
    fixed = gd.replace(style_ratio=None, style_weight=ga.style_weights[0])
    fb = b.stylize([content], style, fixed.replace(lr=1e-2))[0]
    assert (fb.image - ga.image).abs().max() > 0.1


def test_step_zero_gradient_ratio_equals_style_ratio(vgg: VGGFeatures) -> None:
    content, style_image = _rand(1, SIZE, SIZE), _rand(2, SIZE, SIZE)
    params = BASE.replace(steps=1, content_weight=2.0)
    result = Stylizer(vgg).stylize([content], Style((style_image,)), params)[0]
    (beta,) = result.style_weights

    # Independently: the noise start, the library's loss functions, autograd.
    x = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(params.seed))
    x = x.unsqueeze(0).requires_grad_(True)
    with torch.no_grad():
        target = vgg(content.unsqueeze(0), params.content_layers)["relu4_2"]
    targets = compute_style_targets(vgg, Style((style_image,)), content_long_side=SIZE, params=params)
    feats = vgg(x, (*params.style_layers, *params.content_layers))
    lc = params.content_weight * content_loss(feats["relu4_2"], target).sum()
    ls = style_loss(
        feats, targets.grams, target_positions=dict.fromkeys(targets.grams, 1)
    ).sum()  # Â = A / M_style is stored, so M = 1 here
    (gc,) = torch.autograd.grad(lc, x, retain_graph=True)
    (gs,) = torch.autograd.grad(ls, x)
    measured = beta * gs.norm().item() / gc.norm().item()
    assert math.isclose(measured, RATIO, rel_tol=1e-4), measured
    assert math.isclose(result.curve.style[0] / (beta * ls.item()), 1.0, rel_tol=1e-4)

    # The reference is the noise point whatever the start: init=content (content gradient exactly 0
    # there) gets the same, finite β.
    from_content = Stylizer(vgg).stylize([content], Style((style_image,)), params.replace(init=Init.content))[0]
    assert from_content.style_weights == result.style_weights
    # Off: the configured weights are reported.
    plain = Stylizer(vgg).stylize([content], Style((style_image,)), params.replace(style_ratio=None))[0]
    assert plain.style_weights == (1e6,)


def test_batched_rows_get_their_own_beta(rows_are_independent: Callable[..., Any]) -> None:
    contents = [_rand(1, 24, 32), _rand(2, 24, 32)]
    styles = [Style((_rand(10, SIZE, SIZE),)), Style((_rand(11, SIZE, SIZE),))]
    params = BASE.replace(schedule=((24, 1), (32, 1)))
    # The same batch shape with the other row replaced: row 0's image and β stay the same bit for bit.
    batched, others = rows_are_independent(
        (contents, styles), ([_rand(4, 24, 32)], [Style((_rand(13, SIZE, SIZE),))]), params
    )
    assert len(batched[0].style_weights) == 2  # recomputed for each coarse-to-fine stage
    assert batched[0].style_weights != batched[1].style_weights != others[1].style_weights


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"style_ratio": 0.0}, "style_ratio must be > 0"),
        ({"style_ratio": -1.0}, "style_ratio must be > 0"),
        ({"style_ratio": math.nan}, "style_ratio must be a finite number"),
        ({"style_ratio": math.inf}, "style_ratio must be a finite number"),
        ({"style_ratio": 1.0, "content_ratio": 0.9}, "set only one of them"),
        ({"style_ratio": 1.0, "content_weight": 0.0}, "needs content_weight > 0"),
    ],
)
def test_invalid_style_ratio_is_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StyleParams(**changes)
