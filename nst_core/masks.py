"""Region masks for spatial control (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style
Transfer", §3): label maps decoded from images, regions matched by colour between a content and its style,
and each region's mask carried to every VGG layer through the network's own poolings. Used by `targets`
(style side), `engine` (content side) and by callers that check a row's masks before batching it.

A mask is a label image: every distinct colour is one region. Region v of the content is styled by
region v of the style image(s); a style image without a mask serves every region whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from nst_core.images import DEFAULT_MAX_PIXELS, ImageError, decode_image
from nst_core.layers import LAYER_NAMES
from nst_core.params import Pooling

if TYPE_CHECKING:
    from nst_core.targets import Style

MAX_REGIONS = 16
"""More distinct colours than this is almost always an anti-aliased or JPEG-compressed mask, not a
segmentation: refused with advice instead of optimising hundreds of one-pixel regions."""
ASPECT_TOLERANCE = 0.01
"""A mask may differ from its image's aspect ratio by this fraction (a pixel of rounding in a resize)."""


class MaskError(ImageError):
    """A mask that cannot guide its image: unreadable, of another shape, or with unmatched regions."""


def label_text(label: int) -> str:
    """A region as users name it: its colour."""
    return f"#{int(label):06x}"


def decode_mask(data: bytes, *, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """[H, W] int64 labels 0xRRGGBB of an image file (grey g reads as #gggggg, so a grey mask and an RGB
    mask of the same colours agree). Decoded at full size: a reduced decode would average labels."""
    try:
        rgb = decode_image(data, name=name, max_pixels=max_pixels)
    except ImageError as exc:
        raise MaskError(f"mask {exc}") from None
    q = (rgb * 255).round().to(torch.int64)
    labels = (q[0] << 16) | (q[1] << 8) | q[2]
    count = int(torch.unique(labels).numel())
    if count > MAX_REGIONS:
        raise MaskError(
            f"mask {name}: {count} distinct colours, more than {MAX_REGIONS} regions; save masks as PNG in "
            "flat colours (no anti-aliasing, not JPEG)"
        )
    return labels


def regions_of(mask: Tensor) -> tuple[int, ...]:
    """The labels of a mask, sorted."""
    return tuple(int(v) for v in torch.unique(mask).tolist())


def check_mask_shape(mask: Tensor, image_hw: tuple[int, int], *, what: str) -> None:
    """A mask must have its image's aspect ratio (any resolution): resized to the image it must cover it."""
    if mask.dim() != 2 or mask.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise MaskError(f"{what} must be an [H, W] integer label map, got {mask.dtype} {tuple(mask.shape)}")
    mh, mw = int(mask.shape[0]), int(mask.shape[1])
    ih, iw = image_hw
    if abs(math.log((mw / mh) / (iw / ih))) > ASPECT_TOLERANCE:
        raise MaskError(
            f"{what} is {mw}x{mh} and its image {iw}x{ih}: resized to the image it would not cover it "
            "(a mask needs its image's aspect ratio)"
        )


def check_masks(
    content_hw: tuple[int, int], content_mask: Tensor | None, style: Style, *, names: Sequence[str] = ()
) -> None:
    """Everything that makes a row's masks unusable, as one MaskError, before the row joins a batch.

    Regions are matched by colour: each content region needs a style region of its colour (or a style image
    without a mask), and each style region a content region. `names`: the content mask's and the style
    masks' names (URIs) for messages; positional words otherwise.
    """
    masks = style_masks(style)
    content_name = names[0] if names else "the content mask"
    style_names = list(names[1:]) or [f"style mask {i}" for i in range(len(masks))]
    if content_mask is None:
        if any(m is not None for m in masks):
            raise MaskError("a style mask needs a content mask: regions are matched between the two")
        return
    check_mask_shape(content_mask, content_hw, what=content_name)
    wanted = set(regions_of(content_mask))
    offered: set[int] = set()
    whole = False
    for i, (image, mask) in enumerate(zip(style.images, masks, strict=True)):
        if mask is None:
            whole = True
            continue
        name = style_names[i] if i < len(style_names) else f"style mask {i}"
        check_mask_shape(mask, (int(image.shape[-2]), int(image.shape[-1])), what=name)
        labels = set(regions_of(mask))
        extra = labels - wanted
        if extra:
            raise MaskError(
                f"{name} has region(s) {_labels(extra)} that {content_name} lacks "
                f"(content regions: {_labels(wanted)}); regions are matched by colour"
            )
        offered |= labels
    missing = wanted - offered
    if missing and not whole:
        raise MaskError(
            f"{content_name} has region(s) {_labels(missing)} that no style mask has "
            f"(style regions: {_labels(offered)}); regions are matched by colour"
        )


def style_masks(style: Style) -> tuple[Tensor | None, ...]:
    return style.masks if style.masks is not None else tuple(None for _ in style.images)


def _labels(values: set[int]) -> str:
    return ", ".join(label_text(v) for v in sorted(values))


def one_hot(mask: Tensor, labels: Sequence[int], shape: tuple[int, int], device: torch.device) -> Tensor:
    """[R, H, W] float32 region masks at `shape` (nearest-neighbour, so labels never blend), one per label
    in `labels` order; a label the mask lacks gets an empty region."""
    m = mask.to(device=device, dtype=torch.float32)[None, None]
    m = F.interpolate(m, size=shape, mode="nearest-exact")[0, 0].to(torch.int64)
    return torch.stack([(m == int(v)).float() for v in labels])


def layer_masks(masks: Tensor, layers: Sequence[str], pooling: Pooling, arch: str = "vgg19") -> dict[str, Tensor]:
    """[B, R, H, W] masks at the input size → each layer's [B, R, h, w], pooled exactly as the features were.

    Gatys et al. 2017 §3 propagate the guidance channels to each layer; this uses the network's own pooling
    (2×2, stride 2; average or max as `pooling`), so a mask stays aligned with its feature map at every depth.
    Convolutions keep their size (padding 1) and are not applied to masks.
    """
    names = LAYER_NAMES[arch]
    pools = {name: sum(1 for n in names[: i + 1] if n.startswith("pool")) for i, name in enumerate(names)}
    out: dict[str, Tensor] = {}
    current, depth = masks, 0
    for name in sorted(layers, key=lambda n: pools[n]):
        while depth < pools[name]:
            current = (F.avg_pool2d if pooling is Pooling.avg else F.max_pool2d)(current, kernel_size=2, stride=2)
            depth += 1
        out[name] = current
    return out


def region_weights(mass: Tensor) -> Tensor:
    """[B, R] share of each region in its image's (propagated) mask mass: a region's loss counts as much as
    its area, so one region covering the image gives exactly the unguided loss."""
    return mass / mass.sum(-1, keepdim=True).clamp_min(torch.finfo(mass.dtype).tiny)


__all__ = [
    "MAX_REGIONS",
    "MaskError",
    "check_mask_shape",
    "check_masks",
    "decode_mask",
    "label_text",
    "layer_masks",
    "one_hot",
    "region_weights",
    "regions_of",
    "style_masks",
]
