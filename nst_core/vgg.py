"""Frozen VGG feature extractor with layers addressed by name; built by `load_vgg`, called by targets and engine."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from nst_core.atomic import replaced_atomically
from nst_core.layers import LAYER_NAMES
from nst_core.params import Arch, Padding, Pooling

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 20.0
"""Seconds to wait for download.pytorch.org before declaring the machine offline."""


class WeightsError(RuntimeError):
    """VGG weights could not be obtained or are not a usable VGG state dict."""


WeightsSpec = str | os.PathLike[str] | BinaryIO | Mapping[str, Tensor]


class VGGFeatures(nn.Module):
    """torchvision's `vgg.features` that returns the activations of named layers and stops at the deepest one.

    Parameters are frozen (`requires_grad_(False)`), so backpropagation computes input gradients only.
    """

    arch: Arch
    weights_source: str
    weights_sha256: str | None
    mean: Tensor
    std: Tensor

    def __init__(self, features: nn.Sequential, arch: Arch, weights_source: str, weights_sha256: str | None):
        super().__init__()
        names = LAYER_NAMES[arch.value]
        if len(features) != len(names):
            raise ValueError(f"{arch.value} features have {len(features)} modules, expected {len(names)}")
        self.features = features
        self.arch = arch
        self.weights_source = weights_source
        self.weights_sha256 = weights_sha256
        self.layer_index: dict[str, int] = {name: i for i, name in enumerate(names)}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(
        self,
        x: Tensor,
        layers: Sequence[str],
        pooling: Pooling | str = Pooling.avg,
        padding: Padding | str = Padding.zeros,
    ) -> dict[str, Tensor]:
        """x: [B,3,H,W] RGB in [0,1]. Runs only up to the deepest layer in `layers`.

        `padding` applies to the first convolution only (see `Padding`); the others keep VGG's zeros.
        """
        pooling = Pooling(pooling)
        padding = Padding(padding)
        unknown = [name for name in layers if name not in self.layer_index]
        if unknown:
            raise ValueError(f"{self.arch.value} has no layer(s) {unknown}; known: {list(self.layer_index)}")
        if not layers:
            return {}
        wanted = set(layers)
        last = max(self.layer_index[name] for name in layers)
        names = LAYER_NAMES[self.arch.value]
        out: dict[str, Tensor] = {}
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        for i in range(last + 1):
            module = self.features[i]
            if isinstance(module, nn.Conv2d):
                if i == 0 and padding is not Padding.zeros:
                    # Deviation from VGG: a zero border is a grey frame in normalised space that the
                    # optimisation saturates; extend the image instead (crowsonkb/style-transfer-pytorch).
                    pad = module.padding if isinstance(module.padding, tuple) else (1, 1)
                    h = F.pad(h, (pad[1], pad[1], pad[0], pad[0]), mode=padding.value)
                    h = F.conv2d(h, module.weight, module.bias, module.stride, 0, module.dilation, module.groups)
                else:
                    h = module(h)
            elif isinstance(module, nn.ReLU):
                h = F.relu(h)  # never in place: an earlier layer's output may be kept as a feature
            elif isinstance(module, nn.MaxPool2d):
                if pooling is Pooling.avg:
                    # Gatys et al. 2016 §2: average pooling instead of max, same window and stride.
                    h = F.avg_pool2d(h, kernel_size=module.kernel_size, stride=module.stride)
                else:
                    h = module(h)
            else:  # pragma: no cover - torchvision's vgg features hold only these three kinds
                h = module(h)
            if names[i] in wanted:
                out[names[i]] = h
        return out


def load_vgg(
    arch: Arch | str = "vgg19",
    weights: WeightsSpec = "imagenet",
    *,
    sha256: str | None = None,
    device: str | torch.device = "cpu",
) -> VGGFeatures:
    """Build a frozen VGG feature extractor.

    weights: "imagenet" (torchvision's `IMAGENET1K_V1` through its download cache, honouring TORCH_HOME),
    "random:SEED" (exactly `torch.manual_seed(SEED); torchvision.models.<arch>()`, without disturbing the
    caller's RNG), a local path, a binary file object, or a state dict (full model or `features` only).
    Never falls back to random weights: any failure raises WeightsError.
    """
    try:
        arch = Arch(arch)
    except ValueError:
        raise WeightsError(f"unknown arch {arch!r}; choose one of {[a.value for a in Arch]}") from None
    if isinstance(weights, str) and weights == "imagenet":
        if sha256 is not None:
            raise WeightsError(
                "sha256 applies to a weights file; imagenet weights are checked by torchvision's hash"
            )
        path = _imagenet_checkpoint(arch)
        state, digest = _load_file(path, None, name=f"imagenet weights {path}")
        model = _from_state_dict(arch, state, source="imagenet", digest=digest)
    elif isinstance(weights, str) and weights.startswith("random:"):
        seed_text = weights.split(":", 1)[1]
        if not seed_text.isdigit():
            raise WeightsError(f"weights {weights!r}: expected random:SEED with a non-negative integer SEED")
        if sha256 is not None:
            raise WeightsError("sha256 applies to a weights file, not to random:SEED")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed_text))
            full = getattr(torchvision.models, arch.value)()
        model = VGGFeatures(full.features, arch, weights, None)
    elif isinstance(weights, Mapping):
        if sha256 is not None:
            raise WeightsError("sha256 applies to a weights file, not to an in-memory state dict")
        model = _from_state_dict(arch, weights, source="state_dict", digest=None)
    elif isinstance(weights, (str, os.PathLike)):
        name = os.fspath(weights)
        state, digest = _load_file(Path(name), sha256, name=name)
        model = _from_state_dict(arch, state, source=name, digest=digest)
    elif hasattr(weights, "read"):
        name = str(getattr(weights, "name", "<file object>"))
        state, digest = _load_file(weights, sha256, name=name)
        model = _from_state_dict(arch, state, source=name, digest=digest)
    else:
        raise WeightsError(
            f"unsupported weights {type(weights).__name__}: use imagenet, random:SEED, a path, "
            "a binary file object or a state dict"
        )
    return model.to(device)


def _imagenet_weights_url(arch: Arch) -> str:
    """URL of torchvision's IMAGENET1K_V1 checkpoint for `arch` (a separate function so tests can point it at 127.0.0.1)."""
    enum = {Arch.vgg19: torchvision.models.VGG19_Weights, Arch.vgg16: torchvision.models.VGG16_Weights}[arch]
    url: str = enum.IMAGENET1K_V1.url
    return url


def imagenet_checkpoint(arch: Arch | str = Arch.vgg19) -> Path:
    """The cached ImageNet checkpoint of `arch`, downloaded first if absent; WeightsError says how to supply it.

    Lets a caller (the batch driver) fetch the weights, or fail, once and before any worker starts.
    """
    return _imagenet_checkpoint(Arch(arch))


def imagenet_checkpoint_path(arch: Arch | str = Arch.vgg19) -> Path:
    """Where torchvision's cache keeps the ImageNet checkpoint of `arch` (honours TORCH_HOME); may not exist."""
    filename = _imagenet_weights_url(Arch(arch)).rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _imagenet_checkpoint(arch: Arch) -> Path:
    """The cached checkpoint in torchvision's cache ($TORCH_HOME/hub/checkpoints), downloading it if absent.

    torchvision's own downloader has no timeout, so offline machines could hang; this uses the same URL,
    cache path and hash-prefix check, with a timeout and an actionable error.
    """
    url = _imagenet_weights_url(arch)
    filename = url.rsplit("/", 1)[-1]
    hash_prefix = filename.rsplit("-", 1)[-1].split(".")[0]
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    target = cache_dir / filename
    howto = (
        f"supply the weights yourself: pass --weights PATH_OR_URI (optionally with its sha256), or place "
        f"torchvision's file {filename} (from {url}) at {target} (set TORCH_HOME to use another cache)"
    )
    if not target.exists():
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                with replaced_atomically(target) as tmp, open(tmp, "wb") as out:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise WeightsError(f"cannot download ImageNet {arch.value} weights ({exc}); {howto}") from None
    digest = _sha256_file(target)
    if not digest.startswith(hash_prefix):
        raise WeightsError(
            f"cached {target} has sha256 {digest[:12]}…, expected a prefix {hash_prefix} (corrupt or partial "
            f"download): delete it, or {howto}"
        )
    return target


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _load_file(source: Path | BinaryIO, sha256: str | None, *, name: str) -> tuple[Mapping[str, Tensor], str]:
    """torch.load(weights_only=True) with an optional sha256 check; returns (state dict, sha256 of the bytes)."""
    try:
        if isinstance(source, Path):
            digest = _sha256_file(source)
            stream: BinaryIO | Path = source
        else:
            data = source.read()
            if not isinstance(data, bytes):
                raise WeightsError(f"weights {name}: file object must be opened in binary mode")
            digest = hashlib.sha256(data).hexdigest()
            stream = io.BytesIO(data)
    except OSError as exc:
        raise WeightsError(f"cannot read weights {name}: {exc}") from None
    if sha256 is not None and digest != sha256.lower().strip():
        raise WeightsError(f"weights {name}: sha256 mismatch, expected {sha256}, file has {digest}")
    try:
        state = torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"weights {name}: refused to unpickle (only tensors and plain containers are allowed): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # torch.load raises RuntimeError/EOFError/… on non-checkpoint bytes
        raise WeightsError(f"weights {name}: not a torch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, Mapping):
        raise WeightsError(f"weights {name}: expected a state dict, got {type(state).__name__}")
    return state, digest


def _from_state_dict(
    arch: Arch, state: Mapping[str, object], *, source: str, digest: str | None
) -> VGGFeatures:
    """Accept full-model keys (`features.0.weight`, classifier ignored) or features-only keys (`0.weight`)."""
    with torch.device("meta"):
        features = getattr(torchvision.models, arch.value)().features
    expected = features.state_dict()
    if any(k.startswith("features.") for k in state):
        picked = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    else:
        picked = dict(state)
    missing = sorted(set(expected) - set(picked), key=_natural)
    unexpected = sorted(set(picked) - set(expected), key=_natural)
    if missing or unexpected:
        raise WeightsError(
            f"weights {source}: not a {arch.value} state dict (missing {missing[:4]}{'…' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'…' if len(unexpected) > 4 else ''})"
        )
    tensors: dict[str, Tensor] = {}
    for key, ref in expected.items():
        value = picked[key]
        if not isinstance(value, Tensor) or value.shape != ref.shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise WeightsError(
                f"weights {source}: {key} has shape {shape}, {arch.value} needs {tuple(ref.shape)}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            # NaN/inf weights give NaN losses and an all-black image for every row, silently "done".
            raise WeightsError(f"weights {source}: weights contain non-finite values (NaN or inf) in {key}")
        tensors[key] = value
    features.load_state_dict({k: v.float() for k, v in tensors.items()}, assign=True)
    return VGGFeatures(features, arch, source, digest)


def _natural(key: str) -> tuple[int, str]:
    head = key.split(".", 1)[0]
    return (int(head) if head.isdigit() else 10**6, key)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VGGFeatures", "WeightsError", "load_vgg"]
