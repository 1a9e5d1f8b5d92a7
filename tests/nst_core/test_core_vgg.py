"""VGG extractor: names, truncation, pooling, frozen weights, and every weight source and its failures."""

from __future__ import annotations

import io
import pickle
import time
from pathlib import Path

import pytest
import torch
import torchvision

import nst_core.vgg as vgg_mod
from nst_core.layers import LAYER_NAMES
from nst_core.params import Arch, Pooling
from nst_core.vgg import VGGFeatures, WeightsError, load_vgg


def test_layer_names_follow_torchvision_modules(vgg: VGGFeatures) -> None:
    names = LAYER_NAMES["vgg19"]
    assert len(names) == len(vgg.features) == 37
    for name, module in zip(names, vgg.features, strict=True):
        kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}[
            name.rstrip("0123456789_")
        ]
        assert isinstance(module, kind), name
    assert names[vgg.layer_index["relu4_2"]] == "relu4_2" and vgg.layer_index["relu4_2"] == 22


def test_random_seed_is_exactly_manual_seed_then_torchvision(vgg: VGGFeatures) -> None:
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    ref = torchvision.models.vgg19().features
    for (k, a), b in zip(vgg.features.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert vgg.weights_source == "random:0" and vgg.weights_sha256 is None and vgg.arch is Arch.vgg19
    torch.random.set_rng_state(state)
    before = torch.random.get_rng_state()
    load_vgg("vgg19", "random:0")
    assert torch.equal(before, torch.random.get_rng_state()), "loading must not disturb the caller's RNG"


def test_truncated_after_deepest_requested_layer(vgg: VGGFeatures) -> None:
    called: list[int] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o, k=k: called.append(k)) for k, m in enumerate(vgg.features)
    ]
    try:
        out = vgg(torch.rand(1, 3, 32, 32), ["relu1_1", "relu2_1"], Pooling.max)
    finally:
        for h in hooks:
            h.remove()
    assert set(out) == {"relu1_1", "relu2_1"}
    assert max(called) == vgg.layer_index["conv2_1"]  # relus run functionally, convs and max pools as modules
    assert vgg.layer_index["conv2_2"] not in called


def test_matches_torchvision_with_max_pooling_and_avg_differs(vgg: VGGFeatures) -> None:
    x = torch.rand(2, 3, 40, 36)
    norm = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    idx = vgg.layer_index["relu3_1"]
    with torch.no_grad():
        ref = vgg.features[: idx + 1](norm.clone())
        ours = vgg(x, ["relu3_1", "conv1_1"], "max")
        avg = vgg(x, ["relu3_1"], "avg")["relu3_1"]
        conv11 = vgg.features[0](norm)
    torch.testing.assert_close(ours["relu3_1"], ref)
    torch.testing.assert_close(ours["conv1_1"], conv11)  # not overwritten by an in-place ReLU
    assert (ours["conv1_1"] < 0).any()
    manual = norm
    for k in range(idx + 1):
        m = vgg.features[k]
        manual = (
            torch.nn.functional.avg_pool2d(manual, 2, 2) if isinstance(m, torch.nn.MaxPool2d) else m(manual)
        )
    torch.testing.assert_close(avg, manual)
    assert not torch.allclose(avg, ours["relu3_1"])


@pytest.mark.parametrize("padding", ["replicate", "reflect"])
def test_padding_changes_the_first_convolution_only(vgg: VGGFeatures, padding: str) -> None:
    x = torch.rand(1, 3, 20, 24)
    norm = (x - vgg.mean) / vgg.std
    first = vgg.features[0]
    with torch.no_grad():
        ours = vgg(x, ["conv1_1", "conv1_2"], "avg", padding)
        conv11 = torch.nn.functional.conv2d(
            torch.nn.functional.pad(norm, (1, 1, 1, 1), mode=padding), first.weight, first.bias
        )
        zeros = vgg(x, ["conv1_1"], "avg", "zeros")["conv1_1"]
    torch.testing.assert_close(ours["conv1_1"], conv11)
    # the second convolution pads with zeros as VGG does
    torch.testing.assert_close(ours["conv1_2"], vgg.features[2](torch.relu(conv11)))
    # only the border differs from zero padding
    torch.testing.assert_close(ours["conv1_1"][..., 1:-1, 1:-1], zeros[..., 1:-1, 1:-1])
    assert not torch.allclose(ours["conv1_1"], zeros)


def test_parameters_frozen_no_weight_gradients(vgg: VGGFeatures) -> None:
    assert not vgg.training
    assert all(not p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg(x, ["relu2_1"])["relu2_1"].sum().backward()
    assert x.grad is not None
    assert all(p.grad is None for p in vgg.parameters())


def test_unknown_layer_is_named(vgg: VGGFeatures) -> None:
    with pytest.raises(ValueError, match="relu9_9"):
        vgg(torch.rand(1, 3, 32, 32), ["relu9_9"])


def test_weights_from_local_file_and_file_object(vgg: VGGFeatures, vgg19_features_file: Path) -> None:
    x = torch.rand(1, 3, 32, 32)
    ref = vgg(x, ["relu3_1"])["relu3_1"]
    from_path = load_vgg("vgg19", vgg19_features_file)
    import hashlib

    digest = hashlib.sha256(vgg19_features_file.read_bytes()).hexdigest()
    assert from_path.weights_source == str(vgg19_features_file) and from_path.weights_sha256 == digest
    torch.testing.assert_close(from_path(x, ["relu3_1"])["relu3_1"], ref)
    with open(vgg19_features_file, "rb") as f:
        from_obj = load_vgg("vgg19", f, sha256=digest.upper())
    assert from_obj.weights_sha256 == digest
    torch.testing.assert_close(from_obj(x, ["relu3_1"])["relu3_1"], ref)
    assert all(not p.requires_grad for p in from_obj.parameters())


def test_weights_full_model_state_dict_and_in_memory(vgg: VGGFeatures) -> None:
    full = {f"features.{k}": v for k, v in vgg.features.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(2, 2)  # a full-model checkpoint also carries the classifier
    buf = io.BytesIO()
    torch.save(full, buf)
    buf.seek(0)
    model = load_vgg("vgg19", buf)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model(x, ["relu2_1"])["relu2_1"], vgg(x, ["relu2_1"])["relu2_1"])
    in_memory = load_vgg("vgg19", vgg.features.state_dict())
    assert in_memory.weights_source == "state_dict"
    torch.testing.assert_close(in_memory(x, ["relu2_1"])["relu2_1"], vgg(x, ["relu2_1"])["relu2_1"])


def test_hash_mismatch(vgg19_features_file: Path) -> None:
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_vgg("vgg19", vgg19_features_file, sha256="0" * 64)


def test_not_a_state_dict(tmp_path: Path) -> None:
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(WeightsError, match="expected a state dict"):
        load_vgg("vgg19", listed)
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    with pytest.raises(WeightsError, match="not a torch checkpoint"):
        load_vgg("vgg19", text)
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="not a vgg19 state dict"):
        load_vgg("vgg19", other)
    with pytest.raises(WeightsError, match="cannot read"):
        load_vgg("vgg19", tmp_path / "missing.pth")


def test_wrong_architecture_shapes(vgg: VGGFeatures) -> None:
    sd = dict(vgg.features.state_dict())
    sd["0.weight"] = torch.zeros(32, 3, 3, 3)
    with pytest.raises(WeightsError, match=r"0\.weight has shape"):
        load_vgg("vgg19", sd)
    with pytest.raises(WeightsError, match="not a vgg16 state dict"):
        load_vgg("vgg16", vgg.features.state_dict())  # vgg16 has fewer layers


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"0.weight": _Exploit(marker)}))
    with pytest.raises(WeightsError, match="refused to unpickle"):
        load_vgg("vgg19", evil)
    assert not marker.exists()
    payload = io.BytesIO()
    torch.save({"0.weight": _Exploit(marker)}, payload)
    payload.seek(0)
    with pytest.raises(WeightsError, match="refused"):
        load_vgg("vgg19", payload)
    assert not marker.exists()


def test_imagenet_offline_fails_fast_with_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(
        vgg_mod, "_imagenet_weights_url", lambda arch: "http://127.0.0.1:9/vgg19-dcbb9e9d.pth"
    )
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        load_vgg("vgg19", "imagenet")
    assert time.monotonic() - start < vgg_mod.DOWNLOAD_TIMEOUT_S
    message = str(info.value)
    assert "--weights" in message and "TORCH_HOME" in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message


def test_imagenet_from_torch_home_cache(
    vgg: VGGFeatures, vgg19_features_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    data = vgg19_features_file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name = f"vgg19-{digest[:8]}.pth"  # torchvision's naming: the file name carries a sha256 prefix
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / name).write_bytes(data)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(vgg_mod, "_imagenet_weights_url", lambda arch: f"http://127.0.0.1:9/{name}")
    model = load_vgg("vgg19", "imagenet")
    assert model.weights_source == "imagenet" and model.weights_sha256 == digest
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model(x, ["relu1_2"])["relu1_2"], vgg(x, ["relu1_2"])["relu1_2"])
    (cache / name).write_bytes(data[:-10])  # a partial download must not load
    with pytest.raises(WeightsError, match="corrupt or partial"):
        load_vgg("vgg19", "imagenet")


def test_bad_weight_specs() -> None:
    with pytest.raises(WeightsError, match="random:SEED"):
        load_vgg("vgg19", "random:abc")
    with pytest.raises(WeightsError, match="unknown arch"):
        load_vgg("vgg11", "random:0")


def test_vgg16_random_reproducible() -> None:
    model = load_vgg("vgg16", "random:1")
    torch.manual_seed(1)
    ref = torchvision.models.vgg16().features
    assert model.arch is Arch.vgg16 and len(model.features) == len(LAYER_NAMES["vgg16"])
    assert torch.equal(model.features[28].weight, ref[28].weight)
    out = model(torch.rand(1, 3, 32, 32), ["relu5_3"])
    assert out["relu5_3"].shape == (1, 512, 2, 2)
