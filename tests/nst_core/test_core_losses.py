"""Losses against hand computations from the papers' formulas, module/function twins, gradcheck."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nst_core.losses import (
    ContentLoss,
    StyleLoss,
    WeightedSum,
    content_loss,
    gram,
    layer_weights,
    style_layer_loss,
    style_loss,
    total_loss,
    tv_loss,
)
from nst_core.params import Distance, StyleNormalization


def hand_gram(f: torch.Tensor) -> torch.Tensor:
    """G_ij = Σ_k F_ik F_jk with explicit loops over a [N, H, W] map."""
    n = f.shape[0]
    flat = f.reshape(n, -1).tolist()
    return torch.tensor(
        [[sum(a * b for a, b in zip(flat[i], flat[j], strict=True)) for j in range(n)] for i in range(n)],
        dtype=torch.float64,
    )


def test_gram_matches_hand_computation() -> None:
    f = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    expected = hand_gram(f)
    assert expected[0, 0] == 1 + 4 + 9 + 16
    assert expected[0, 1] == 0.5 - 2 + 6 + 0
    got = gram(f.unsqueeze(0))[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected)


def test_gram_is_fp32_under_bf16_autocast() -> None:
    f = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(0)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram(f)
        mm = f @ f.transpose(-1, -2)  # what autocast would give an unprotected matmul
    assert g.dtype == torch.float32
    assert mm.dtype == torch.bfloat16
    ref = f.double().flatten(2) @ f.double().flatten(2).transpose(1, 2)
    torch.testing.assert_close(g.double(), ref, rtol=1e-6, atol=1e-5)


def test_content_loss_half_sum_of_squares_and_absolute() -> None:
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 1.0]]]])
    p = torch.tensor([[[[1.5, 2.0], [1.0, 4.0]]]])
    sq = content_loss(f, p)
    assert sq.shape == (2,)
    assert sq[0].item() == pytest.approx(0.5 * (0.25 + 4.0))
    assert sq[1].item() == pytest.approx(0.5 * (2.25 + 4 + 1 + 9))
    ab = content_loss(f, p, Distance.absolute)
    assert ab[0].item() == pytest.approx(0.5 * (0.5 + 2.0))


def test_style_layer_loss_paper_and_common_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.rand(1, 3, 2, 3, generator=g)
    s = torch.rand(1, 3, 2, 3, generator=g)
    n, m = 3, 6
    G, A = hand_gram(f[0]), hand_gram(s[0])
    paper = ((G - A) ** 2).sum() / (4 * n**2 * m**2)
    common = (((G / (n * m)) - (A / (n * m))) ** 2).mean()
    absolute = (G - A).abs().sum() / (2 * n * m)
    a = gram(s)[0]
    assert style_layer_loss(f, a).item() == pytest.approx(paper.item(), rel=1e-5)
    assert style_layer_loss(f, a, normalization=StyleNormalization.common).item() == pytest.approx(
        common.item(), rel=1e-5
    )
    assert style_layer_loss(f, a, distance=Distance.absolute).item() == pytest.approx(
        absolute.item(), rel=1e-5
    )
    # common = paper · 4 / N² (the extra 1/N_l² per layer, no factor 4)
    assert common.item() == pytest.approx(paper.item() * 4 / n**2, rel=1e-9)


def test_style_target_of_another_size_is_normalised_by_its_own_positions() -> None:
    g = torch.Generator().manual_seed(2)
    f = torch.rand(1, 4, 3, 3, generator=g)
    big = f.repeat(1, 1, 2, 2)  # same statistics, 4× the positions, so 4× the raw Gram
    assert style_layer_loss(f, gram(big)[0], target_positions=36).item() == pytest.approx(0.0, abs=1e-10)
    assert style_layer_loss(f, gram(big)[0]).item() > 0


def test_modules_equal_their_functional_twins() -> None:
    g = torch.Generator().manual_seed(3)
    feats = {"a": torch.rand(2, 4, 3, 3, generator=g), "b": torch.rand(2, 5, 2, 2, generator=g)}
    styles = {"a": torch.rand(1, 4, 4, 4, generator=g), "b": torch.rand(1, 5, 3, 3, generator=g)}
    grams = {k: gram(v)[0] for k, v in styles.items()}
    positions = {k: v.shape[-1] * v.shape[-2] for k, v in styles.items()}
    for norm in StyleNormalization:
        for dist in Distance:
            mod = WeightedSum(
                {k: StyleLoss(grams[k] / positions[k], norm, dist) for k in grams},
                layer_weights(list(grams), (0.3, 0.7)),
            )
            fn = style_loss(
                feats, grams, (0.3, 0.7), target_positions=positions, normalization=norm, distance=dist
            )
            torch.testing.assert_close(mod(feats), fn)
    target = torch.rand(1, 4, 3, 3, generator=g)
    torch.testing.assert_close(
        ContentLoss(target, Distance.absolute)(feats["a"]), content_loss(feats["a"], target, "absolute")
    )


def test_style_loss_default_weights_are_one_over_layer_count() -> None:
    assert layer_weights(["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"], None) == (0.2,) * 5
    g = torch.Generator().manual_seed(4)
    feats = {"a": torch.rand(1, 2, 2, 2, generator=g), "b": torch.rand(1, 2, 2, 2, generator=g)}
    grams = {"a": torch.eye(2), "b": torch.ones(2, 2)}
    expected = 0.5 * style_layer_loss(feats["a"], grams["a"]) + 0.5 * style_layer_loss(feats["b"], grams["b"])
    torch.testing.assert_close(style_loss(feats, grams), expected)


def test_tv_loss_and_total_forms() -> None:
    x = torch.tensor([[[[0.0, 1.0], [3.0, 3.0]]]])
    assert tv_loss(x).item() == pytest.approx((3**2 + 2**2) + (1**2 + 0**2))
    c, s, t = torch.tensor([2.0]), torch.tensor([3.0]), torch.tensor([5.0])
    assert total_loss(c, s, t, alpha=1, beta=10, tv_weight=0.1).item() == pytest.approx(2 + 30 + 0.5)
    convex = total_loss(c, s, t, alpha=0.25, beta=1 - 0.25, tv_weight=0.0).item()
    assert convex == pytest.approx(0.25 * 2 + 0.75 * 3)


def test_gradcheck_float64_on_tiny_net() -> None:
    """The library's own loss code (content + style + tv, both normalisations) has exact analytic gradients."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 5, 3, padding=1)).double()
    net.requires_grad_(False)
    with torch.no_grad():
        target_gram = gram(net(torch.rand(1, 3, 6, 6, dtype=torch.float64)))[0]
        content_feat = torch.rand(1, 5, 5, 5, dtype=torch.float64)
    assert target_gram.dtype == torch.float64

    def objective(x: torch.Tensor) -> torch.Tensor:
        f = net(x)
        return (
            content_loss(f, content_feat)
            + 10 * style_layer_loss(f, target_gram, target_positions=36)
            + 10
            * style_layer_loss(
                f, target_gram, target_positions=36, normalization="common", distance="absolute"
            )
            + tv_loss(x)
        )

    x = torch.rand(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    assert objective(x).dtype == torch.float64
    assert torch.autograd.gradcheck(objective, (x,))
