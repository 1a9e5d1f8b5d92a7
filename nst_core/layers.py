"""VGG layer names (`conv1_1`, `relu1_1`, `pool1`, …) generated from torchvision's layer configurations.

Imported by `params` for validation and by `vgg` to map names to module indices, so both agree on
exactly one naming scheme and nobody addresses layers by bare index.
"""

from __future__ import annotations

# torchvision.models.vgg.cfgs["E"] (vgg19) and ["D"] (vgg16): channel counts, "M" = pooling.
_CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def layer_names(arch: str) -> tuple[str, ...]:
    """Names of `torchvision.models.<arch>().features` modules, in order (index = position)."""
    names: list[str] = []
    block, conv = 1, 1
    for item in _CFGS[arch]:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return tuple(names)


def layer_channels(arch: str) -> dict[str, int]:
    """Output channels N_l of every conv/relu layer (used by the style normalisation and memory model)."""
    out: dict[str, int] = {}
    block, conv, channels = 1, 1, 3
    for item in _CFGS[arch]:
        if item == "M":
            out[f"pool{block}"] = channels
            block, conv = block + 1, 1
        else:
            channels = int(item)
            out[f"conv{block}_{conv}"] = out[f"relu{block}_{conv}"] = channels
            conv += 1
    return out


LAYER_NAMES: dict[str, tuple[str, ...]] = {arch: layer_names(arch) for arch in _CFGS}
ALL_LAYER_NAMES: tuple[str, ...] = LAYER_NAMES["vgg19"]  # vgg16's names are a subset
