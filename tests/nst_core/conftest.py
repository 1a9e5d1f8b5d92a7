"""Shared fixtures of the engine tests: one seeded random-weight VGG19 per session and the photo-like pair."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nst_core.engine import Stylizer
from nst_core.images import decode_image
from nst_core.vgg import VGGFeatures, load_vgg

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def vgg() -> VGGFeatures:
    return load_vgg("vgg19", "random:0")


@pytest.fixture()
def stylizer(vgg: VGGFeatures) -> Stylizer:
    return Stylizer(vgg)


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
