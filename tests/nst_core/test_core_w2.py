"""The W2 style loss: held against a float64 eigendecomposition, zero at the style, optimisable, per image."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from nst_core.engine import Stylizer
from nst_core.losses import (
    StyleLossW2,
    feature_moments,
    sqrtm_newton_schulz,
    w2_layer_loss,
)
from nst_core.params import W2_NEWTON_SCHULZ_ITERATIONS, Init, StyleLossKind, StyleNormalization, StyleParams
from nst_core.targets import Style, compute_style_targets, target_cache_key
from nst_core.vgg import VGGFeatures

W2 = StyleParams(size=32, steps=12, log_every=4, style_loss=StyleLossKind.w2)
SHALLOW = ("relu1_1", "relu2_1", "relu3_1")
"""Runs of the engine keep to ≤ 256 channels: the 512-channel square roots cost ~30 GFLOP per image and
step, minutes on a 2-core CPU, and the unit tests above already hold them against float64."""


def _features(seed: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """ReLU-like features (non-negative, a non-zero mean), as the style layers produce."""
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(shape, generator=g, dtype=torch.float64) + 0.3).to(dtype)


def _sqrtm_eigh(a: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(a)
    return vectors @ torch.diag_embed(values.clamp_min(0).sqrt()) @ vectors.transpose(-2, -1)


def _w2_reference(fx: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
    """‖μ_x − μ_s‖² + tr(Σ_x + Σ_s − 2 (Σ_s^½ Σ_x Σ_s^½)^½), over N, from the features, in float64."""
    x, s = fx.double().flatten(2), fs.double().flatten(2)
    mx, ms = x.sum(2) / x.shape[2], s.sum(2) / s.shape[2]
    cx = torch.einsum("bik,bjk->bij", x - mx[..., None], x - mx[..., None]) / x.shape[2]
    cs = torch.einsum("bik,bjk->bij", s - ms[..., None], s - ms[..., None]) / s.shape[2]
    root = _sqrtm_eigh(cs)
    cross = _sqrtm_eigh(root @ cx @ root)
    trace = torch.einsum("bii->b", cx + cs - 2 * cross)
    return ((mx - ms).square().sum(1) + trace) / x.shape[1]


def test_newton_schulz_square_root_matches_eigh() -> None:
    f = _features(0, (3, 24, 200))
    _, cov = feature_moments(f)
    root = sqrtm_newton_schulz(cov)
    torch.testing.assert_close(root.double(), _sqrtm_eigh(cov.double()), rtol=0, atol=2e-5 * cov.norm().sqrt().item())
    assert root.dtype == torch.float32


def test_square_root_of_a_rank_deficient_covariance_stays_finite() -> None:
    """Fewer positions than channels (a deep layer of a small image): the null space must not blow up."""
    _, cov = feature_moments(_features(1, (1, 256, 40)))
    root = sqrtm_newton_schulz(cov)
    assert torch.isfinite(root).all()
    assert ((root @ root - cov).norm() / cov.norm()).item() < 1e-3


@pytest.mark.parametrize("per_image", [False, True])
def test_w2_loss_matches_an_eigendecomposition_in_float64(per_image: bool) -> None:
    fx = _features(2, (2, 16, 12, 10))
    fs = _features(3, (2 if per_image else 1, 16, 9, 15)) * 1.5  # another size and scale
    mean, cov = feature_moments(fs)
    expected = _w2_reference(fx, fs.expand(2, -1, -1, -1))
    torch.testing.assert_close(w2_layer_loss(fx, mean, cov).double(), expected, rtol=1e-5, atol=0)
    root = sqrtm_newton_schulz(cov)
    module = StyleLossW2(mean, cov, root) if per_image else StyleLossW2(mean[0], cov[0], root[0])
    torch.testing.assert_close(module(fx), w2_layer_loss(fx, mean, cov, root), rtol=0, atol=0)
    assert expected.min() > 0.01  # the features differ: a loss far from 0, so rtol is meaningful


def test_w2_loss_is_zero_at_the_style_features() -> None:
    fs = _features(4, (1, 32, 16, 16))
    mean, cov = feature_moments(fs)
    scale = cov.diagonal(dim1=-2, dim2=-1).mean().item()  # the loss of a mean-variance mismatch
    assert abs(w2_layer_loss(fs, mean, cov).item()) < 1e-5 * scale


def test_w2_loss_gradient_passes_gradcheck_in_float64() -> None:
    fx = _features(5, (2, 4, 3, 3), torch.float64).requires_grad_(True)
    mean, cov = feature_moments(_features(6, (1, 4, 3, 4), torch.float64))
    assert torch.autograd.gradcheck(lambda f: w2_layer_loss(f, mean, cov), (fx,))


def test_w2_targets_are_moments_and_their_cache_key_differs(vgg: VGGFeatures) -> None:
    style = Style((torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(7)),), key="s")
    gram_targets = compute_style_targets(vgg, style, content_long_side=32, params=W2.replace(style_loss="gram"))
    w2_targets = compute_style_targets(vgg, style, content_long_side=32, params=W2)
    assert not gram_targets.moments
    for name in W2.style_layers:
        torch.testing.assert_close(w2_targets.grams[name], gram_targets.grams[name], rtol=0, atol=0)
        mean, cov, root = w2_targets.moments[name]
        # Σ + μμᵀ is the normalised Gram Â = G/M.
        torch.testing.assert_close(cov + torch.outer(mean, mean), w2_targets.grams[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(root, sqrtm_newton_schulz(cov), rtol=0, atol=0)
    assert target_cache_key(style, (32, 32), W2) != target_cache_key(style, (32, 32), W2.replace(style_loss="gram"))


def test_blended_w2_target_is_the_mixture_of_the_styles(vgg: VGGFeatures) -> None:
    """Two equally weighted styles of one size: the mixture's moments are those of their pooled positions."""
    images = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in (8, 9)]
    targets = compute_style_targets(vgg, Style(tuple(images)), content_long_side=32, params=W2)
    feats = [vgg(image.unsqueeze(0), W2.style_layers, W2.pooling, W2.padding) for image in images]
    for name in W2.style_layers:
        pooled = torch.cat([f[name].flatten(2) for f in feats], dim=2)
        mean, cov = feature_moments(pooled.double().unsqueeze(-1))
        torch.testing.assert_close(targets.moments[name][0].double(), mean[0], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(targets.moments[name][1].double(), cov[0], rtol=1e-4, atol=1e-7)


def test_stylize_with_w2_lowers_the_w2_loss(
    stylizer: Stylizer, content_photo: torch.Tensor, style_photo: torch.Tensor
) -> None:
    params = StyleParams(
        size=48, steps=40, log_every=10, style_loss=StyleLossKind.w2, lr=0.05, style_layers=SHALLOW
    )
    result = stylizer.stylize([content_photo], Style((style_photo,)), params)[0]
    style = result.curve.style
    assert style[-1] < 0.3 * style[0], style
    assert result.final["style"] == pytest.approx(style[-1])
    assert result.final["total"] == pytest.approx(
        result.final["content"] + result.final["style"] + result.final["tv"], rel=1e-5
    )


def test_an_image_in_a_w2_batch_does_not_depend_on_the_others(rows_are_independent: Callable[..., object]) -> None:
    def rand(seed: int, h: int, w: int) -> torch.Tensor:
        return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))

    contents = [rand(1, 30, 40), rand(2, 30, 40), rand(3, 30, 40)]
    styles = [Style((rand(10, 32, 32),)), Style((rand(11, 40, 30),)), Style((rand(12, 32, 32),))]
    params = W2.replace(init=Init.noise, seed=5, tv_weight=1e-3, style_layers=SHALLOW)
    rows_are_independent(
        (contents, styles),
        ([rand(4, 30, 40), rand(5, 30, 40)], [Style((rand(13, 32, 32),)), Style((rand(14, 32, 32),))]),
        params,
    )


def test_w2_refuses_the_gram_only_normalisation() -> None:
    with pytest.raises(ValueError, match="style_normalization=common scales the Gram loss only"):
        StyleParams(style_loss="w2", style_normalization=StyleNormalization.common)
    with pytest.raises(ValueError, match="style_loss must be one of"):
        StyleParams(style_loss="sliced")
    assert StyleParams().style_loss is StyleLossKind.gram
    assert W2_NEWTON_SCHULZ_ITERATIONS == 20
