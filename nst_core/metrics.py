"""Per-image quality metrics of a stylised result; called by the pipeline's workers for every done row.

Two families (meanings and ranges in docs/metrics.md):
  * from the run's own VGG, pooling and Gram targets: how far the output is from the content's features
    and from the style's Gram matrices — what the optimisation was asked to minimise, made relative;
  * weight-free: SSIM of luminance against the content, colour distance (Fréchet distance between
    Gaussian fits in CIELAB) against the style (and the content), and the share of clipped pixels.
Images are [3,H,W] or [B,3,H,W] float tensors in [0, 1]; for a batch every function returns the batch mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from nst_core.colour import luminance
from nst_core.images import resize_to
from nst_core.losses import gram, layer_weights
from nst_core.names import (
    CLIPPED,
    COLOUR_DIST_CONTENT,
    COLOUR_DIST_STYLE,
    CONTENT_DIST,
    GRAM_ERR,
    METRIC_NAMES,
    SSIM,
    layer_metric,
)
from nst_core.params import Pooling, PreserveColor, StyleParams
from nst_core.precision import conv_precision
from nst_core.targets import StyleTargets
from nst_core.vgg import VGGFeatures

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
"""Wang, Bovik, Sheikh, Simoncelli 2004 (IEEE TIP 13(4)) constants for a dynamic range L = 1."""
CLIP_TOLERANCE = 1.0 / 255.0
COLOUR_MAX_PIXELS = 1 << 18
"""Pixels used for colour statistics; larger images are subsampled on a regular grid (values unchanged)."""

# sRGB (IEC 61966-2-1) linear RGB → CIE XYZ, D65 white; the D65 reference white for CIELAB.
_RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_D65_WHITE = (0.95047, 1.0, 1.08883)
_LAB_EPS = 216 / 24389  # CIE standard ε = (6/29)³
_LAB_KAPPA = 24389 / 27  # CIE standard κ


# ---------------------------------------------------------------------------------------------- helpers
def _batched(image: Tensor, name: str) -> Tensor:
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{name} must be a [3, H, W] or [B, 3, H, W] tensor, got {shape}")
    return image.unsqueeze(0) if image.dim() == 3 else image


def _pair(output: Tensor, other: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Both as [B,3,H,W] with `other` resized to the output's size and broadcast over its batch."""
    out = _batched(output, "output")
    ref = _batched(other, name).to(device=out.device)
    if tuple(ref.shape[-2:]) != tuple(out.shape[-2:]):
        ref = resize_to(ref.float(), (int(out.shape[-2]), int(out.shape[-1])))
    if ref.shape[0] == 1 and out.shape[0] > 1:
        ref = ref.expand(out.shape[0], -1, -1, -1)
    if ref.shape[0] != out.shape[0]:
        raise ValueError(f"{name} has batch size {ref.shape[0]}, output has {out.shape[0]}")
    return out, ref


def _relative(num: Tensor, den: Tensor) -> Tensor:
    """num/den elementwise; 0 where both are 0, inf where only den is."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.where(num > 0, torch.full_like(num, math.inf), torch.zeros_like(num)))


# ------------------------------------------------------------------------------------- feature metrics
@torch.no_grad()
def feature_metrics_per_image(
    model: VGGFeatures,
    output: Tensor,
    content: Tensor,
    style_targets: StyleTargets | Mapping[str, Tensor],
    params: StyleParams,
) -> list[dict[str, float]]:
    """One dict per image of `output`; see `feature_metrics` for the keys."""
    out, ref = _pair(output, content, "content")
    dev = model.mean.device
    out, ref = out.to(dev).float(), ref.to(dev).float()
    grams = style_targets.grams if isinstance(style_targets, StyleTargets) else dict(style_targets)
    if isinstance(style_targets, StyleTargets) and Pooling(style_targets.pooling) is not Pooling(params.pooling):
        raise ValueError(
            f"style targets were computed with {Pooling(style_targets.pooling).value} pooling, "
            f"params use {Pooling(params.pooling).value}"
        )
    missing = [name for name in params.style_layers if name not in grams]
    if missing:
        raise ValueError(f"style targets have no Gram matrix for layer(s) {missing}")
    content_layers = tuple(params.content_layers)
    style_layers = tuple(params.style_layers)
    layers = tuple(dict.fromkeys((*content_layers, *style_layers)))
    with conv_precision(dev, params.precision):
        feats = model(out, layers, params.pooling, params.padding)
        content_feats = model(ref, content_layers, params.pooling, params.padding)
    batch = out.shape[0]
    metrics: dict[str, Tensor] = {}
    num_sum = torch.zeros(batch, dtype=torch.float64, device=dev)
    den_sum = torch.zeros(batch, dtype=torch.float64, device=dev)
    for name in content_layers:
        f = feats[name].double().flatten(1)
        p = content_feats[name].double().flatten(1)
        num = (f - p).square().sum(1)
        den = p.square().sum(1)
        num_sum += num
        den_sum += den
        if len(content_layers) > 1:
            metrics[layer_metric(CONTENT_DIST, name)] = _relative(num.sqrt(), den.sqrt())
    metrics[CONTENT_DIST] = _relative(num_sum.sqrt(), den_sum.sqrt())
    weights = layer_weights(style_layers, params.style_layer_weights)
    total_w = sum(weights)
    gram_err = torch.zeros(batch, dtype=torch.float64, device=dev)
    for name, w in zip(style_layers, weights, strict=True):
        f = feats[name]
        # Same normalisation as the run's targets (targets.StyleTargets): Ĝ = G / M_l, Â = A / M_l^style.
        g_hat = gram(f).double() / (f.shape[-2] * f.shape[-1])
        a_hat = grams[name].to(dev).double()
        a_hat = a_hat.unsqueeze(0) if a_hat.dim() == 2 else a_hat
        err = _relative(
            torch.linalg.matrix_norm(g_hat - a_hat), torch.linalg.matrix_norm(a_hat).expand(batch)
        )
        metrics[layer_metric(GRAM_ERR, name)] = err
        gram_err += (w / total_w if total_w > 0 else 1.0 / len(style_layers)) * err
    metrics[GRAM_ERR] = gram_err
    host = {k: v.cpu().tolist() for k, v in metrics.items()}
    return [{k: float(v[b]) for k, v in host.items()} for b in range(batch)]


def feature_metrics(
    model: VGGFeatures,
    output: Tensor,
    content: Tensor,
    style_targets: StyleTargets | Mapping[str, Tensor],
    params: StyleParams,
) -> dict[str, float]:
    """Distances in the run's own VGG feature space (same model, pooling, layers and Gram normalisation).

    content_dist: ‖F − P‖ / ‖P‖ over the content layers (Frobenius norms, layers pooled), plus
    content_dist_<layer> when there are several; gram_err_<layer>: ‖Ĝ − Â‖ / ‖Â‖ per style layer against
    the run's targets Â; gram_err: their mean weighted by the style layer weights. 0 means identical.
    The content is resized to the output's size when they differ.
    """
    per_image = feature_metrics_per_image(model, output, content, style_targets, params)
    return {k: sum(m[k] for m in per_image) / len(per_image) for k in per_image[0]}


# ---------------------------------------------------------------------------------------------- SSIM
def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_map(x: Tensor, y: Tensor) -> Tensor:
    """SSIM at every valid 11×11 window position of single-channel images [B,1,H,W] → [B,1,H−10,W−10].

    Wang et al. 2004 eq. 13 with the Gaussian window (σ = 1.5) of their reference code and no padding
    ('valid' filtering, as that code does). Images smaller than 11 px use the largest odd window that fits.
    """
    size = min(SSIM_WINDOW, int(x.shape[-2]), int(x.shape[-1]))
    size -= 1 - size % 2
    win = _gaussian_window(size, SSIM_SIGMA, x.dtype, x.device)
    mu_x = F.conv2d(x, win)
    mu_y = F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mu_x**2
    syy = F.conv2d(y * y, win) - mu_y**2
    sxy = F.conv2d(x * y, win) - mu_x * mu_y
    return ((2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)) / ((mu_x**2 + mu_y**2 + SSIM_C1) * (sxx + syy + SSIM_C2))


@torch.no_grad()
def ssim_luminance(output: Tensor, content: Tensor) -> float:
    """Mean SSIM of the luminance Y (BT.601, the Y of YIQ) of output and content; 1 = identical, ≤ 1.

    The content is resized to the output's size when they differ. Batches: mean over images.
    """
    out, ref = _pair(output, content, "content")
    y_out = luminance(out.double()).clamp(0.0, 1.0)
    y_ref = luminance(ref.double()).clamp(0.0, 1.0)
    return float(ssim_map(y_out, y_ref).mean())


# ----------------------------------------------------------------------------------------- colour
def rgb_to_lab(image: Tensor) -> Tensor:
    """[..., 3, H, W] sRGB in [0, 1] → CIELAB (D65): L* in [0, 100], a*, b* roughly in [−128, 128]."""
    x = image.double().clamp(0.0, 1.0)
    linear = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,...jhw->...ihw", _RGB_TO_XYZ.to(x.device), linear)
    white = torch.tensor(_D65_WHITE, dtype=torch.float64, device=x.device).view(3, 1, 1)
    t = xyz / white
    f = torch.where(t > _LAB_EPS, t.clamp_min(0).pow(1 / 3), (_LAB_KAPPA * t + 16) / 116)
    fx, fy, fz = f[..., 0, :, :], f[..., 1, :, :], f[..., 2, :, :]
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Inverse of `rgb_to_lab` (not clamped: out-of-gamut colours give values outside [0, 1])."""
    lab = lab.double()
    fy = (lab[..., 0, :, :] + 16) / 116
    fx = fy + lab[..., 1, :, :] / 500
    fz = fy - lab[..., 2, :, :] / 200
    f = torch.stack([fx, fy, fz], dim=-3)
    t = torch.where(f**3 > _LAB_EPS, f**3, (116 * f - 16) / _LAB_KAPPA)
    white = torch.tensor(_D65_WHITE, dtype=torch.float64, device=lab.device).view(3, 1, 1)
    linear = torch.einsum("ij,...jhw->...ihw", _XYZ_TO_RGB.to(lab.device), t * white)
    return torch.where(
        linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(0).pow(1 / 2.4) - 0.055
    )


def _lab_pixels(image: Tensor) -> Tensor:
    """[3, N] Lab values of one image, subsampled on a regular grid above COLOUR_MAX_PIXELS."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    stride = max(1, math.ceil(math.sqrt(h * w / COLOUR_MAX_PIXELS)))
    return rgb_to_lab(image[:, ::stride, ::stride]).flatten(1)


def _sqrtm_psd(m: Tensor) -> Tensor:
    evals: Tensor
    evecs: Tensor
    evals, evecs = torch.linalg.eigh((m + m.T) / 2)
    return evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T


def gaussian_frechet(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½): the 2-Wasserstein distance² of two Gaussians."""
    s1 = _sqrtm_psd(cov1)
    cross = _sqrtm_psd(s1 @ cov2 @ s1)
    return (mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * torch.trace(cross)


@torch.no_grad()
def colour_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet (2-Wasserstein) distance between Gaussian fits of the CIELAB pixels of `a` and `b`.

    In ΔE*ab units (CIE76): a uniform shift of every pixel by ΔE gives exactly ΔE, 0 means identical
    colour statistics; typical stylised-vs-style values are 5–40. The images need not share a size
    (only colour statistics are compared). Batches of `a`: mean over images, each against b (or b[i]).
    """
    xa = _batched(a, "a")
    xb = _batched(b, "b").to(xa.device)
    if xb.shape[0] not in (1, xa.shape[0]):
        raise ValueError(f"b has batch size {xb.shape[0]}, a has {xa.shape[0]}")
    total = 0.0
    for i in range(xa.shape[0]):
        pa = _lab_pixels(xa[i])
        pb = _lab_pixels(xb[i if xb.shape[0] > 1 else 0])
        d2 = gaussian_frechet(
            pa.mean(1), torch.cov(pa, correction=0), pb.mean(1), torch.cov(pb, correction=0)
        )
        total += math.sqrt(max(float(d2), 0.0))
    return total / xa.shape[0]


@torch.no_grad()
def clipped_fraction(output: Tensor) -> float:
    """Share of channel values within 1/255 of 0 or 1 (blown-out or crushed pixels), in [0, 1]."""
    x = _batched(output, "output")
    clipped = (x <= CLIP_TOLERANCE) | (x >= 1.0 - CLIP_TOLERANCE)
    return float(clipped.float().mean())


def image_metrics(
    output: Tensor, content: Tensor, style: Tensor, preserve_color: PreserveColor | str | bool = PreserveColor.none
) -> dict[str, float]:
    """The weight-free metrics of one result: ssim, colour_dist_style, clipped, and colour_dist_content
    when colour was preserved (then the output's colours should follow the content's, not the style's)."""
    preserved = (
        bool(preserve_color) if isinstance(preserve_color, bool) else PreserveColor(preserve_color) is not PreserveColor.none
    )
    metrics = {
        SSIM: ssim_luminance(output, content),
        COLOUR_DIST_STYLE: colour_distance(output, style),
        CLIPPED: clipped_fraction(output),
    }
    if preserved:
        metrics[COLOUR_DIST_CONTENT] = colour_distance(output, content)
    return metrics


def row_metrics(
    model: VGGFeatures,
    output: Tensor,
    content: Tensor,
    style: Tensor,
    style_targets: StyleTargets | Mapping[str, Tensor],
    params: StyleParams,
) -> dict[str, float]:
    """Every metric of one result ([3,H,W] tensors; the content is resized to the output), for the ledger."""
    return {
        **feature_metrics(model, output, content, style_targets, params),
        **image_metrics(output, content, style, params.preserve_color),
    }


__all__ = [
    "CLIPPED",
    "COLOUR_DIST_CONTENT",
    "COLOUR_DIST_STYLE",
    "CONTENT_DIST",
    "GRAM_ERR",
    "METRIC_NAMES",
    "SSIM",
    "clipped_fraction",
    "colour_distance",
    "feature_metrics",
    "feature_metrics_per_image",
    "gaussian_frechet",
    "image_metrics",
    "lab_to_rgb",
    "layer_metric",
    "rgb_to_lab",
    "row_metrics",
    "ssim_luminance",
    "ssim_map",
]
