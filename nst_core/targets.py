"""Style descriptions and their targets (Gram matrices; Gaussian moments for W2), computed once and cacheable; used by the engine and its callers' caches."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nst_core.colour import luminance, match_color_histogram, match_luminance
from nst_core.guided import guided_gram, guided_moments
from nst_core.images import resize_long_side
from nst_core.losses import feature_moments, gram, sqrtm_newton_schulz
from nst_core.masks import layer_masks, one_hot, regions_of, style_masks
from nst_core.params import Pooling, PreserveColor, StyleLossKind, StyleParams
from nst_core.precision import conv_precision, resolve_precision
from nst_core.vgg import VGGFeatures

TARGETS_FORMAT = 1
"""Bumped whenever the meaning of stored targets changes, so stale cache entries never match."""


@dataclass(frozen=True, eq=False)
class Style:
    """A style: one image or several blended with weights (Gatys et al. 2017 §4: Gram targets mixed linearly).

    key: the caller's identity for the image(s) (e.g. their URIs); "" disables caching of its targets.
    masks: one [H, W] label map or None per image (`nst_core.masks`): region v of a content mask is styled
    by region v of these; an image without a mask serves every region whole. Part of the cache key.
    """

    images: tuple[Tensor, ...]
    weights: tuple[float, ...] | None = None
    key: str = ""
    masks: tuple[Tensor | None, ...] | None = None

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
        if self.masks is not None:
            masks = tuple(self.masks)
            if len(masks) != len(self.images):
                raise ValueError(f"{len(masks)} style masks for {len(self.images)} style images (None for no mask)")
            object.__setattr__(self, "masks", masks if any(m is not None for m in masks) else None)

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
    moments: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)
    regions: tuple[int, ...] = ()
    """Labels of the style's mask regions (`nst_core.masks`); () when the style has no mask."""
    region_parts: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)
    """Per style layer, with regions: (Â [R, N, N],) for Gram, (μ [R, N], Σ [R, N, N], Σ^½ [R, N, N]) for W2,
    in `regions` order."""

    def to(self, device: torch.device | str) -> StyleTargets:
        if all(g.device == torch.device(device) for g in self._tensors()):
            return self

        def move(parts: dict[str, tuple[Tensor, ...]]) -> dict[str, tuple[Tensor, ...]]:
            return {k: tuple(t.to(device) for t in v) for k, v in parts.items()}

        return StyleTargets(
            {k: v.to(device) for k, v in self.grams.items()},
            self.long_side,
            self.pooling,
            self.preserve_color,
            self.meta,
            move(self.moments),
            self.regions,
            move(self.region_parts),
        )

    def parts(self, layer: str, w2: bool, label: int | None = None) -> tuple[Tensor, ...]:
        """The loss targets of one layer: the whole style's, or region `label`'s (the whole style's when the
        style has no mask, which then serves every region)."""
        if label is None or not self.regions:
            return self.moments[layer] if w2 else (self.grams[layer],)
        r = self.regions.index(label)
        return tuple(t[r] for t in self.region_parts[layer])

    def _tensors(self) -> list[Tensor]:
        parts = (*self.moments.values(), *self.region_parts.values())
        return [*self.grams.values(), *(t for group in parts for t in group)]

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
    return _tensor_digest(content.detach().float())


def _tensor_digest(t: Tensor) -> str:
    array = t.cpu().contiguous().numpy()
    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()


def target_cache_key(
    style: Style, content_shape: tuple[int, int], params: StyleParams, *, content: Tensor | None = None
) -> Hashable:
    """Key under which a cache may store the targets; None when `style.key` is "" (caching disabled).

    Includes everything the targets depend on: the style identity and blend weights, the style size
    (content long side × style_scale), layers, pooling, first-convolution padding, colour mode, precision and
    the style loss (Gram and W2 targets differ), the style's masks; with a colour-preserving mode also the
    content itself (pass the resized `content`). The model identity is added by the Stylizer.
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
    if style.masks is not None:
        key += (tuple(None if m is None else _tensor_digest(m) for m in style.masks),)
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
    masks = style_masks(style)
    labels = tuple(sorted({v for m in masks if m is not None for v in regions_of(m)}))
    regional: dict[str, list[tuple[Tensor, ...]]] = {name: [] for name in layers}
    for image, mask, w in zip(style.images, masks, blend, strict=True):
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
        if labels:
            shape = (int(s.shape[-2]), int(s.shape[-1]))
            if mask is None:  # serves every region whole
                region_masks = torch.ones((1, len(labels), *shape), device=dev)
            else:
                region_masks = one_hot(mask, labels, shape, dev).unsqueeze(0)
            guides = layer_masks(region_masks, layers, params.pooling, model.arch.value)
            for name in layers:
                stats = guided_moments(feats[name], guides[name]) if w2 else guided_gram(feats[name], guides[name])
                regional[name].append(tuple(t[0] for t in stats))  # (Â, mass) or (μ, Σ, mass), per region
    moments: dict[str, tuple[Tensor, ...]] = {}
    if w2:
        for name, pairs in per_image.items():
            mu, sigma = _mixture(torch.tensor(blend, device=dev)[:, None], [(m[None], c[None]) for m, c in pairs])
            moments[name] = (mu[0], sigma[0], sqrtm_newton_schulz(sigma[0]))
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
        regions=labels,
        region_parts={name: _blend_regions(stats, blend, w2) for name, stats in regional.items()} if labels else {},
    )


def _mixture(weights: Tensor, parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The Gaussian of a mixture: μ = Σ_k w_k μ_k, Σ = Σ_k w_k (Σ_k + (μ_k − μ)(μ_k − μ)ᵀ), for [R] groups at
    once (weights [K, R], each part (μ_k [R, N], Σ_k [R, N, N]); the centred form avoids the cancellation of
    Σ_k w_k (Σ_k + μ_k μ_kᵀ) − μμᵀ in float32)."""
    mu = sum(w[:, None] * m for w, (m, _) in zip(weights, parts, strict=True))
    assert isinstance(mu, Tensor)
    sigma = sum(
        w[:, None, None] * (c + (m - mu)[:, :, None] * (m - mu)[:, None, :])
        for w, (m, c) in zip(weights, parts, strict=True)
    )
    assert isinstance(sigma, Tensor)
    return mu, sigma


def _blend_regions(stats: list[tuple[Tensor, ...]], blend: tuple[float, ...], w2: bool) -> tuple[Tensor, ...]:
    """Region r's target mixes the images that have pixels of r at this layer, their blend weights
    renormalised over those images (a region only one image has takes that image's statistics)."""
    mass = torch.stack([s[-1] for s in stats])  # [K, R]
    weights = torch.tensor(blend, device=mass.device)[:, None] * (mass > 0)
    weights = weights / weights.sum(0, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    if not w2:
        a_hat = sum(w[:, None, None] * s[0] for w, s in zip(weights, stats, strict=True))
        assert isinstance(a_hat, Tensor)
        return (a_hat,)
    mu, sigma = _mixture(weights, [(s[0], s[1]) for s in stats])
    return mu, sigma, sqrtm_newton_schulz(sigma)


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
