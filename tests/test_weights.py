"""Weights from fsspec URIs: fetched once into the node cache, checked by hash, never replaced by random ones."""

import hashlib
import io

import fsspec
import pytest
import torch
import torchvision
from pipeline.store.weights import fetch_weights, load_model

from nst_core.vgg import WeightsError, load_vgg


@pytest.fixture(scope="module")
def state_bytes() -> bytes:
    torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save(torchvision.models.vgg19().state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def memory_weights(state_bytes: bytes, monkeypatch, tmp_path):
    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path / "cache"))
    uri = "memory://weights-test/vgg19-random3.pth"
    with fsspec.open(uri, "wb") as fh:
        fh.write(state_bytes)
    yield uri
    fsspec.filesystem("memory").rm("/weights-test", recursive=True)


def test_memory_uri_loads_the_same_network_as_its_seed(memory_weights: str, state_bytes: bytes) -> None:
    digest = hashlib.sha256(state_bytes).hexdigest()
    model = load_model(memory_weights, sha256=digest)
    reference = load_vgg("vgg19", "random:3")
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model(x, ["relu3_1"])["relu3_1"], reference(x, ["relu3_1"])["relu3_1"])
    assert model.weights_sha256 == digest
    assert model.weights_source == memory_weights


def test_remote_weights_are_downloaded_once_per_node(memory_weights: str, state_bytes: bytes, tmp_path) -> None:
    digest = hashlib.sha256(state_bytes).hexdigest()
    first = fetch_weights(memory_weights, sha256=digest)
    fsspec.filesystem("memory").rm("/weights-test/vgg19-random3.pth")  # the source is gone: the cache serves
    assert fetch_weights(memory_weights, sha256=digest) == first
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{digest}-vgg19-random3.pth"]


def test_hash_mismatch_is_refused(memory_weights: str) -> None:
    with pytest.raises(WeightsError, match="sha256"):
        load_model(memory_weights, sha256="0" * 64)


def test_missing_remote_weights_name_the_uri(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="memory://nowhere/w.pth"):
        load_model("memory://nowhere/w.pth")
