"""Shared fixtures of the engine tests: one seeded random-weight VGG19 per session and the photo-like pair."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from nst_core.engine import ImageResult, Stylizer
from nst_core.images import decode_image
from nst_core.params import StyleParams
from nst_core.targets import Style
from nst_core.vgg import VGGFeatures, load_vgg

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def vgg() -> VGGFeatures:
    return load_vgg("vgg19", "random:0")


@pytest.fixture()
def stylizer(vgg: VGGFeatures) -> Stylizer:
    return Stylizer(vgg)


Rows = tuple[list[torch.Tensor], list[Style]]


@pytest.fixture()
def rows_are_independent(stylizer: Stylizer) -> Callable[..., tuple[list[ImageResult], list[ImageResult]]]:
    """Run `batch` (contents, styles), then the same batch with rows 1… replaced by `replacement` (of the
    same shapes), and assert row 0 came out the same bit for bit: kernels are chosen by shape, so any change
    in row 0 could only be the engine mixing images. Returns both runs' results for further checks."""

    def check(
        batch: Rows, replacement: Rows, params: StyleParams
    ) -> tuple[list[ImageResult], list[ImageResult]]:
        (contents, styles), (new_contents, new_styles) = batch, replacement
        batched = stylizer.stylize(contents, styles, params)
        others = stylizer.stylize([contents[0], *new_contents], [styles[0], *new_styles], params)
        torch.testing.assert_close(others[0].image, batched[0].image, atol=0, rtol=0)
        assert others[0].curve.total == batched[0].curve.total
        assert others[0].steps_run == batched[0].steps_run
        assert others[0].style_weights == batched[0].style_weights
        assert not torch.allclose(others[1].image, batched[1].image)  # the replacement did change row 1
        return batched, others

    return check


@pytest.fixture(scope="session")
def content_photo() -> torch.Tensor:
    return decode_image(DATA / "content_landscape.png")


@pytest.fixture(scope="session")
def style_photo() -> torch.Tensor:
    return decode_image(DATA / "style_strokes.png")


@pytest.fixture(scope="session")
def vgg19_features_file(vgg: VGGFeatures, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random:0 features saved as a features-only state dict (what `--weights PATH` accepts)."""
    path = tmp_path_factory.mktemp("weights") / "vgg19_random0.pth"
    torch.save(vgg.features.state_dict(), path)
    return path
