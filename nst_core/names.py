"""The names of the loss terms and quality metrics. Imports nothing, so the ledger's and the curves'
schemas (in `pipeline`, read by commands that must not load torch) derive their columns from here.
"""

from __future__ import annotations

LOSS_TERMS: tuple[str, ...] = ("total", "content", "style", "tv")
"""Names of the loss terms, in the order of the engine objective's columns ([B, len(LOSS_TERMS)]): the
keys of `ImageResult.final` and the series of `LossCurve`. The total comes first (the optimisers
minimise column 0); content, style and tv are weighted (α·L_content, β·L_style, tv·L_tv) and sum to it."""

CONTENT_DIST = "content_dist"
GRAM_ERR = "gram_err"
SSIM = "ssim"
COLOUR_DIST_STYLE = "colour_dist_style"
COLOUR_DIST_CONTENT = "colour_dist_content"
CLIPPED = "clipped"
METRIC_NAMES: tuple[str, ...] = (CONTENT_DIST, GRAM_ERR, SSIM, COLOUR_DIST_STYLE, COLOUR_DIST_CONTENT, CLIPPED)
"""The headline metrics of `row_metrics` (meanings in docs/metrics.md); colour_dist_content only when
colour is preserved. Per-layer metrics add `layer_metric(CONTENT_DIST, layer)` (several content layers)
and `layer_metric(GRAM_ERR, layer)` (every style layer)."""


def layer_metric(metric: str, layer: str) -> str:
    """The name of `metric` for one VGG layer: `content_dist_relu4_2`, `gram_err_relu1_1`."""
    return f"{metric}_{layer}"


__all__ = [
    "CLIPPED",
    "COLOUR_DIST_CONTENT",
    "COLOUR_DIST_STYLE",
    "CONTENT_DIST",
    "GRAM_ERR",
    "LOSS_TERMS",
    "METRIC_NAMES",
    "SSIM",
    "layer_metric",
]
