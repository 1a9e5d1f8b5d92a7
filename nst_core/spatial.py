"""The content side of spatial control: a batch's style term when any of its images carries a mask.

Called by the engine once per stage. Each image's regions are its content mask's colours (one region
covering everything when it has no mask); the batch is padded to its largest region count with empty
regions, which weigh nothing, so images with different masks, or none, share one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nst_core.guided import GuidedStyleLoss, GuidedStyleLossW2
from nst_core.losses import WeightedSum, layer_weights
from nst_core.masks import layer_masks, one_hot, regions_of
from nst_core.params import StyleLossKind, StyleParams
from nst_core.targets import StyleTargets


def is_guided(content_masks: Sequence[Tensor | None] | None, targets: Sequence[StyleTargets]) -> bool:
    return any(m is not None for m in content_masks or ()) or any(t.regions for t in targets)


def guided_style_term(
    targets: Sequence[StyleTargets],
    content_masks: Sequence[Tensor | None],
    shape: tuple[int, int],
    params: StyleParams,
    arch: str,
    device: torch.device,
) -> WeightedSum:
    """Σ_l w_l · guided E_l for a batch at one stage size (`shape`, the optimised image's [H, W])."""
    labels: list[tuple[int | None, ...]] = [
        regions_of(m) if m is not None else (None,) for m in content_masks
    ]
    count = max(len(ls) for ls in labels)
    region_masks = torch.zeros((len(labels), count, *shape), device=device)
    for b, (mask, ls) in enumerate(zip(content_masks, labels, strict=True)):
        if mask is None:
            region_masks[b, 0] = 1.0
        else:
            region_masks[b, : len(ls)] = one_hot(mask, [int(v) for v in ls if v is not None], shape, device)
    guides = layer_masks(region_masks, params.style_layers, params.pooling, arch)
    w2 = params.style_loss is StyleLossKind.w2
    losses: dict[str, nn.Module] = {}
    for layer in params.style_layers:
        parts = [_region_stack(t, layer, w2, ls, count) for t, ls in zip(targets, labels, strict=True)]
        stacked = tuple(torch.stack(p) for p in zip(*parts, strict=True))
        if w2:
            mean, cov, root = stacked
            losses[layer] = GuidedStyleLossW2(mean, cov, root, guides[layer])
        else:
            losses[layer] = GuidedStyleLoss(stacked[0], guides[layer], params.style_normalization, params.distance)
    return WeightedSum(losses, layer_weights(params.style_layers, params.style_layer_weights))


def _region_stack(
    targets: StyleTargets, layer: str, w2: bool, labels: tuple[int | None, ...], count: int
) -> tuple[Tensor, ...]:
    """One image's per-region targets ([R, …] each), zeros for the padding regions."""
    rows = [targets.parts(layer, w2, label) for label in labels]
    padding = [tuple(torch.zeros_like(t) for t in rows[0])] * (count - len(rows))
    return tuple(torch.stack(ts) for ts in zip(*rows, *padding, strict=True))


__all__ = ["guided_style_term", "is_guided"]
