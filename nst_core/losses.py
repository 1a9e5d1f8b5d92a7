"""Gatys et al. losses as functions and as small target-holding modules; the engine combines them per image.

Every function returns one value per image ([B]) so a batch's losses can be summed and still give each
image exactly the gradient it would get alone. References:
  Gatys, Ecker, Bethge 2016, "Image Style Transfer Using Convolutional Neural Networks", CVPR (eqs. 1–7).
  Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by Inverting Them" (total variation).
  Higham 2008, "Functions of Matrices", §6.7 (the coupled Newton–Schulz iteration for the square root).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from nst_core.names import LOSS_TERMS
from nst_core.params import W2_NEWTON_SCHULZ_ITERATIONS, Distance, StyleNormalization


def _dist(x: Tensor, distance: Distance | str) -> Tensor:
    """Elementwise distance d(x): x² (the paper) or |x| (mean-absolute-error variant)."""
    return x.square() if Distance(distance) is Distance.squared else x.abs()


def _fp32(x: Tensor) -> torch.autocast:
    """Autocast disabled on x's device: Gram matrices and losses stay float32 under bf16 convolutions."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _wide(x: Tensor) -> Tensor:
    """float32, or float64 when given (so gradcheck can run the very same code in double precision)."""
    return x if x.dtype == torch.float64 else x.float()


def gram(features: Tensor) -> Tensor:
    """G^l_ij = Σ_k F^l_ik F^l_jk (Gatys 2016 eq. 3), unnormalised, in float32 (float64 if given).

    features: [B, N, H, W] → [B, N, N]. Autocast is disabled so bf16 activations are accumulated in fp32.
    """
    with _fp32(features):
        f = _wide(features).flatten(2)
        return f @ f.transpose(1, 2)


def content_loss(features: Tensor, target: Tensor, distance: Distance | str = Distance.squared) -> Tensor:
    """L_content = ½ Σ_ij d(F^l_ij − P^l_ij) (Gatys 2016 eq. 1, d(x) = x²), one value per image: [B]."""
    with _fp32(features):
        diff = _wide(features) - _wide(target)
        return 0.5 * _dist(diff, distance).flatten(1).sum(1)


def style_layer_loss(
    features: Tensor,
    target_gram: Tensor,
    *,
    target_positions: int | None = None,
    normalization: StyleNormalization | str = StyleNormalization.paper,
    distance: Distance | str = Distance.squared,
) -> Tensor:
    """E_l for one layer, one value per image: [B].

    paper  (Gatys 2016 eq. 4): E_l = 1/(4 N_l² M_l²) Σ_ij (G^l_ij − A^l_ij)², written as Σ d((Ĝ − Â)/(2 N_l))
            with Ĝ = G/M_l and Â = A/M_l^style, so that d = |·| gives the analogous 1/(2 N_l M_l) Σ |G − A|.
    common: the Gram divided by N_l M_l and d averaged over its N_l² entries: 1/N_l² Σ d((Ĝ − Â)/N_l).
    target_gram: the style image's unnormalised Gram A ([N,N] or [B,N,N]); target_positions: its M_l
    (H·W of the style feature map), defaulting to the generated image's M_l as in the paper.
    """
    _, n, h, w = features.shape
    positions = h * w
    with _fp32(features):
        g_hat = gram(features) / positions
        a_hat = _wide(target_gram) / (target_positions if target_positions is not None else positions)
        return _style_from_normalized(g_hat, a_hat, n, normalization, distance)


def _style_from_normalized(
    g_hat: Tensor, a_hat: Tensor, n: int, normalization: StyleNormalization | str, distance: Distance | str
) -> Tensor:
    if StyleNormalization(normalization) is StyleNormalization.paper:
        return _dist((g_hat - a_hat) / (2 * n), distance).flatten(1).sum(1)
    return _dist((g_hat - a_hat) / n, distance).flatten(1).mean(1)


def style_loss(
    features: Mapping[str, Tensor],
    target_grams: Mapping[str, Tensor],
    weights: Sequence[float] | None = None,
    *,
    target_positions: Mapping[str, int] | None = None,
    normalization: StyleNormalization | str = StyleNormalization.paper,
    distance: Distance | str = Distance.squared,
) -> Tensor:
    """L_style = Σ_l w_l E_l over the layers of `target_grams` (Gatys 2016 eq. 5), w_l = 1/L by default: [B]."""
    layers = list(target_grams)
    terms = [
        w
        * style_layer_loss(
            features[name],
            target_grams[name],
            target_positions=None if target_positions is None else target_positions[name],
            normalization=normalization,
            distance=distance,
        )
        for name, w in zip(layers, layer_weights(layers, weights), strict=True)
    ]
    return torch.stack(terms).sum(0)


def sqrtm_newton_schulz(a: Tensor, iterations: int = W2_NEWTON_SCHULZ_ITERATIONS) -> Tensor:
    """Principal square root of symmetric positive semi-definite matrices [..., N, N], in float32.

    Coupled Newton–Schulz iteration (Higham 2008, eq. 6.35): Y₀ = A/‖A‖_F, Z₀ = I, T = (3I − Z·Y)/2,
    Y ← Y·T, Z ← T·Z; Y → (A/‖A‖_F)^½ and Z → its inverse. Only matrix products: batched, fast on GPUs,
    and differentiable by autograd through the unrolled iterations (no eigendecomposition, whose gradient
    is undefined at repeated eigenvalues). Scaling by the Frobenius norm puts every eigenvalue in [0, 1],
    where the iteration converges.
    """
    with _fp32(a):
        a = _wide(a)
        norm: Tensor = torch.linalg.matrix_norm(a).clamp_min(1e-30)[..., None, None]  # a zero matrix stays zero
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
        y, z = a / norm, eye
        for _ in range(iterations):
            t = 1.5 * eye - 0.5 * (z @ y)
            y, z = y @ t, t @ z
        return y * norm.sqrt()


def feature_moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean μ [B, N] and covariance Σ = 1/M Σ_k (f_k − μ)(f_k − μ)ᵀ [B, N, N] of each image's M positions.

    The population covariance (1/M, not 1/(M − 1)), so that Σ + μμᵀ is the normalised Gram G/M.
    """
    with _fp32(features):
        f = _wide(features).flatten(2)
        mean = f.mean(2)
        centred = f - mean.unsqueeze(2)
        return mean, centred @ centred.transpose(1, 2) / f.shape[2]


def w2_layer_loss(
    features: Tensor,
    target_mean: Tensor,
    target_cov: Tensor,
    target_cov_sqrt: Tensor | None = None,
    *,
    iterations: int = W2_NEWTON_SCHULZ_ITERATIONS,
) -> Tensor:
    """E_l = W2²(N(μ_x, Σ_x), N(μ_s, Σ_s)) / N_l for one layer, one value per image: [B].

    W2² = ‖μ_x − μ_s‖² + tr(Σ_x + Σ_s − 2 (Σ_s^½ Σ_x Σ_s^½)^½), the squared 2-Wasserstein distance of two
    Gaussians. Deviation from Gatys 2016 (whose E_l compares Gram matrices): a Gaussian fit's distance, as
    crowsonkb's style-transfer-pytorch `StyleLossW2`; dividing by N_l (a per-channel mean) keeps layers of
    64 and 512 channels on one scale. Targets: μ_s [N] or [B, N], Σ_s and Σ_s^½ [N, N] or [B, N, N];
    Σ_s^½ is computed here when not given (the engine computes it once per style).
    """
    n = features.shape[1]
    with _fp32(features):
        mean, cov = feature_moments(features)
        mu_s, sigma_s = _wide(target_mean), _wide(target_cov)
        root_s = sqrtm_newton_schulz(sigma_s, iterations) if target_cov_sqrt is None else _wide(target_cov_sqrt)
        return w2_from_moments(mean, cov, mu_s, sigma_s, root_s, n, iterations=iterations)


def w2_from_moments(
    mean: Tensor,
    cov: Tensor,
    mu_s: Tensor,
    sigma_s: Tensor,
    root_s: Tensor,
    n: int,
    *,
    iterations: int = W2_NEWTON_SCHULZ_ITERATIONS,
    empty: Tensor | None = None,
) -> Tensor:
    """W2² / n of Gaussians given by their moments ([…, N], […, N, N]); `empty` ([…] bool) marks pairs whose
    value is unused (regions without pixels): their zero cross term is replaced by the identity's before the
    square root, whose gradient at a zero matrix is 0/0 and would spread NaN through the zero weight."""
    inner = root_s @ cov @ root_s
    inner = 0.5 * (inner + inner.transpose(-2, -1))  # symmetric up to rounding; the iteration assumes it
    if empty is not None:
        eye = torch.eye(inner.shape[-1], dtype=inner.dtype, device=inner.device)
        inner = torch.where(empty[..., None, None], eye, inner)
    cross = sqrtm_newton_schulz(inner, iterations).diagonal(dim1=-2, dim2=-1).sum(-1)
    traces = cov.diagonal(dim1=-2, dim2=-1).sum(-1) + sigma_s.diagonal(dim1=-2, dim2=-1).sum(-1)
    return ((mean - mu_s).square().sum(-1) + traces - 2 * cross) / n


def total_loss(
    content: Tensor,
    style: Tensor,
    tv: Tensor,
    *,
    alpha: float,
    beta: float | Tensor,
    tv_weight: float,
) -> Tensor:
    """α·L_content + β·L_style + tv·L_tv (Gatys 2016 eq. 7 plus a TV prior). The convex form of
    `content_ratio` λ is α = λ, β = 1 − λ, which the engine's objective sets before calling this."""
    return alpha * content + beta * style + tv_weight * tv


def tv_loss(image: Tensor) -> Tensor:
    """L_tv = Σ_ij (x_i+1,j − x_ij)² + (x_i,j+1 − x_ij)² summed over channels (Mahendran & Vedaldi 2015, β = 2): [B]."""
    with _fp32(image):
        x = _wide(image)
        dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).square().flatten(1).sum(1)
        dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).square().flatten(1).sum(1)
        return dh + dw


class ContentLoss(nn.Module):
    """½ Σ d(F − P) against a fixed target P (held as a buffer): [B]."""

    target: Tensor

    def __init__(self, target: Tensor, distance: Distance | str = Distance.squared) -> None:
        super().__init__()
        self.register_buffer("target", target.detach().float())
        self.distance = Distance(distance)

    def forward(self, features: Tensor) -> Tensor:
        return content_loss(features, self.target, self.distance)


class StyleLoss(nn.Module):
    """E_l against a fixed normalised Gram Â = A / M_l^style ([1,N,N] shared or [B,N,N] per image): [B]."""

    target: Tensor

    def __init__(
        self,
        target_gram_normalized: Tensor,
        normalization: StyleNormalization | str = StyleNormalization.paper,
        distance: Distance | str = Distance.squared,
    ) -> None:
        super().__init__()
        t = target_gram_normalized.detach().float()
        self.register_buffer("target", t if t.dim() == 3 else t.unsqueeze(0))
        self.normalization = StyleNormalization(normalization)
        self.distance = Distance(distance)

    def forward(self, features: Tensor) -> Tensor:
        _, n, h, w = features.shape
        with _fp32(features):
            return _style_from_normalized(
                gram(features) / (h * w), self.target, n, self.normalization, self.distance
            )


class StyleLossW2(nn.Module):
    """W2²/N_l against fixed Gaussian targets μ_s, Σ_s, Σ_s^½ (buffers; shared [1, …] or per image [B, …]): [B]."""

    mean: Tensor
    cov: Tensor
    cov_sqrt: Tensor

    def __init__(self, mean: Tensor, cov: Tensor, cov_sqrt: Tensor) -> None:
        super().__init__()
        m, c, r = (t.detach().float() for t in (mean, cov, cov_sqrt))
        self.register_buffer("mean", m if m.dim() == 2 else m.unsqueeze(0))
        self.register_buffer("cov", c if c.dim() == 3 else c.unsqueeze(0))
        self.register_buffer("cov_sqrt", r if r.dim() == 3 else r.unsqueeze(0))

    def forward(self, features: Tensor) -> Tensor:
        return w2_layer_loss(features, self.mean, self.cov, self.cov_sqrt)


class WeightedSum(nn.Module):
    """Σ_l w_l · loss_l(features[layer_l]) over named layers: [B]."""

    def __init__(self, losses: dict[str, nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(weights) != len(losses):
            raise ValueError(f"{len(weights)} weights for {len(losses)} layers")
        self.losses = nn.ModuleDict(losses)
        self.weights = [float(w) for w in weights]

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        terms = [
            w * loss(features[name])
            for (name, loss), w in zip(self.losses.items(), self.weights, strict=True)
        ]
        return torch.stack(terms).sum(0)


def layer_weights(layers: Sequence[str], weights: Sequence[float] | None) -> tuple[float, ...]:
    """Explicit per-layer weights, or 1/len(layers) each (Gatys 2016: w_l = 1/5 over five style layers)."""
    if weights is not None:
        return tuple(float(w) for w in weights)
    return tuple(1.0 / len(layers) for _ in layers)


__all__ = [
    "LOSS_TERMS",
    "ContentLoss",
    "StyleLoss",
    "StyleLossW2",
    "WeightedSum",
    "content_loss",
    "feature_moments",
    "gram",
    "layer_weights",
    "sqrtm_newton_schulz",
    "style_layer_loss",
    "style_loss",
    "total_loss",
    "tv_loss",
    "w2_from_moments",
    "w2_layer_loss",
]
