"""ema_decay: the returned image is the bias-corrected moving average of the iterates, and its loss is final."""

from __future__ import annotations

import math

import pytest
import torch

from nst_core.engine import Stylizer
from nst_core.params import Init, OptimizerName, StyleParams
from nst_core.targets import Style

DECAY = 0.7
STEPS = 6


def _rand(seed: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("optimizer", [OptimizerName.adam, OptimizerName.gd])
def test_returned_image_is_the_bias_corrected_average_of_the_iterates(
    stylizer: Stylizer, optimizer: OptimizerName
) -> None:
    content, style = _rand(1, 18, 24), Style((_rand(2, 24, 24),))
    lr = 0.05 if optimizer is OptimizerName.adam else 1e-3
    base = StyleParams(size=24, steps=STEPS, log_every=2, optimizer=optimizer, lr=lr, init=Init.noise, seed=3)
    # A run of k steps ends at the k-th iterate of the longer run (same start, same optimiser state).
    iterates = [stylizer.stylize([content], style, base.replace(steps=k))[0].image.double() for k in range(1, STEPS + 1)]
    plain = stylizer.stylize([content], style, base)[0]
    result = stylizer.stylize([content], style, base.replace(ema_decay=DECAY))[0]

    ema = torch.zeros_like(iterates[0])
    for x in iterates:
        ema = DECAY * ema + (1 - DECAY) * x
    expected = ema / (1 - DECAY**STEPS)
    torch.testing.assert_close(result.image.double(), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(result.image, plain.image)
    assert 0 <= result.image.min() and result.image.max() <= 1

    # The curve records the iterates' losses; its final row and `final` are the returned image's.
    assert result.curve.step == plain.curve.step == [0, 2, 4, 6]
    assert result.curve.total[:-1] == plain.curve.total[:-1]
    again = stylizer.stylize([content], style, base.replace(steps=1, log_every=1), init_images=[result.image])
    loss_of_average = again[0].curve.total[0]  # step 0: the loss of the image it starts from
    assert result.final["total"] == pytest.approx(loss_of_average, rel=1e-5)
    assert result.curve.total[-1] == result.final["total"]
    assert result.final["total"] != pytest.approx(plain.final["total"], rel=1e-6)


def test_an_image_that_stops_early_freezes_its_average(stylizer: Stylizer) -> None:
    """Masked like the pixels: with early stopping a row's average does not depend on its batch.

    Row 1 stops at step 6. Next to a row that runs all 12 steps, its average must come out exactly as in
    a batch of the same shape that ends at step 6 (an average that kept updating after the stop would
    have moved on). Same shapes, same kernels, so the comparison is bit for bit."""
    long_runner, early = _rand(4, 18, 24), _rand(10, 18, 24)
    styles = [Style((_rand(6, 24, 24),)), Style((_rand(7, 24, 24),))]
    params = StyleParams(size=24, steps=12, log_every=2, lr=0.05, early_stop=0.05, ema_decay=0.5)
    mixed = stylizer.stylize([long_runner, early], styles, params)
    ends_early = stylizer.stylize([early, early], [styles[1], styles[1]], params)
    assert [r.steps_run for r in mixed] == [12, 6] and [r.steps_run for r in ends_early] == [6, 6]
    torch.testing.assert_close(mixed[1].image, ends_early[1].image, atol=0, rtol=0)
    assert mixed[1].curve.total == ends_early[1].curve.total


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5, math.nan, math.inf])
def test_ema_decay_outside_zero_one_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        StyleParams(ema_decay=decay)


def test_ema_decay_is_refused_with_lbfgs() -> None:
    with pytest.raises(ValueError, match="ema_decay applies to the adam and gd optimizers only"):
        StyleParams(optimizer="lbfgs", ema_decay=0.9)
    assert StyleParams(optimizer="lbfgs", ema_decay=0).ema_decay == 0
