"""GPU throughput of the engine (images/hour, achieved TFLOP/s) per batch size and precision, against a reference loop.

Run on a GPU (one precision per call keeps each call within a few minutes):
  .venv/bin/python -m bench.gpu_throughput --precisions bf16 --json out/bf16.json
CPU smoke (CI): .venv/bin/python -m bench.gpu_throughput --size 32 --steps 3 --batches 1,2 --precisions fp32,bf16

Per (precision, batch): one warm-up call (cuDNN autotuning, compiling) and one timed `Stylizer.stylize` call
of `--steps` steps on square `--size` px images, timed end to end (style targets, content features and the
result copy to the host included; image decoding and encoding excluded). images/hour = batch × 3600 / wall
seconds; TFLOP/s = the analytical FLOPs of the optimisation steps (see `flops_per_image_iteration`) / wall
seconds. The reference is `bench/engine_cpu.py`'s tutorial loop as published (one image, eager, fp32,
frozen weights, the network cut after the deepest loss layer, `.item()` every step, PyTorch's default math
flags), run on the same device in the same process; its figure is steady state (setup excluded), which
favours the reference. Final-loss
difference: each image's final total loss against the fp32 run of the same batch (same images, seed and
steps), max over the batch, in percent. Last line of output: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.engine_cpu import cpu_model, reference_seconds  # the reference loop lives there, once
from nst_core.engine import Stylizer
from nst_core.images import decode_image, resize_to
from nst_core.layers import LAYER_NAMES, layer_channels
from nst_core.params import Precision, StyleParams
from nst_core.targets import Style
from nst_core.vgg import load_vgg

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def flops_per_image_iteration(
    height: int, width: int, params: StyleParams = StyleParams(), arch: str = "vgg19"
) -> dict[str, int]:
    """FLOPs of one optimisation step for one image, from the VGG layer shapes (1 multiply-add = 2 FLOPs).

    forward:  Σ over the convolutions up to the deepest used layer of 2·H_l·W_l·C_in·C_out·9
              (3×3 kernels, stride 1, padding 1: output size = input size).
    backward: gradients with respect to the input only (the weights are frozen), i.e. one transposed
              convolution of the same size per layer: equal to the forward count. A loop that also
              computes weight gradients (the reference) does a second convolution per layer: 2× forward.
    gram:     per style layer G = F Fᵀ with F of N_l × M_l: 2·N_l²·M_l forward; its backward is two
              matrix products of the same size (d/dF of F Fᵀ): 4·N_l²·M_l; 6·N_l²·M_l in all.
    Pooling, ReLU, the normalisation and the loss arithmetic are O(activations), not counted (< 1 %).
    """
    names = LAYER_NAMES[arch]
    channels = layer_channels(arch)
    deepest = max(names.index(n) for n in (*params.content_layers, *params.style_layers))
    h, w, c_in = height, width, 3
    forward = 0
    sizes: dict[str, tuple[int, int]] = {}
    for name in names[: deepest + 1]:
        if name.startswith("pool"):
            h, w = h // 2, w // 2
        elif name.startswith("conv"):
            forward += 2 * h * w * c_in * channels[name] * 9
            c_in = channels[name]
        sizes[name] = (h, w)
    gram = sum(6 * channels[n] ** 2 * sizes[n][0] * sizes[n][1] for n in params.style_layers)
    return {"forward": forward, "backward": forward, "gram": gram, "total": 2 * forward + gram}


def counted_flops_per_image_iteration(stylizer: Stylizer, contents: list[torch.Tensor], style: Style, params: StyleParams) -> int:
    """torch's FlopCounterMode over stylize(steps=2) minus stylize(steps=1): exactly one step's forward and
    backward (the setup and the final evaluation are the same in both), per image."""
    totals = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            stylizer.stylize(contents, style, params.replace(steps=steps, log_every=1))
        totals.append(counter.get_total_flops())
    return (totals[1] - totals[0]) // len(contents)


def make_images(size: int, count: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Square contents (the photo pair from tests/data, shifted per image so each differs) and a style."""
    try:
        content = resize_to(decode_image(DATA / "content_landscape.png"), (size, size))
        style = resize_to(decode_image(DATA / "style_strokes.png"), (size, size))
    except OSError:
        gen = torch.Generator().manual_seed(seed)
        content, style = torch.rand(3, size, size, generator=gen), torch.rand(3, size, size, generator=gen)
    return [torch.roll(content, shifts=i * size // max(count, 1), dims=2) for i in range(count)], style


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()} ({torch.get_num_threads()} threads)"


def run_reference(vgg: Any, content: torch.Tensor, style: torch.Tensor, steps: int, device: torch.device) -> float:
    """Seconds per iteration of the reference loop; `torch.device(device)` places its freshly built
    trainable VGG copy and constants on the benchmark device."""
    with torch.device(device):
        reference_seconds(vgg, content[None].to(device), style[None].to(device), 2)  # warm-up
        return reference_seconds(vgg, content[None].to(device), style[None].to(device), steps)


def time_engine(
    stylizer: Stylizer, contents: list[torch.Tensor], style: Style, params: StyleParams, warmup_steps: int
) -> dict[str, Any]:
    device = stylizer.device
    stylizer.stylize(contents, style, params.replace(steps=warmup_steps))
    _sync(device)
    base = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    results = stylizer.stylize(contents, style, params)
    _sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "wall_s": wall,
        "finals": [r.final["total"] for r in results],
        "peak_bytes": peak,
        "peak_bytes_per_image": None if peak is None else (peak - base) / len(contents),
        "compiled": stylizer.step_function.is_compiled,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="square image side in px")
    ap.add_argument("--steps", type=int, default=500, help="optimisation steps per image")
    ap.add_argument("--batches", default="1,2,4,8,16,32", help="comma-separated batch sizes")
    ap.add_argument("--precisions", default="fp32,tf32,bf16", help="comma-separated: fp32, tf32, bf16")
    ap.add_argument("--reference-steps", type=int, default=50, help="timed steps of the reference loop (>= 2)")
    ap.add_argument("--warmup-steps", type=int, default=3, help="steps of the untimed call per configuration")
    ap.add_argument("--compile", action="store_true", help="Stylizer(compile=True): torch.compile the step")
    ap.add_argument("--compile-mode", default=None, help='torch.compile mode, e.g. "reduce-overhead" (CUDA graphs)')
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: plumbing only)")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:N or cpu")
    ap.add_argument("--weights", default="random:0", help="VGG19 weights: random:SEED or a local file")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON object to this file")
    ap.add_argument(
        "--baseline", type=Path, action="append", default=None,
        help="JSON of an earlier fp32 run (same device, size, steps, weights) for the loss difference when "
        "this run has no fp32 rows; may be repeated",
    )
    args = ap.parse_args(argv)
    if args.reference_steps < 2:
        ap.error("--reference-steps must be >= 2 (time is measured between iterations)")
    batches = [int(b) for b in args.batches.split(",")]
    precisions = [Precision(p.strip()) for p in args.precisions.split(",")]
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)

    vgg = load_vgg("vgg19", args.weights, device=device)
    contents, style_image = make_images(args.size, max(batches))
    style = Style((style_image,))
    base_params = StyleParams(size=args.size, steps=args.steps)
    analytic = flops_per_image_iteration(args.size, args.size, base_params)
    counted = counted_flops_per_image_iteration(Stylizer(vgg, device), contents[:1], style, base_params)
    print(f"device: {device_name(device)}  torch {torch.__version__}  {args.size} px × {args.steps} steps  weights {args.weights}")
    print(
        f"FLOP per image-iteration (analytical): forward {analytic['forward'] / 1e9:.2f} G, backward "
        f"{analytic['backward'] / 1e9:.2f} G, Gram {analytic['gram'] / 1e9:.2f} G, total {analytic['total'] / 1e9:.2f} G; "
        f"FlopCounterMode on one step: {counted / 1e9:.2f} G ({counted / analytic['total']:.4f}×)"
    )

    reference: dict[str, Any] | None = None
    if not args.no_reference:
        flags = {
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.benchmark": torch.backends.cudnn.benchmark,
        }
        s_per_iter = run_reference(vgg, contents[0], style_image, args.reference_steps, device)
        reference = {
            "s_per_iteration": s_per_iter,
            "images_per_hour": 3600 / (s_per_iter * args.steps),
            "useful_tflops": analytic["total"] / s_per_iter / 1e12,
            "steps_timed": args.reference_steps,
            "math_flags": flags if device.type == "cuda" else None,
        }

    rows: list[dict[str, Any]] = []
    for precision in precisions:
        stylizer = Stylizer(
            vgg, device, compile=args.compile, compile_backend=args.compile_backend, compile_mode=args.compile_mode
        )
        for batch in batches:
            params = base_params.replace(precision=precision)
            row: dict[str, Any] = {"batch": batch, "precision": precision.value}
            try:
                row |= time_engine(stylizer, contents[:batch], style, params, args.warmup_steps)
            except (torch.OutOfMemoryError, ValueError) as exc:  # OOM at large batches; bf16 unsupported
                row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(row)
                continue
            row["images_per_hour"] = batch * 3600 / row["wall_s"]
            row["tflops"] = analytic["total"] * batch * args.steps / row["wall_s"] / 1e12
            if reference is not None:
                row["speedup_vs_reference"] = row["images_per_hour"] / reference["images_per_hour"]
            rows.append(row)
    baseline_rows = [r for r in rows if r["precision"] == "fp32" and "finals" in r]
    if args.baseline and not baseline_rows:
        for path in args.baseline:
            earlier = json.loads(path.read_text())
            same = ("size", "steps", "weights", "device")
            if any(earlier[k] != v for k, v in zip(same, (args.size, args.steps, args.weights, device_name(device)), strict=True)):
                ap.error(f"--baseline {path} was measured with other {', '.join(same)}")
            baseline_rows += [r for r in earlier["rows"] if r["precision"] == "fp32" and "finals" in r]
    for row in rows:  # final-loss difference against the fp32 row of the same batch
        fp32 = next((r for r in baseline_rows if r["batch"] == row["batch"]), None)
        if fp32 is not None and "finals" in row:
            row["final_loss_diff_pct_vs_fp32"] = 100 * max(
                abs(a - b) / abs(b) for a, b in zip(row["finals"], fp32["finals"], strict=True)
            )

    print()
    if reference is not None:
        print(
            f"reference loop: {reference['s_per_iteration'] * 1e3:.1f} ms / iteration, "
            f"{reference['images_per_hour']:.1f} images/hour, {reference['useful_tflops']:.3f} useful TFLOP/s"
        )
    print("| batch | precision | compiled | wall s | images/hour | TFLOP/s | × reference | peak MiB/image | Δ final loss vs fp32 |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['batch']} | {r['precision']} | | {r['error']} | | | | | |")
            continue
        mem = "n/a (CPU)" if r["peak_bytes_per_image"] is None else f"{r['peak_bytes_per_image'] / 2**20:.0f}"
        diff = r.get("final_loss_diff_pct_vs_fp32")
        speed = r.get("speedup_vs_reference")
        print(
            f"| {r['batch']} | {r['precision']}{' (= fp32 off CUDA)' if r['precision'] == 'tf32' and device.type != 'cuda' else ''} "
            f"| {'yes' if r['compiled'] else 'no'} | {r['wall_s']:.2f} | {r['images_per_hour']:.1f} | {r['tflops']:.3f} "
            f"| {'' if speed is None else f'{speed:.2f}×'} | {mem} | {'' if diff is None else f'{diff:.3f} %'} |"
        )
    if device.type != "cuda":
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        print(f"peak memory per image needs CUDA (torch.cuda.max_memory_allocated); host peak RSS {rss:.0f} MiB")
    out = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "size": args.size,
        "steps": args.steps,
        "weights": args.weights,
        "compile": args.compile,
        "compile_mode": args.compile_mode,
        "compile_backend": args.compile_backend if args.compile else None,
        "loss_baseline": "this run" if not args.baseline or any(r["precision"] == "fp32" for r in rows) else [str(b) for b in args.baseline],
        "flop_per_image_iteration": analytic,
        "flop_counter_per_image_iteration": counted,
        "flop_counter_ratio": counted / analytic["total"],
        "reference": reference,
        "rows": rows,
    }
    line = json.dumps(out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")
    print(line)
    return out


if __name__ == "__main__":
    main()
