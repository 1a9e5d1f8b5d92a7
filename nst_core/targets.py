"""Style descriptions and their targets (Gram matrices; Gaussian moments for W2), computed once and cacheable; used by the engine and its callers' caches."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nst_core.colour import luminance, match_color_histogram, match_luminance
from nst_core.images import resize_long_side
from nst_core.losses import feature_moments, gram, sqrtm_newton_schulz
from nst_core.params import Pooling, PreserveColor, StyleLossKind, StyleParams
from nst_core.precision import conv_precision, resolve_precision
from nst_core.vgg import VGGFeatures

TARGETS_FORMAT = 1
"""Bumped whenever the meaning of stored targets changes, so stale cache entries never match."""


@dataclass(frozen=True, eq=False)
class Style:
    """A style: one image or several blended with weights (Gatys et al. 2017 §4: Gram targets mixed linearly).

    key: the caller's identity for the image(s) (e.g. their URIs); "" disables caching of its targets.
    """

    images: tuple[Tensor, ...]
    weights: tuple[float, ...] | None = None
    key: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.images, Tensor):
            object.__setattr__(self, "images", (self.images,))
        else:
            object.__setattr__(self, "images", tuple(self.images))
        if not self.images:
            raise ValueError("a Style needs at least one image")
        for i, image in enumerate(self.images):
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(f"style image {i} must be a [3, H, W] tensor, got {shape}")
        if self.weights is not None:
            weights = tuple(float(w) for w in self.weights)
            if len(weights) != len(self.images):
                raise ValueError(f"{len(weights)} style weights for {len(self.images)} style images")
            if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"style weights must be finite, >= 0 and not all 0, got {weights}")
            object.__setattr__(self, "weights", weights)

    def blend_weights(self) -> tuple[float, ...]:
        """Weights normalised to sum to 1 (equal when none were given)."""
        raw = self.weights if self.weights is not None else tuple(1.0 for _ in self.images)
        total = sum(raw)
        return tuple(w / total for w in raw)


@dataclass(frozen=True, eq=False)
class StyleTargets:
    """Normalised Gram targets Â_l = A_l / M_l (float32, [N_l, N_l]) for one style at one size.

    Dividing by the style's own M_l (its feature-map positions) lets a style image of any size or aspect
    ratio serve as target; with equal sizes it is exactly the paper's E_l (see losses.style_layer_loss).
    For style_loss=w2 also `moments[layer] = (μ_s [N], Σ_s [N, N], Σ_s^½ [N, N])`, the square root
    computed once here; the Gram targets are kept too, for the quality metrics.
    """

    grams: dict[str, Tensor]
    long_side: int
    """Long side (px) the style image(s) were resized to."""
    pooling: Pooling
    preserve_color: PreserveColor
    meta: dict[str, object] = field(default_factory=dict)
    moments: dict[str, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> StyleTargets:
        if all(g.device == torch.device(device) for g in self._tensors()):
            return self
        return StyleTargets(
            {k: v.to(device) for k, v in self.grams.items()},
            self.long_side,
            self.pooling,
            self.preserve_color,
            self.meta,
            {k: (m.to(device), c.to(device), r.to(device)) for k, (m, c, r) in self.moments.items()},
        )

    def _tensors(self) -> list[Tensor]:
        return [*self.grams.values(), *(t for triple in self.moments.values() for t in triple)]

    @property
    def nbytes(self) -> int:
        return sum(g.numel() * g.element_size() for g in self._tensors())


def style_long_side(content_long_side: int, style_scale: float) -> int:
    """Gatys et al. 2017 §4: the style image's size relative to the content's sets the scale of transferred structures."""
    return max(1, round(content_long_side * style_scale))


def needs_content(params: StyleParams) -> bool:
    """Colour-preserving targets are computed from the style recoloured to the content, so they depend on it."""
    return params.preserve_color is not PreserveColor.none


def content_digest(content: Tensor) -> str:
    """Identity of a (resized) content image for cache keys of content-dependent targets."""
    array = content.detach().float().cpu().contiguous().numpy()
    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()


def target_cache_key(
    style: Style, content_shape: tuple[int, int], params: StyleParams, *, content: Tensor | None = None
) -> Hashable:
    """Key under which a cache may store the targets; None when `style.key` is "" (caching disabled).

    Includes everything the targets depend on: the style identity and blend weights, the style size
    (content long side × style_scale), layers, pooling, first-convolution padding, colour mode, precision and
    the style loss (Gram and W2 targets differ); with a colour-preserving mode also the content itself (pass the resized `content`). The model identity is added by the Stylizer.
    """
    if not style.key:
        return None
    key: tuple[object, ...] = (
        "nst-style-targets",
        TARGETS_FORMAT,
        style.key,
        style.weights,
        style_long_side(max(content_shape), params.style_scale),
        tuple(params.style_layers),
        params.pooling.value,
        params.padding.value,
        params.preserve_color.value,
        params.precision.value,
        params.style_loss.value,
    )
    if needs_content(params):
        if content is None:
            raise ValueError(
                f"preserve_color={params.preserve_color.value} targets depend on the content: pass it"
            )
        key += (tuple(content_shape), content_digest(content))
    return key


def prepare_style_image(
    image: Tensor, long_side: int, preserve_color: PreserveColor, content: Tensor | None
) -> Tensor:
    """The style image as the network sees it: resized, and recoloured/decoloured for colour control."""
    s = resize_long_side(image, long_side)
    if preserve_color is PreserveColor.histogram:
        assert content is not None
        s = match_color_histogram(s, content.to(s.device))
    elif preserve_color is PreserveColor.luminance:
        assert content is not None
        y = match_luminance(luminance(s), luminance(content.to(s.device)))
        # Deviation: clamp the matched luminance to [0, 1], the range the optimised luminance is kept in.
        s = y.clamp(0.0, 1.0).expand(3, -1, -1)
    return s


@torch.no_grad()
def compute_style_targets(
    model: VGGFeatures,
    style: Style,
    *,
    content_long_side: int,
    params: StyleParams,
    content: Tensor | None = None,
    device: torch.device | str | None = None,
) -> StyleTargets:
    """Gram targets of `style` for a content whose long side is `content_long_side` (one coarse-to-fine stage).

    Several images: Â = Σ_k w_k Â_k with Σ w_k = 1 (Gatys et al. 2017 §4 mixes styles by their Gram matrices).
    For W2 the blend is the mixture's Gaussian, whose raw moments are those weighted means as well:
    μ = Σ_k w_k μ_k, Σ = Σ_k w_k (Σ_k + (μ_k − μ)(μ_k − μ)ᵀ) (the centred form avoids the cancellation of
    Σ_k w_k (Σ_k + μ_k μ_kᵀ) − μμᵀ in float32). `content` (resized to the stage size) is required for
    preserve_color ≠ none.
    """
    dev = torch.device(device) if device is not None else model.mean.device
    if needs_content(params) and content is None:
        raise ValueError(f"preserve_color={params.preserve_color.value} needs the content image")
    long_side = style_long_side(content_long_side, params.style_scale)
    layers = tuple(params.style_layers)
    grams: dict[str, Tensor] = {}
    per_image: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in layers}
    w2 = params.style_loss is StyleLossKind.w2
    blend = style.blend_weights()
    for image, w in zip(style.images, blend, strict=True):
        s = prepare_style_image(image.to(dev).float(), long_side, params.preserve_color, content)
        with conv_precision(dev, params.precision):
            feats = model(s.unsqueeze(0), layers, params.pooling, params.padding)
        for name in layers:
            f = feats[name]
            a_hat = gram(f)[0] / (f.shape[-2] * f.shape[-1])
            grams[name] = grams[name] + w * a_hat if name in grams else w * a_hat
            if w2:
                mean, cov = feature_moments(f)
                per_image[name].append((mean[0], cov[0]))
    moments: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
    if w2:
        for name, pairs in per_image.items():
            mu = sum(w * m for w, (m, _) in zip(blend, pairs, strict=True))
            assert isinstance(mu, Tensor)
            sigma = sum(
                w * (c + torch.outer(m - mu, m - mu)) for w, (m, c) in zip(blend, pairs, strict=True)
            )
            assert isinstance(sigma, Tensor)
            moments[name] = (mu, sigma, sqrtm_newton_schulz(sigma))
    return StyleTargets(
        grams,
        long_side,
        params.pooling,
        params.preserve_color,
        meta={
            "arch": model.arch.value,
            "weights_source": model.weights_source,
            "precision": resolve_precision(params.precision, dev).value,
        },
        moments=moments,
    )


__all__ = [
    "Style",
    "StyleTargets",
    "compute_style_targets",
    "content_digest",
    "needs_content",
    "prepare_style_image",
    "style_long_side",
    "target_cache_key",
]
