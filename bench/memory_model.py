"""Checks `pipeline.cluster.batching`'s memory estimate (behind `--batch-size auto`) against measured memory.

Run on a GPU:  .venv/bin/python -m bench.memory_model --sizes 256,512,768 --batches 1,4,8 --precisions fp32,bf16
CPU smoke:     .venv/bin/python -m bench.memory_model --sizes 32,48 --batches 1,2 --precisions fp32,bf16

Per (precision, size, batch) it prints the estimate (`fixed_bytes + batch × bytes_per_image`) and, on CUDA,
the measured peak of `torch.cuda.max_memory_allocated` over a short `Stylizer.stylize` run (the model's
weights are resident before and counted, as in the estimate), their ratio (measured / estimate: above 1
means the estimate is too small and `auto` can run out of memory), and the measured per-image slope
between the smallest and largest batch against `bytes_per_image`. On any device it also measures the
bytes autograd saves for the backward pass per image (through `torch.autograd.graph.saved_tensors_hooks`,
from the difference between batches of 2 and 1), which is the largest term of the per-image cost and does
not depend on the device. Last line of output: one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from nst_core.engine import Stylizer
from nst_core.params import Precision, StyleParams
from nst_core.targets import Style
from nst_core.vgg import load_vgg
from pipeline.cluster.batching import bytes_per_image, fixed_bytes


def _images(size: int, count: int) -> tuple[list[torch.Tensor], Style]:
    gen = torch.Generator().manual_seed(0)
    contents = [torch.rand(3, size, size, generator=gen) for _ in range(count)]
    return contents, Style((torch.rand(3, size, size, generator=gen),))


def saved_bytes(stylizer: Stylizer, size: int, batch: int, params: StyleParams) -> int:
    """Bytes of the distinct storages autograd saves during a one-step run (its only forward with grad)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    contents, style = _images(size, batch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        stylizer.stylize(contents, style, params.replace(steps=1))
    return sum(storages.values())


def measured_peak(stylizer: Stylizer, size: int, batch: int, params: StyleParams) -> tuple[int, int]:
    """(max allocated, max reserved) bytes on the CUDA device during a short run."""
    device = stylizer.device
    contents, style = _images(size, batch)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    stylizer.stylize(contents, style, params)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,768", help="comma-separated square sizes in px")
    ap.add_argument("--batches", default="1,4,8", help="comma-separated batch sizes")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, tf32, bf16")
    ap.add_argument("--steps", type=int, default=3, help="steps per measured run (the peak is reached in step 1)")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:N or cpu")
    args = ap.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = sorted(int(b) for b in args.batches.split(","))
    precisions = [Precision(p.strip()) for p in args.precisions.split(",")]
    stylizer = Stylizer(load_vgg("vgg19", "random:0", device=device), device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}  torch {torch.__version__}  Adam, default layers, {args.steps} steps per run")
    if device.type != "cuda":
        print("peak-memory measurement needs CUDA (torch.cuda.max_memory_allocated): estimates only, "
              "plus the device-independent saved-for-backward bytes")

    rows: list[dict[str, Any]] = []
    for precision in precisions:
        for size in sizes:
            params = StyleParams(size=size, steps=args.steps, precision=precision)
            per_image = bytes_per_image(params)
            fixed = fixed_bytes(params)
            saved = saved_bytes(stylizer, size, 2, params) - saved_bytes(stylizer, size, 1, params)
            group = []
            for batch in batches:
                estimate = fixed + batch * per_image
                peak = reserved = None
                if device.type == "cuda":
                    try:
                        peak, reserved = measured_peak(stylizer, size, batch, params)
                    except torch.OutOfMemoryError:
                        torch.cuda.empty_cache()
                row = {
                    "precision": precision.value,
                    "size": size,
                    "batch": batch,
                    "estimate_bytes_per_image": per_image,
                    "estimate_fixed_bytes": fixed,
                    "estimate_bytes": estimate,
                    "saved_for_backward_bytes_per_image": saved,
                    "measured_peak_bytes": peak,
                    "measured_reserved_bytes": reserved,
                    "ratio": None if peak is None else peak / estimate,
                }
                group.append(row)
            measured = [r for r in group if r["measured_peak_bytes"] is not None]
            slope = None
            if len(measured) >= 2 and measured[-1]["batch"] > measured[0]["batch"]:
                slope = (measured[-1]["measured_peak_bytes"] - measured[0]["measured_peak_bytes"]) / (
                    measured[-1]["batch"] - measured[0]["batch"]
                )
            for row in group:
                row["measured_bytes_per_image"] = slope
                row["per_image_ratio"] = None if slope is None else slope / per_image
            rows += group

    mib = 2**20
    print()
    print("| precision | size | batch | estimate MiB | measured peak MiB | measured/estimate | estimate MiB/image "
          "| measured MiB/image | saved-for-backward MiB/image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        peak = "n/a" if r["measured_peak_bytes"] is None else f"{r['measured_peak_bytes'] / mib:.0f}"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
        slope = "n/a" if r["measured_bytes_per_image"] is None else f"{r['measured_bytes_per_image'] / mib:.1f}"
        print(
            f"| {r['precision']} | {r['size']} | {r['batch']} | {r['estimate_bytes'] / mib:.0f} | {peak} | {ratio} "
            f"| {r['estimate_bytes_per_image'] / mib:.1f} | {slope} | {r['saved_for_backward_bytes_per_image'] / mib:.1f} |"
        )
    out = {"device": name, "device_type": device.type, "torch": torch.__version__, "rows": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
