"""nst_core.metrics on constructed cases, each compared with an independent formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nst_core.metrics import (
    clipped_fraction,
    colour_distance,
    feature_metrics,
    feature_metrics_per_image,
    image_metrics,
    lab_to_rgb,
    rgb_to_lab,
    row_metrics,
    ssim_luminance,
)
from nst_core.params import Pooling, PreserveColor, StyleParams
from nst_core.targets import Style, compute_style_targets
from nst_core.vgg import VGGFeatures

PARAMS = StyleParams(size=32, steps=1)


def smooth_image(seed: int, shape: tuple[int, int] = (32, 40)) -> torch.Tensor:
    """A photo-like [3,H,W] image: smooth random gradients (not noise), values well inside [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((1, 3, 4, 5), generator=g)
    image = torch.nn.functional.interpolate(low, size=shape, mode="bicubic", align_corners=False)[0]
    return (0.15 + 0.7 * image).clamp(0, 1)


# ------------------------------------------------------------------------------------------ features
def test_output_equal_to_content_has_zero_content_distance(vgg: VGGFeatures) -> None:
    content = smooth_image(1)
    style = smooth_image(2)
    targets = compute_style_targets(vgg, Style(images=(style,)), content_long_side=40, params=PARAMS)
    m = feature_metrics(vgg, content.clone(), content, targets, PARAMS)
    assert m["content_dist"] == 0.0
    assert set(m) == {"content_dist", "gram_err", *(f"gram_err_{n}" for n in PARAMS.style_layers)}
    assert all(m[f"gram_err_{n}"] > 0.01 for n in PARAMS.style_layers)  # content is not the style


def test_output_equal_to_style_has_zero_gram_error(vgg: VGGFeatures) -> None:
    style = smooth_image(3)
    targets = compute_style_targets(vgg, Style(images=(style,)), content_long_side=40, params=PARAMS)
    m = feature_metrics(vgg, style.clone(), smooth_image(4), targets, PARAMS)
    for name in PARAMS.style_layers:
        assert m[f"gram_err_{name}"] == pytest.approx(0.0, abs=1e-6)
    assert m["gram_err"] == pytest.approx(0.0, abs=1e-6)
    assert m["content_dist"] > 0.01


def test_feature_metrics_match_an_independent_formula(vgg: VGGFeatures) -> None:
    output, content, style = smooth_image(5), smooth_image(6), smooth_image(7, (24, 36))
    params = PARAMS.replace(style_layers=("relu1_1", "relu3_1"), style_layer_weights=(3.0, 1.0))
    targets = compute_style_targets(vgg, Style(images=(style,)), content_long_side=40, params=params)
    m = feature_metrics(vgg, output, content, targets, params)

    with torch.no_grad():
        fo = vgg(output[None], ("relu4_2", "relu1_1", "relu3_1"), "avg")
        fc = vgg(content[None], ("relu4_2",), "avg")
        fs = vgg(torch.nn.functional.interpolate(style[None], size=(27, 40), mode="bilinear", antialias=True,
                                                 align_corners=False).clamp(0, 1), ("relu1_1", "relu3_1"), "avg")
    f, p = fo["relu4_2"].double(), fc["relu4_2"].double()
    assert m["content_dist"] == pytest.approx(float(torch.norm(f - p) / torch.norm(p)), rel=1e-6)
    expected = {}
    for name in ("relu1_1", "relu3_1"):
        a = fo[name][0].double().reshape(fo[name].shape[1], -1)
        b = fs[name][0].double().reshape(fs[name].shape[1], -1)
        g_hat = a @ a.T / a.shape[1]
        a_hat = b @ b.T / b.shape[1]
        expected[name] = float(torch.norm(g_hat - a_hat) / torch.norm(a_hat))
        assert m[f"gram_err_{name}"] == pytest.approx(expected[name], rel=1e-4)
    assert m["gram_err"] == pytest.approx(0.75 * expected["relu1_1"] + 0.25 * expected["relu3_1"], rel=1e-4)


def test_batched_feature_metrics_equal_single_image_ones(vgg: VGGFeatures) -> None:
    outputs = torch.stack([smooth_image(8), smooth_image(9)])
    content = smooth_image(10)
    targets = compute_style_targets(vgg, Style(images=(smooth_image(11),)), content_long_side=40, params=PARAMS)
    per_image = feature_metrics_per_image(vgg, outputs, content, targets, PARAMS)
    for i in range(2):
        single = feature_metrics(vgg, outputs[i], content, targets, PARAMS)
        assert per_image[i] == pytest.approx(single, rel=1e-5)
    assert per_image[0]["content_dist"] != pytest.approx(per_image[1]["content_dist"])


def test_targets_with_another_pooling_are_refused(vgg: VGGFeatures) -> None:
    targets = compute_style_targets(vgg, Style(images=(smooth_image(1),)), content_long_side=40, params=PARAMS)
    with pytest.raises(ValueError, match="avg pooling, params use max"):
        feature_metrics(vgg, smooth_image(2), smooth_image(3), targets, PARAMS.replace(pooling=Pooling.max))


# ---------------------------------------------------------------------------------------------- SSIM
def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 by definition: weighted statistics of every valid 11×11 window, one at a time."""
    r = np.arange(11) - 5.0
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a, b = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            c1, c2 = 0.01**2, 0.03**2
            values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_of_identical_images_is_one() -> None:
    image = smooth_image(12)
    assert ssim_luminance(image, image.clone()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_the_definition_window_by_window() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((3, 18, 23), generator=g, dtype=torch.float64)
    y = (0.6 * x + 0.4 * torch.rand((3, 18, 23), generator=g, dtype=torch.float64)).clamp(0, 1)
    weights = np.array([0.299, 0.587, 0.114])
    lx = np.einsum("c,chw->hw", weights, x.numpy())
    ly = np.einsum("c,chw->hw", weights, y.numpy())
    assert ssim_luminance(y, x) == pytest.approx(reference_ssim(ly, lx), rel=1e-9)
    assert 0.0 < ssim_luminance(y, x) < 0.99


def test_ssim_of_flat_images_is_the_luminance_term() -> None:
    a, b = 0.3, 0.7
    expected = (2 * a * b + 0.01**2) / (a**2 + b**2 + 0.01**2)  # zero variances: structure term is 1
    assert ssim_luminance(torch.full((3, 16, 16), b, dtype=torch.float64), torch.full((3, 16, 16), a, dtype=torch.float64)) == pytest.approx(expected, rel=1e-9)


def test_ssim_resizes_the_content_to_the_output() -> None:
    image = smooth_image(13, (64, 80))
    small = torch.nn.functional.interpolate(image[None], size=(32, 40), mode="bilinear", antialias=True,
                                            align_corners=False)[0]
    assert ssim_luminance(small, image) == pytest.approx(1.0, abs=1e-6)


# -------------------------------------------------------------------------------------------- colour
@pytest.mark.parametrize(
    ("rgb", "lab"),
    [  # CIELAB (D65) of the sRGB primaries, as published (e.g. Lindbloom's calculator)
        ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
        ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
        ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
    ],
)
def test_rgb_to_lab_reference_values(rgb: tuple[float, float, float], lab: tuple[float, float, float]) -> None:
    got = rgb_to_lab(torch.tensor(rgb, dtype=torch.float64).view(3, 1, 1)).flatten().tolist()
    assert got == pytest.approx(list(lab), abs=2e-3)
    back = lab_to_rgb(torch.tensor(lab, dtype=torch.float64).view(3, 1, 1)).flatten().tolist()
    assert back == pytest.approx(list(rgb), abs=1e-4)


def lab_image(seed: int, shape: tuple[int, int] = (24, 24)) -> torch.Tensor:
    """In-gamut Lab pixels around a mid grey (so shifted versions stay in gamut)."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.empty((3, *shape), dtype=torch.float64)
    lab[0] = 50 + 10 * torch.rand(shape, generator=g, dtype=torch.float64)
    lab[1] = -5 + 10 * torch.rand(shape, generator=g, dtype=torch.float64)
    lab[2] = -5 + 10 * torch.rand(shape, generator=g, dtype=torch.float64)
    return lab


def test_shifting_a_star_by_k_gives_colour_distance_k() -> None:
    lab = lab_image(0)
    shifted = lab.clone()
    shifted[1] += 7.5
    a, b = lab_to_rgb(lab), lab_to_rgb(shifted)
    assert 0.0 < float(a.min()) and float(b.max()) < 1.0  # in gamut: nothing clipped
    assert colour_distance(b, a) == pytest.approx(7.5, abs=1e-6)
    assert colour_distance(a, a.clone()) == pytest.approx(0.0, abs=1e-5)


def test_scaling_lightness_spread_gives_the_gaussian_w2_distance() -> None:
    lab = lab_image(1)
    lab[1:] = 0.0
    scaled = lab.clone()
    mean = lab[0].mean()
    scaled[0] = mean + 0.5 * (lab[0] - mean)
    sigma = float(lab[0].std(unbiased=False))
    # 1-D Gaussians with equal means: W2 = |σ₁ − σ₂|.
    assert colour_distance(lab_to_rgb(scaled), lab_to_rgb(lab)) == pytest.approx(0.5 * sigma, rel=1e-6)


def test_colour_distance_needs_no_equal_sizes() -> None:
    lab = lab_image(2, (16, 16))
    big = lab.repeat(1, 2, 3)  # the same pixels, six times each: the same Gaussian fit
    assert colour_distance(lab_to_rgb(big), lab_to_rgb(lab)) == pytest.approx(0.0, abs=1e-5)


# ----------------------------------------------------------------------------------------- clipping
def test_clipped_fraction_counts_values_within_one_level_of_the_ends() -> None:
    x = torch.full((3, 4, 4), 0.5)
    flat = x.view(-1)
    flat[:7] = 0.0
    flat[7:12] = 1.0
    flat[12:15] = 1 / 255  # within one level: counted
    flat[15] = 1 - 1 / 255  # counted
    flat[16:18] = 2 / 255  # not counted
    assert clipped_fraction(x) == pytest.approx(16 / 48)
    assert clipped_fraction(torch.stack([x, torch.full((3, 4, 4), 0.5)])) == pytest.approx(8 / 48)


# --------------------------------------------------------------------------------------------- rows
def test_image_metrics_add_content_colour_only_when_colour_is_preserved() -> None:
    output, content, style = smooth_image(20), smooth_image(21), smooth_image(22, (20, 20))
    plain = image_metrics(output, content, style, PreserveColor.none)
    assert set(plain) == {"ssim", "colour_dist_style", "clipped"}
    kept = image_metrics(output, content, style, "luminance")
    assert kept["colour_dist_content"] == pytest.approx(colour_distance(output, content))
    assert kept["colour_dist_style"] == pytest.approx(colour_distance(output, style))
    assert math.isfinite(kept["ssim"]) and kept["clipped"] == 0.0


def test_row_metrics_combine_both_families(vgg: VGGFeatures) -> None:
    output, content, style = smooth_image(23), smooth_image(24, (48, 60)), smooth_image(25)
    targets = compute_style_targets(vgg, Style(images=(style,)), content_long_side=40, params=PARAMS)
    m = row_metrics(vgg, output, content, style, targets, PARAMS)
    assert {"content_dist", "gram_err", "ssim", "colour_dist_style", "clipped"} <= set(m)
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
