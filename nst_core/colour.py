"""Colour control of Gatys et al. 2017 ("Controlling Perceptual Factors in Neural Style Transfer", CVPR, §5); used by targets and engine."""

from __future__ import annotations

import torch
from torch import Tensor

# NTSC YIQ (the colour space Gatys et al. 2017 §5.2 use for luminance-only transfer).
_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: Tensor, image: Tensor) -> Tensor:
    m = matrix.to(device=image.device, dtype=image.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, image)


def rgb_to_yiq(image: Tensor) -> Tensor:
    """[..., 3, H, W] RGB → YIQ."""
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: Tensor) -> Tensor:
    """[..., 3, H, W] YIQ → RGB (not clamped)."""
    return _apply(_YIQ_TO_RGB, image)


def luminance(image: Tensor) -> Tensor:
    """Y of YIQ: [..., 3, H, W] → [..., 1, H, W]."""
    return rgb_to_yiq(image)[..., :1, :, :]


def match_luminance(style_y: Tensor, content_y: Tensor) -> Tensor:
    """L_s' = σ_c/σ_s (L_s − μ_s) + μ_c (Gatys et al. 2017 §5.2): the style's luminance histogram moved to the content's."""
    mu_s, sd_s = style_y.mean(), style_y.std(unbiased=False)
    mu_c, sd_c = content_y.mean(), content_y.std(unbiased=False)
    return (sd_c / sd_s.clamp_min(1e-8)) * (style_y - mu_s) + mu_c


def combine_luminance(y: Tensor, content: Tensor) -> Tensor:
    """RGB image with luminance `y` ([..., 1, H, W]) and the I, Q chroma of `content` ([..., 3, H, W]), clamped to [0, 1]."""
    yiq = rgb_to_yiq(content)
    return yiq_to_rgb(torch.cat([y, yiq[..., 1:, :, :]], dim=-3)).clamp(0.0, 1.0)


def _sym_power(cov: Tensor, power: float) -> Tensor:
    evals: Tensor
    evecs: Tensor
    evals, evecs = torch.linalg.eigh(cov)
    return evecs @ torch.diag(evals.clamp_min(1e-10).pow(power)) @ evecs.T


def match_color_histogram(style: Tensor, content: Tensor) -> Tensor:
    """The style's colours moved to the content's mean and covariance (Gatys et al. 2017 §5.1).

    x_s' = A x_s + b with A Σ_s Aᵀ = Σ_c and b = μ_c − A μ_s. A is the "3D colour matching" choice
    A = Σ_c^{1/2} Σ_s^{-1/2} via eigendecompositions (Hertzmann et al. 2001, Image Analogies), which §5.1
    reports works better than the Cholesky choice. style, content: [3, H, W] in [0, 1].
    """
    s = style.double().flatten(1)  # [3, Ms]
    c = content.double().flatten(1)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    cov_s = torch.cov(s, correction=0) + 1e-6 * torch.eye(3, dtype=s.dtype, device=s.device)
    cov_c = torch.cov(c, correction=0) + 1e-6 * torch.eye(3, dtype=c.dtype, device=c.device)
    a = _sym_power(cov_c, 0.5) @ _sym_power(cov_s, -0.5)
    out = a @ (s - mu_s) + mu_c
    # Deviation (not in §5.1): clamp to the displayable range, since pixels outside [0, 1] feed VGG values
    # it never saw and the optimised image is clamped to [0, 1] anyway.
    return out.reshape(style.shape).clamp(0.0, 1.0).to(style.dtype)


__all__ = [
    "combine_luminance",
    "luminance",
    "match_color_histogram",
    "match_luminance",
    "rgb_to_yiq",
    "yiq_to_rgb",
]
