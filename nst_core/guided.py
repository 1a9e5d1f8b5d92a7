"""Guided style losses (Gatys et al. 2017 §3, spatial control): each region of an image compares its own
feature statistics with its own target, and the regions' losses are summed by area.

Functions and target-holding modules like `losses`, one value per image ([B]); the engine uses them for
any batch in which a content or style carries a mask, and `targets` uses the same statistics for the style.

Deviation from Gatys et al. 2017, who form the Gram of F∘m (so a soft mask value counts squared): the
statistics here are mask-weighted moments, Ĝ_r = Σ_k m_k f_k f_kᵀ / Σ_k m_k. For a binary mask the two are
the same; for the soft edges that average pooling gives deeper masks, weights enter once, as they do in
the mean and covariance of the W2 loss. A single region covering the image gives exactly Ĝ = G/M.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nst_core.losses import _fp32, _style_from_normalized, _wide, w2_from_moments
from nst_core.masks import region_weights
from nst_core.params import Distance, StyleNormalization


def _flat(features: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    f = _wide(features).flatten(2)  # [B, N, K]
    m = _wide(masks).flatten(2)  # [B, R, K]
    mass = m.sum(-1)  # [B, R]
    return f, m, mass


def guided_gram(features: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Ĝ_r = Σ_k m_rk f_k f_kᵀ / Σ_k m_rk per region ([B, R, N, N]) and each region's mass Σ_k m_rk ([B, R]).

    features [B, N, H, W], masks [B, R, H, W] at the same size. An empty region gets a zero matrix (its
    mass is 0, so it weighs nothing). One region at a time keeps memory at one extra feature map.
    """
    with _fp32(features):
        f, m, mass = _flat(features, masks)
        grams = [(f * m[:, r : r + 1]) @ f.transpose(1, 2) for r in range(m.shape[1])]
        g = torch.stack(grams, 1) / mass.clamp_min(torch.finfo(f.dtype).tiny)[..., None, None]
        return g, mass


def guided_moments(features: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mask-weighted mean μ_r [B, R, N], covariance Σ_r [B, R, N, N] and mass [B, R] of each region
    (population form, as `losses.feature_moments`, which one full region reproduces)."""
    with _fp32(features):
        f, m, mass = _flat(features, masks)
        norm = mass.clamp_min(torch.finfo(f.dtype).tiny)
        means, covs = [], []
        for r in range(m.shape[1]):
            w = m[:, r : r + 1]  # [B, 1, K]
            mean = (f * w).sum(-1) / norm[:, r : r + 1]
            centred = f - mean.unsqueeze(-1)
            covs.append((centred * w) @ centred.transpose(1, 2) / norm[:, r, None, None])
            means.append(mean)
        return torch.stack(means, 1), torch.stack(covs, 1), mass


def guided_style_layer_loss(
    features: Tensor,
    masks: Tensor,
    target: Tensor,
    normalization: StyleNormalization | str = StyleNormalization.paper,
    distance: Distance | str = Distance.squared,
) -> Tensor:
    """E_l = Σ_r a_r E_l(Ĝ_r, Â_r), a_r the region's share of the image's mask mass: [B].

    target: Â per region, [B or 1, R, N, N]; E_l(·) the unguided layer loss (`losses.style_layer_loss`'s
    normalisations) applied to one region's statistics.
    """
    n = features.shape[1]
    with _fp32(features):
        g, mass = guided_gram(features, masks)
        b, r = g.shape[:2]
        a_hat = _wide(target).expand(b, r, n, n)
        per_region = _style_from_normalized(g.flatten(0, 1), a_hat.flatten(0, 1), n, normalization, distance)
        return (per_region.view(b, r) * region_weights(mass)).sum(1)


def guided_w2_layer_loss(
    features: Tensor, masks: Tensor, target_mean: Tensor, target_cov: Tensor, target_cov_sqrt: Tensor
) -> Tensor:
    """E_l = Σ_r a_r W2²(N(μ_x,r, Σ_x,r), N(μ_s,r, Σ_s,r)) / N_l: [B]. Targets [B or 1, R, …]."""
    n = features.shape[1]
    with _fp32(features):
        mean, cov, mass = guided_moments(features, masks)
        b, r = mean.shape[:2]
        mu_s = _wide(target_mean).expand(b, r, n).flatten(0, 1)
        sigma_s = _wide(target_cov).expand(b, r, n, n).flatten(0, 1)
        root_s = _wide(target_cov_sqrt).expand(b, r, n, n).flatten(0, 1)
        per_region = w2_from_moments(
            mean.flatten(0, 1), cov.flatten(0, 1), mu_s, sigma_s, root_s, n, empty=(mass <= 0).flatten()
        )
        return (per_region.view(b, r) * region_weights(mass)).sum(1)


class GuidedStyleLoss(nn.Module):
    """Guided E_l against fixed per-region targets Â_r and the image's region masks at this layer (buffers)."""

    target: Tensor
    masks: Tensor

    def __init__(
        self,
        target: Tensor,
        masks: Tensor,
        normalization: StyleNormalization | str = StyleNormalization.paper,
        distance: Distance | str = Distance.squared,
    ) -> None:
        super().__init__()
        self.register_buffer("target", target.detach().float())
        self.register_buffer("masks", masks.detach().float())
        self.normalization = StyleNormalization(normalization)
        self.distance = Distance(distance)

    def forward(self, features: Tensor) -> Tensor:
        return guided_style_layer_loss(features, self.masks, self.target, self.normalization, self.distance)


class GuidedStyleLossW2(nn.Module):
    """Guided W2²/N_l against fixed per-region Gaussians and the image's region masks at this layer."""

    mean: Tensor
    cov: Tensor
    cov_sqrt: Tensor
    masks: Tensor

    def __init__(self, mean: Tensor, cov: Tensor, cov_sqrt: Tensor, masks: Tensor) -> None:
        super().__init__()
        for name, t in (("mean", mean), ("cov", cov), ("cov_sqrt", cov_sqrt), ("masks", masks)):
            self.register_buffer(name, t.detach().float())

    def forward(self, features: Tensor) -> Tensor:
        return guided_w2_layer_loss(features, self.masks, self.mean, self.cov, self.cov_sqrt)


__all__ = [
    "GuidedStyleLoss",
    "GuidedStyleLossW2",
    "guided_gram",
    "guided_moments",
    "guided_style_layer_loss",
    "guided_w2_layer_loss",
]
