"""What produced a result: package versions, device and weights, recorded next to every output.

Called by `nst stylize` (the sidecar JSON) and by the run driver (`run.json`), so that any image can be
traced back to the code, weights and hardware that made it.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PACKAGES = ("nst-pipeline", "torch", "torchvision", "ray", "pyarrow", "fsspec", "pillow", "numpy", "s3fs")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device | str) -> str:
    """Human-readable device name, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu (x86_64)'."""
    import torch  # the run records package versions without loading torch in the driver

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


def provenance(device: torch.device | str, model: Any) -> dict[str, Any]:
    return {
        "versions": package_versions(),
        "device": device_description(device),
        "argv": [a for a in sys.argv[1:2]],  # the subcommand only: full argv can carry secrets
        "weights": {
            "arch": getattr(getattr(model, "arch", None), "value", str(getattr(model, "arch", ""))),
            "source": getattr(model, "weights_source", None),
            "sha256": getattr(model, "weights_sha256", None),
        },
    }
