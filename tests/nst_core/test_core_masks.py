"""Spatial control: guided statistics against independent formulas, mask propagation, mask errors, and
region masks steering each region toward its own style."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from nst_core.engine import Stylizer
from nst_core.guided import guided_gram, guided_moments, guided_style_layer_loss, guided_w2_layer_loss
from nst_core.losses import feature_moments, style_layer_loss, w2_layer_loss
from nst_core.masks import MAX_REGIONS, MaskError, check_masks, decode_mask, layer_masks, one_hot
from nst_core.params import Pooling, StyleParams
from nst_core.targets import Style, target_cache_key
from nst_core.vgg import VGGFeatures

WHITE = 0xFFFFFF


def _png(array: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.numpy()).save(buf, format="PNG")
    return buf.getvalue()


def _halves(h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.int64)
    mask[:, w // 2 :] = WHITE
    return mask


def test_guided_statistics_match_the_selected_pixels() -> None:
    torch.manual_seed(0)
    f = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    region = torch.rand(2, 6, 7) > 0.4
    masks = torch.stack([region, ~region], 1).double()
    g, mass = guided_gram(f, masks)
    mean, cov, _ = guided_moments(f, masks)
    for b in range(2):
        for r, sel in enumerate((region[b], ~region[b])):
            cols = f[b].flatten(1)[:, sel.flatten()]  # [N, K_r]: only the region's positions
            assert mass[b, r] == sel.sum()
            torch.testing.assert_close(g[b, r], cols @ cols.T / cols.shape[1])
            mu = cols.mean(1)
            torch.testing.assert_close(mean[b, r], mu)
            torch.testing.assert_close(cov[b, r], (cols - mu[:, None]) @ (cols - mu[:, None]).T / cols.shape[1])


def test_one_region_covering_the_image_is_the_unguided_loss() -> None:
    torch.manual_seed(1)
    f = torch.rand(2, 8, 5, 6, dtype=torch.float64)
    full = torch.ones(2, 1, 5, 6, dtype=torch.float64)
    target = torch.rand(8, 4, dtype=torch.float64)
    a = target @ target.T  # a PSD "Gram" with M = 1
    torch.testing.assert_close(
        guided_style_layer_loss(f, full, (a / 20)[None, None]), style_layer_loss(f, a, target_positions=20)
    )
    mu, sigma = feature_moments(torch.rand(1, 8, 4, 4, dtype=torch.float64))
    root = torch.linalg.cholesky(sigma[0] + 1e-3 * torch.eye(8, dtype=torch.float64))  # any matrix works here
    root = root @ root.T
    expected = w2_layer_loss(f, mu[0], sigma[0], root)
    torch.testing.assert_close(guided_w2_layer_loss(f, full, mu[None], sigma[None], root[None, None]), expected)


def test_regions_weigh_by_area_and_empty_regions_weigh_nothing() -> None:
    torch.manual_seed(2)
    f = torch.rand(1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    left = torch.zeros(4, 4, dtype=torch.float64)
    left[:, :1] = 1.0  # a quarter of the image
    masks = torch.stack([left, 1 - left, torch.zeros(4, 4, dtype=torch.float64)])[None]
    targets = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    loss = guided_style_layer_loss(f, masks, targets)
    each = [guided_style_layer_loss(f, masks[:, r : r + 1], targets[:, r : r + 1]) for r in range(2)]
    torch.testing.assert_close(loss, 0.25 * each[0] + 0.75 * each[1])
    # An empty padding region must not poison the gradient of W2's matrix square root.
    mu, cov = torch.rand(1, 3, 4, dtype=torch.float64), torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    cov[:, :2] = torch.eye(4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(guided_w2_layer_loss(f, masks, mu, cov, cov).sum(), f)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("pooling", [Pooling.avg, Pooling.max])
def test_masks_follow_the_feature_maps_through_the_poolings(vgg: VGGFeatures, pooling: Pooling) -> None:
    layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    feats = vgg(torch.rand(1, 3, 37, 53), layers, pooling)
    mask = _halves(37, 53)
    guides = layer_masks(one_hot(mask, [0, WHITE], (37, 53), torch.device("cpu"))[None], layers, pooling)
    for name in layers:
        assert guides[name].shape[-2:] == feats[name].shape[-2:], name
    # Average pooling of a partition stays a partition: every position's weights sum to 1.
    if pooling is Pooling.avg:
        torch.testing.assert_close(guides["relu5_1"].sum(1), torch.ones_like(guides["relu5_1"][:, 0]))


def test_decode_mask_reads_colours_as_regions_and_refuses_soft_masks() -> None:
    rgb = torch.zeros(4, 6, 3, dtype=torch.uint8)
    rgb[:, 3:] = torch.tensor([255, 0, 0], dtype=torch.uint8)
    labels = decode_mask(_png(rgb), name="m.png")
    assert labels.shape == (4, 6) and set(labels.unique().tolist()) == {0, 0xFF0000}
    grey = torch.full((4, 6), 255, dtype=torch.uint8)
    assert set(decode_mask(_png(grey), name="g.png").unique().tolist()) == {WHITE}  # grey g is #gggggg
    ramp = torch.arange(64, dtype=torch.uint8).view(8, 8) * 4  # an anti-aliased edge: 64 colours
    with pytest.raises(MaskError, match=rf"soft.png: 64 distinct colours, more than {MAX_REGIONS}"):
        decode_mask(_png(ramp), name="soft.png")
    with pytest.raises(MaskError, match="bad.png"):
        decode_mask(b"not an image", name="bad.png")


def test_check_masks_names_each_kind_of_mismatch() -> None:
    style = torch.rand(3, 20, 30)
    content_mask = _halves(40, 60)
    with pytest.raises(MaskError, match=r"c.png is 60x30 and its image 60x40"):
        check_masks((40, 60), _halves(30, 60), Style(style), names=("c.png",))
    with pytest.raises(MaskError, match="needs a content mask"):
        check_masks((40, 60), None, Style(style, masks=(_halves(20, 30),)))
    extra = _halves(20, 30)
    extra[0, 0] = 0x00FF00
    with pytest.raises(MaskError, match=r"s.png has region\(s\) #00ff00 that c.png lacks"):
        check_masks((40, 60), content_mask, Style(style, masks=(extra,)), names=("c.png", "s.png"))
    only_black = torch.zeros(20, 30, dtype=torch.int64)
    with pytest.raises(MaskError, match=r"c.png has region\(s\) #ffffff that no style mask has"):
        check_masks((40, 60), content_mask, Style(style, masks=(only_black,)), names=("c.png", "s.png"))
    # A mask at another resolution of the same aspect ratio is fine; so is a style without a mask.
    check_masks((40, 60), _halves(20, 30), Style(style, masks=(_halves(10, 15),)))
    check_masks((40, 60), content_mask, Style(style))


def _texture(rgb: tuple[float, float, float], size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(rgb).view(3, 1, 1).expand(3, size, size)
    return (base + 0.05 * torch.randn(3, size, size, generator=g)).clamp(0, 1)


def test_each_region_moves_toward_its_own_style(stylizer: Stylizer) -> None:
    size = 48
    content = (0.5 + 0.1 * torch.randn(3, size, size, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    red, blue = _texture((0.9, 0.1, 0.1), size, 4), _texture((0.1, 0.1, 0.9), size, 5)
    style = Style(
        (red, blue),
        masks=(torch.zeros(size, size, dtype=torch.int64), torch.full((size, size), WHITE, dtype=torch.int64)),
    )
    params = StyleParams(size=size, steps=40, init="content")
    image = stylizer.stylize([content], style, params, content_masks=[_halves(size, size)])[0].image
    half = size // 2
    for region, own, other in ((image[:, :, :half], red, blue), (image[:, :, half:], blue, red)):
        colour = region.mean((1, 2))
        to_own = (colour - own.mean((1, 2))).norm()
        to_other = (colour - other.mean((1, 2))).norm()
        start = (content.mean((1, 2)) - own.mean((1, 2))).norm()
        assert to_own < 0.5 * start, (colour, own.mean((1, 2)))
        assert to_own < 0.5 * to_other, (colour, to_own, to_other)


def test_masked_and_plain_rows_share_a_batch(stylizer: Stylizer, content_photo: torch.Tensor) -> None:
    size = 32
    contents = [content_photo, content_photo.flip(-1)]
    styles = [Style(_texture((0.8, 0.6, 0.1), size, 6)), Style(_texture((0.2, 0.7, 0.3), size, 7))]
    params = StyleParams(size=size, steps=5)
    mask = _halves(*content_photo.shape[-2:])
    together = stylizer.stylize(contents, styles, params, content_masks=[mask, None])
    alone_masked = stylizer.stylize(contents[:1], styles[:1], params, content_masks=[mask])[0]
    alone_plain = stylizer.stylize(contents[1:], styles[1:], params)[0]
    torch.testing.assert_close(together[0].image, alone_masked.image, atol=1e-4, rtol=0)
    torch.testing.assert_close(together[1].image, alone_plain.image, atol=1e-4, rtol=0)
    # A one-colour mask is one region covering the image: the unguided result, up to rounding.
    whole = torch.zeros_like(mask)
    one_region = stylizer.stylize(contents[:1], styles[:1], params, content_masks=[whole])[0]
    plain = stylizer.stylize(contents[:1], styles[:1], params)[0]
    torch.testing.assert_close(one_region.image, plain.image, atol=1e-4, rtol=0)


def test_style_masks_are_part_of_the_target_cache_key() -> None:
    image = torch.rand(3, 8, 8)
    params = StyleParams(size=8)
    keys = {
        target_cache_key(Style(image, key="s"), (8, 8), params),
        target_cache_key(Style(image, key="s", masks=(_halves(8, 8),)), (8, 8), params),
        target_cache_key(Style(image, key="s", masks=(_halves(8, 8).T.contiguous(),)), (8, 8), params),
    }
    assert len(keys) == 3
    assert target_cache_key(Style(image, key="s", masks=(None,)), (8, 8), params) == target_cache_key(
        Style(image, key="s"), (8, 8), params
    )
