"""The loss-term and metric names have one definition each (losses.LOSS_TERMS, metrics.METRIC_NAMES)."""

from __future__ import annotations

import dataclasses

import torch

from nst_core.engine import LOSS_TERMS, LossCurve
from nst_core.metrics import (
    CLIPPED,
    COLOUR_DIST_CONTENT,
    COLOUR_DIST_STYLE,
    METRIC_NAMES,
    SSIM,
    image_metrics,
    layer_metric,
)
from nst_core.params import PreserveColor


def test_loss_curve_has_one_series_per_loss_term_in_order() -> None:
    series = tuple(f.name for f in dataclasses.fields(LossCurve) if f.name not in ("step", "stage"))
    assert series == LOSS_TERMS
    assert LOSS_TERMS[0] == "total"  # the optimisers minimise column 0


def test_image_metrics_use_the_metric_names() -> None:
    g = torch.Generator().manual_seed(0)
    output, content, style = (torch.rand(3, 16, 16, generator=g) for _ in range(3))
    plain = image_metrics(output, content, style)
    assert set(plain) == {SSIM, COLOUR_DIST_STYLE, CLIPPED}
    preserved = image_metrics(output, content, style, PreserveColor.luminance)
    assert set(preserved) == {SSIM, COLOUR_DIST_STYLE, CLIPPED, COLOUR_DIST_CONTENT}
    assert set(preserved) <= set(METRIC_NAMES)
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    assert layer_metric("gram_err", "relu1_1") == "gram_err_relu1_1"
