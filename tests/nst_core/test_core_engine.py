"""Optimisation: batching equals single runs, convergence on a photo-like pair, colour control, caching, schedule."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from nst_core.colour import match_color_histogram, rgb_to_yiq
from nst_core.engine import StepReport, Stylizer
from nst_core.params import Init, OptimizerName, Precision, PreserveColor, StyleParams
from nst_core.targets import Style, compute_style_targets, target_cache_key

SMALL = StyleParams(size=32, steps=12, log_every=4)


def _rand(seed: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("optimizer", [OptimizerName.adam, OptimizerName.gd])
def test_an_image_in_a_batch_does_not_depend_on_the_others(
    stylizer: Stylizer, rows_are_independent: Callable[..., object], optimizer: OptimizerName
) -> None:
    contents = [_rand(1, 30, 40), _rand(2, 30, 40), _rand(3, 60, 80)]
    styles = [Style((_rand(10, 32, 32),)), Style((_rand(11, 40, 30),)), Style((_rand(12, 32, 32),))]
    lr = 0.02 if optimizer is OptimizerName.adam else 1e-3
    params = SMALL.replace(optimizer=optimizer, init=Init.noise, seed=5, lr=lr, tv_weight=1e-3)
    # The same batch shape with the other two rows replaced: equal bit for bit, with the default kernels.
    rows_are_independent(
        (contents, styles),
        ([_rand(4, 30, 40), _rand(5, 45, 60)], [Style((_rand(13, 32, 32),)), Style((_rand(14, 32, 32),))]),
        params,
    )
    # Against a run alone the batch size itself changes kernels (oneDNN's choice of convolution, a threaded
    # BLAS splitting one image's sums where a batch is split by image), so rounding differs: ~1e-7 per step
    # for gradient descent, amplified by Adam where a gradient is near 0 (its step is ±lr whatever the
    # size). A loss that mixed or rescaled images by the batch would put gradient descent off by far more.
    # oneDNN is switched off here (on an AMD EPYC it left one image of three 8e-5 off after 12 Adam steps).
    atol = 1e-3 if optimizer is OptimizerName.adam else 1e-5
    mkldnn, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
    try:
        batched = stylizer.stylize(contents, styles, params)
        for i in range(3):
            alone = stylizer.stylize([contents[i]], [styles[i]], params)[0]
            torch.testing.assert_close(batched[i].image, alone.image, atol=atol, rtol=0)
            assert batched[i].curve.step == alone.curve.step == [0, 4, 8, 12]
            torch.testing.assert_close(
                torch.tensor(batched[i].curve.total), torch.tensor(alone.curve.total), rtol=1e-5, atol=0
            )
    finally:
        torch.backends.mkldnn.enabled = mkldnn
    assert not torch.allclose(batched[0].image, batched[1].image)


def test_loss_halves_in_100_steps_on_photo_pair(
    stylizer: Stylizer, content_photo: torch.Tensor, style_photo: torch.Tensor
) -> None:
    params = StyleParams(size=64, steps=100, log_every=25)
    result = stylizer.stylize([content_photo], Style((style_photo,)), params)[0]
    curve = result.curve
    assert curve.step == [0, 25, 50, 75, 100]
    assert curve.total[-1] <= 0.5 * curve.total[0], curve.total
    assert result.final["total"] == pytest.approx(curve.total[-1])
    assert result.final["total"] == pytest.approx(
        result.final["content"] + result.final["style"] + result.final["tv"], rel=1e-5
    )
    assert result.image.shape == (3, 48, 64) and result.image.device.type == "cpu"
    assert 0 <= result.image.min() and result.image.max() <= 1
    assert result.steps_run == 100


def _chroma_gap(image: torch.Tensor, content: torch.Tensor) -> float:
    return (rgb_to_yiq(image)[1:] - rgb_to_yiq(content)[1:]).abs().mean().item()


def test_luminance_transfer_keeps_content_chroma(
    stylizer: Stylizer, content_photo: torch.Tensor, style_photo: torch.Tensor
) -> None:
    base = StyleParams(size=48, steps=40, log_every=20, init=Init.noise, style_weight=1e7)
    content = torch.nn.functional.interpolate(
        content_photo[None], size=(36, 48), mode="bilinear", antialias=True
    )[0]
    plain = stylizer.stylize([content_photo], Style((style_photo,)), base)[0]
    kept = stylizer.stylize(
        [content_photo], Style((style_photo,)), base.replace(preserve_color=PreserveColor.luminance)
    )[0]
    gap_plain, gap_kept = _chroma_gap(plain.image, content), _chroma_gap(kept.image, content)
    assert gap_kept < 0.01, gap_kept  # I, Q equal up to 8-bit-free float error and [0,1] clipping
    assert gap_plain > 5 * gap_kept, (gap_plain, gap_kept)
    # ...while the luminance did change (started from noise, it is not the content's)
    assert (rgb_to_yiq(kept.image)[0] - rgb_to_yiq(content)[0]).abs().mean() > 0.01


def test_histogram_matching_moves_style_colours_to_content() -> None:
    g = torch.Generator().manual_seed(0)
    content = torch.rand(3, 20, 20, generator=g) * torch.tensor([0.3, 0.6, 0.2]).view(3, 1, 1) + 0.2
    style = torch.rand(3, 24, 24, generator=g) * torch.tensor([0.2, 0.2, 0.5]).view(3, 1, 1) + torch.tensor(
        [0.1, 0.3, 0.4]
    ).view(3, 1, 1)
    out = match_color_histogram(style, content)
    c, o = content.flatten(1).double(), out.flatten(1).double()
    torch.testing.assert_close(o.mean(1), c.mean(1), atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.cov(o, correction=0), torch.cov(c, correction=0), atol=2e-3, rtol=0)


def test_cache_hits_and_content_dependent_keys(stylizer: Stylizer) -> None:
    style = Style((_rand(20, 32, 32),), key="s3://bucket/starry.jpg")
    contents = [_rand(21, 32, 32), _rand(22, 32, 32)]
    params = SMALL.replace(steps=2)
    cache: dict = {}
    first = stylizer.stylize(contents, style, params, cache=cache)
    assert (stylizer.cache_hits, stylizer.cache_misses, len(cache)) == (0, 1, 1)
    second = stylizer.stylize(contents, style, params, cache=cache)
    assert (stylizer.cache_hits, stylizer.cache_misses) == (1, 1)
    torch.testing.assert_close(first[0].image, second[0].image)
    stylizer.stylize(contents, style, params.replace(style_scale=0.5), cache=cache)
    assert stylizer.cache_misses == 2
    hist = params.replace(preserve_color=PreserveColor.histogram)
    stylizer.stylize(contents, style, hist, cache=cache)
    assert stylizer.cache_misses == 4  # one per content: the recoloured style depends on it
    stylizer.stylize(contents[:1], style, hist, cache=cache)
    assert stylizer.cache_hits == 2
    unkeyed = Style(style.images)
    stylizer.stylize(contents, unkeyed, params, cache=cache)
    assert (stylizer.cache_hits, stylizer.cache_misses) == (2, 4)
    with pytest.raises(ValueError, match="depend on the content"):
        target_cache_key(style, (32, 32), hist)


def test_blended_styles_average_gram_targets(vgg, stylizer: Stylizer) -> None:  # type: ignore[no-untyped-def]
    a, b = _rand(30, 32, 32), _rand(31, 48, 32)
    params = SMALL
    ta = compute_style_targets(vgg, Style((a,)), content_long_side=32, params=params)
    tb = compute_style_targets(vgg, Style((b,)), content_long_side=32, params=params)
    tab = compute_style_targets(vgg, Style((a, b), weights=(3.0, 1.0)), content_long_side=32, params=params)
    for layer in params.style_layers:
        torch.testing.assert_close(tab.grams[layer], 0.75 * ta.grams[layer] + 0.25 * tb.grams[layer])
        assert tab.grams[layer].dtype == torch.float32
    scaled = compute_style_targets(
        vgg, Style((a,)), content_long_side=32, params=params.replace(style_scale=2.0)
    )
    assert scaled.long_side == 64 and ta.long_side == 32
    with pytest.raises(ValueError, match="2 style weights for 1"):
        Style((a,), weights=(1.0, 2.0))


def test_early_stop_per_image(stylizer: Stylizer) -> None:
    contents = [_rand(40, 32, 32), _rand(41, 32, 32)]
    styles = [Style((contents[0],)), Style((_rand(42, 32, 32),))]  # image 0 starts at zero style loss
    # plain gradient descent: a zero loss has a zero gradient, so image 0 stops at the first check
    params = StyleParams(
        size=32,
        steps=40,
        log_every=5,
        early_stop=0.03,
        content_weight=0.0,
        optimizer=OptimizerName.gd,
        lr=0.1,
    )
    out = stylizer.stylize(contents, styles, params)
    assert (out[0].steps_run, out[1].steps_run) == (5, 40)
    alone = stylizer.stylize(contents[:1], styles[:1], params)[0]
    assert alone.steps_run == out[0].steps_run
    torch.testing.assert_close(alone.image, out[0].image, atol=1e-5, rtol=0)
    assert out[0].curve.step[-1] == out[0].steps_run
    assert len(out[0].curve.step) < len(out[1].curve.step)


def test_lbfgs_runs_per_image_and_converges(stylizer: Stylizer) -> None:
    contents = [_rand(50, 32, 32), _rand(51, 32, 32)]
    params = SMALL.replace(optimizer=OptimizerName.lbfgs, steps=10, log_every=5)
    out = stylizer.stylize(contents, Style((_rand(52, 32, 32),)), params)
    alone = stylizer.stylize(contents[1:], Style((_rand(52, 32, 32),)), params)[0]
    torch.testing.assert_close(out[1].image, alone.image, atol=1e-5, rtol=0)
    assert out[0].curve.total[-1] < 0.5 * out[0].curve.total[0]


def test_inits(stylizer: Stylizer) -> None:
    content, style_img = _rand(60, 32, 32), _rand(61, 32, 32)
    zero = SMALL.replace(steps=1, lr=1e-9)
    from_content = stylizer.stylize([content], Style((style_img,)), zero)[0].image
    torch.testing.assert_close(from_content, content, atol=1e-4, rtol=0)
    from_style = stylizer.stylize([content], Style((style_img,)), zero.replace(init=Init.style))[0].image
    torch.testing.assert_close(from_style, style_img, atol=1e-4, rtol=0)
    given = _rand(62, 16, 16)
    from_given = stylizer.stylize([content], Style((style_img,)), zero, init_images=[given])[0].image
    torch.testing.assert_close(
        from_given,
        torch.nn.functional.interpolate(given[None], size=(32, 32), mode="bilinear")[0],
        atol=1e-4,
        rtol=0,
    )
    n1 = stylizer.stylize([content], Style((style_img,)), zero.replace(init=Init.noise, seed=3))[0].image
    n2 = stylizer.stylize([content], Style((style_img,)), zero.replace(init=Init.noise, seed=3))[0].image
    n3 = stylizer.stylize([content], Style((style_img,)), zero.replace(init=Init.noise, seed=4))[0].image
    assert torch.equal(n1, n2) and not torch.allclose(n1, n3)


def test_coarse_to_fine_schedule(stylizer: Stylizer) -> None:
    reports: list[StepReport] = []
    params = SMALL.replace(schedule=((24, 6), (40, 4)), log_every=3)
    content = _rand(70, 30, 40)
    result = stylizer.stylize([content], Style((_rand(71, 32, 32),)), params, callback=reports.append)[0]
    assert result.image.shape == (3, 30, 40)
    assert result.steps_run == 10
    assert result.curve.stage == [0, 0, 0, 1, 1, 1]
    assert result.curve.step == [0, 3, 6, 6, 9, 10]
    assert [(r.stage, r.step, r.steps) for r in reports][-1] == (1, 4, 4) and len(reports) == 10
    # stage 2 starts from stage 1's result, so its first loss is below a fresh start at that size
    fresh = stylizer.stylize([content], Style((_rand(71, 32, 32),)), SMALL.replace(size=40, steps=1))[0]
    assert result.curve.total[3] < fresh.curve.total[0]


def test_convex_form_and_bf16(stylizer: Stylizer) -> None:
    content, style = _rand(80, 32, 32), Style((_rand(81, 32, 32),))
    probe = SMALL.replace(steps=1, init=Init.noise)
    weighted = stylizer.stylize([content], style, probe)[0]
    raw_c = weighted.curve.content[0] / probe.content_weight
    raw_s = weighted.curve.style[0] / probe.style_weight
    convex = stylizer.stylize([content], style, probe.replace(content_ratio=0.3))[0]
    assert convex.curve.total[0] == pytest.approx(0.3 * raw_c + 0.7 * raw_s, rel=1e-5)
    bf16 = stylizer.stylize([content], style, probe.replace(precision=Precision.bf16))[0]
    assert bf16.curve.total[0] == pytest.approx(weighted.curve.total[0], rel=0.1)
    assert bf16.image.dtype == torch.float32


def test_bad_inputs(stylizer: Stylizer) -> None:
    with pytest.raises(ValueError, match=r"content 0 must be a \[3, H, W\]"):
        stylizer.stylize([torch.rand(1, 3, 8, 8)], Style((_rand(1, 8, 8),)), SMALL)
    with pytest.raises(ValueError, match="2 styles for 1 contents"):
        stylizer.stylize([_rand(1, 8, 8)], [Style((_rand(1, 8, 8),))] * 2, SMALL)
