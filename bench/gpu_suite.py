"""Every GPU figure the project reports, in one device run: throughput by precision and batch, compiled
modes, the reference loop, peak memory against the memory model, final loss against fp32.

Run on the device with its own python, from the repository root (`-m` imports bench/, nst_core/ and pipeline/
from the checkout), no install, no Ray:
  python -m bench.gpu_suite --json bench/results/gpu-suite.json
CPU smoke (CI): python -m bench.gpu_suite --size 32 --steps 4 --steady-steps 2 --batches 1,2 --json out.json

Sections, in this order; the JSON is rewritten after each, so a run that is cut short still leaves what
it measured, and a section that would start after `--budget-s` seconds is recorded as skipped. The last
line of output is the same JSON on one line.
1. reference: the tutorial loop as published (bench/engine_cpu.py: one image, eager, fp32, frozen and
   truncated VGG, `.item()` per step, PyTorch's default math flags), seconds per iteration.
2. grid: per precision (fp32, tf32, bf16) and batch, steady state: (T(1 + n) − T(1)) / n seconds per step
   from two `Stylizer.stylize` calls of 1 + `--steady-steps` and 1 steps after a warm-up call, so the
   setup (style targets, content features, cuDNN autotuning) is excluded; images/hour scale it to
   `--steps` steps; the CUDA peak of the longer call, minus what was allocated before, per image, against
   `pipeline.cluster.batching.bytes_per_image` for the same (resolved) precision.
3. loss: each precision on the same `--loss-batch` images for the full `--steps`; final total loss per
   image against fp32's, max over the images, in percent. Each grid row carries its precision's figure.
4. full: the fastest grid configuration, end to end at the full `--steps` (setup included).
5. compiled: the fastest configuration with `torch.compile` (default mode and "reduce-overhead"),
   steady state as in 2 (compile time reported apart), and end to end if it beats 4.
`precision=auto` is what most users run: the JSON records what it resolves to on this device.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu_throughput import _sync, device_name, flops_per_image_iteration, make_images, run_reference
from nst_core.engine import Stylizer
from nst_core.params import Precision, StyleParams
from nst_core.precision import resolve_precision
from nst_core.targets import Style
from nst_core.vgg import load_vgg
from pipeline.cluster.batching import bytes_per_image

MIB = 2**20


class Suite:
    """The measurements so far and the clock they run against; `save` after every section."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device, self.start = args, device, time.perf_counter()
        self.data: dict[str, Any] = {
            "device": device_name(device),
            "device_type": device.type,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": datetime.date.today().isoformat(),
            "size": args.size,
            "steps": args.steps,
            "steady_steps": args.steady_steps,
            "weights": args.weights,
            "optimizer": "adam",
            "auto_resolves_to": resolve_precision(Precision.auto, device).value,
            "budget_s": args.budget_s,
            "compile_backend": None if args.no_compile else args.compile_backend,
            "skipped": [],
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def may_start(self, section: str) -> bool:
        if self.elapsed() < self.args.budget_s:
            return True
        self.data["skipped"].append(section)
        print(f"skipped {section}: {self.elapsed():.0f} s elapsed, budget {self.args.budget_s:.0f} s")
        return False

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 2)
        path: Path = self.args.json
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(tmp, path)


def timed_call(stylizer: Stylizer, contents: list[torch.Tensor], style: Style, params: StyleParams) -> tuple[float, list, int | None]:
    """(wall seconds, results, CUDA peak bytes above what was allocated before the call)."""
    device = stylizer.device
    _sync(device)
    base = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    results = stylizer.stylize(contents, style, params)
    _sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    return wall, results, peak


def steady_row(
    suite: Suite, stylizer: Stylizer, mode: str, contents: list[torch.Tensor], style: Style, params: StyleParams, flops: int
) -> dict[str, Any]:
    """One configuration in steady state; `error` instead of figures when it does not fit or run."""
    args, batch = suite.args, len(contents)
    row: dict[str, Any] = {"batch": batch, "precision": params.precision.value, "compiled": mode}
    try:
        first, _, _ = timed_call(stylizer, contents, style, params.replace(steps=2, log_every=2))  # warm-up
        one, _, _ = timed_call(stylizer, contents, style, params.replace(steps=1, log_every=1))
        more, _, peak = timed_call(
            stylizer, contents, style, params.replace(steps=1 + args.steady_steps, log_every=1 + args.steady_steps)
        )
    except (torch.OutOfMemoryError, ValueError, RuntimeError) as exc:  # OOM; bf16 unsupported; compiling
        row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if suite.device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    s_step = max(more - one, 1e-9) / args.steady_steps
    model = bytes_per_image(params.replace(precision=resolve_precision(params.precision, suite.device)))
    row |= {
        "first_call_s": first,
        "s_per_step": s_step,
        "images_per_hour": batch * 3600 / (s_step * args.steps),
        "tflops": flops * batch / s_step / 1e12,
        "peak_mib_per_image": None if peak is None else peak / batch / MIB,
        "model_mib_per_image": model / MIB,
        "peak_over_model": None if peak is None else peak / batch / model,
        "compiled_ok": stylizer.step_function.is_compiled,
    }
    return row


def make_stylizer(vgg: Any, device: torch.device, mode: str, backend: str = "inductor") -> Stylizer:
    """mode "no": eager; "default" or "reduce-overhead": torch.compile with `backend` in that mode."""
    if mode == "no":
        return Stylizer(vgg, device)
    return Stylizer(vgg, device, compile=True, compile_backend=backend, compile_mode=None if mode == "default" else mode)


def end_to_end(
    stylizer: Stylizer, mode: str, contents: list[torch.Tensor], style: Style, params: StyleParams, flops: int
) -> dict[str, Any]:
    wall, results, peak = timed_call(stylizer, contents, style, params)
    batch = len(contents)
    return {
        "batch": batch,
        "precision": params.precision.value,
        "compiled": mode,
        "steps": params.steps,
        "wall_s": wall,
        "images_per_hour": batch * 3600 / wall,
        "tflops": flops * batch * params.steps / wall / 1e12,
        "peak_mib_per_image": None if peak is None else peak / batch / MIB,
        "finals": [r.final["total"] for r in results],
    }


def loss_deltas(finals: dict[str, list[float]]) -> dict[str, float]:
    """Max over images of |final − fp32's final| / fp32's final, in percent, per precision."""
    base = finals["fp32"]
    return {p: 100 * max(abs(a - b) / abs(b) for a, b in zip(f, base, strict=True)) for p, f in finals.items()}


def print_table(rows: list[dict[str, Any]], reference: dict[str, Any] | None) -> None:
    print("| batch | precision | compiled | images/hour | TFLOP/s | × reference | peak MiB/image | model MiB/image | Δ final loss vs fp32 |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['batch']} | {r['precision']} | {r['compiled']} | {r['error']} | | | | | |")
            continue
        ref = "" if reference is None else f"{r['images_per_hour'] / reference['images_per_hour']:.2f}×"
        peak = "n/a" if r.get("peak_mib_per_image") is None else f"{r['peak_mib_per_image']:.0f}"
        model = f"{r['model_mib_per_image']:.0f}" if "model_mib_per_image" in r else ""
        delta = r.get("loss_delta_vs_fp32")
        print(
            f"| {r['batch']} | {r['precision']} | {r['compiled']} | {r['images_per_hour']:.1f} | {r['tflops']:.2f} "
            f"| {ref} | {peak} | {model} | {'' if delta is None else f'{delta:.3f} %'} |"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True, help="where the figures go (rewritten after each section)")
    ap.add_argument("--size", type=int, default=512, help="square image side in px")
    ap.add_argument("--steps", type=int, default=500, help="steps of a full run (images/hour refer to it)")
    ap.add_argument("--steady-steps", type=int, default=20, help="timed steps per steady-state measurement")
    ap.add_argument("--batches", default="1,8,16,32,64", help="comma-separated batch sizes of the grid")
    ap.add_argument("--precisions", default="fp32,tf32,bf16", help="comma-separated; fp32 is always measured")
    ap.add_argument("--loss-batch", type=int, default=4, help="images per precision in the loss section")
    ap.add_argument("--reference-steps", type=int, default=30, help="timed steps of the reference loop (>= 2)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="no section starts after this many seconds")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled section")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: plumbing only)")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:N or cpu")
    ap.add_argument("--weights", default="random:0", help="VGG19 weights: random:SEED or a local file")
    args = ap.parse_args(argv)
    if args.reference_steps < 2 or args.steady_steps < 1:
        ap.error("--reference-steps must be >= 2 and --steady-steps >= 1")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    batches = sorted({int(b) for b in args.batches.split(",")})
    precisions = ["fp32", *[p.strip() for p in args.precisions.split(",") if p.strip() != "fp32"]]
    suite = Suite(args, device)
    vgg = load_vgg("vgg19", args.weights, device=device)
    contents, style_image = make_images(args.size, max(*batches, args.loss_batch))
    style = Style((style_image,))
    base = StyleParams(size=args.size, steps=args.steps, log_every=args.steps)
    flops = flops_per_image_iteration(args.size, args.size, base)["total"]
    suite.data["flop_per_image_iteration"] = flops
    print(f"device: {suite.data['device']}  torch {torch.__version__}  {args.size} px × {args.steps} steps, auto = {suite.data['auto_resolves_to']}")

    reference = None
    if suite.may_start("reference"):
        s_iter = run_reference(vgg, contents[0], style_image, args.reference_steps, device)
        reference = {"s_per_iteration": s_iter, "images_per_hour": 3600 / (s_iter * args.steps), "tflops": flops / s_iter / 1e12}
        suite.data["reference"] = reference
        print(f"reference loop: {s_iter * 1e3:.2f} ms / iteration, {reference['images_per_hour']:.1f} images/hour")
        suite.save()

    eager = make_stylizer(vgg, device, "no")
    rows: list[dict[str, Any]] = []
    suite.data["rows"] = rows
    for precision in precisions:
        for batch in batches:
            if not suite.may_start(f"grid {precision} × {batch}"):
                continue
            rows.append(steady_row(suite, eager, "no", contents[:batch], style, base.replace(precision=Precision(precision)), flops))
            suite.save()

    if suite.may_start("loss"):
        finals = {}
        for precision in precisions:
            params = base.replace(precision=Precision(precision))
            finals[precision] = [r.final["total"] for r in eager.stylize(contents[: args.loss_batch], style, params)]
        deltas = loss_deltas(finals)
        suite.data["loss"] = {"batch": args.loss_batch, "steps": args.steps, "finals": finals, "delta_pct_vs_fp32": deltas}
        for row in rows:
            row["loss_delta_vs_fp32"] = deltas.get(row["precision"])
        suite.save()

    fitted = [r for r in rows if "error" not in r]
    best = max(fitted, key=lambda r: r["images_per_hour"]) if fitted else None
    suite.data["best"] = best and {k: best[k] for k in ("batch", "precision", "compiled")}
    full: list[dict[str, Any]] = []
    suite.data["full"] = full
    if best is not None and suite.may_start("full"):
        params = base.replace(precision=Precision(best["precision"]))
        full.append(end_to_end(eager, "no", contents[: best["batch"]], style, params, flops))
        suite.save()

    if best is not None and not args.no_compile:
        params = base.replace(precision=Precision(best["precision"]))
        for mode in ("default", "reduce-overhead"):
            if not suite.may_start(f"compiled {mode}"):
                continue
            compiled = make_stylizer(vgg, device, mode, args.compile_backend)
            row = steady_row(suite, compiled, mode, contents[: best["batch"]], style, params, flops)
            row["loss_delta_vs_fp32"] = best.get("loss_delta_vs_fp32")  # compiled rounding: see full's finals
            rows.append(row)
            suite.save()
            if "error" not in row and row["images_per_hour"] > best["images_per_hour"] and suite.may_start(f"full compiled {mode}"):
                full.append(end_to_end(compiled, mode, contents[: best["batch"]], style, params, flops))
                suite.save()

    print()
    print_table(rows, reference)
    for f in full:
        print(
            f"end to end, {f['steps']} steps: batch {f['batch']} {f['precision']} compiled {f['compiled']}: "
            f"{f['wall_s']:.2f} s, {f['images_per_hour']:.1f} images/hour, {f['tflops']:.2f} TFLOP/s"
        )
    suite.save()
    print(f"wrote {args.json} ({suite.elapsed():.0f} s)")
    print(json.dumps(suite.data))
    return suite.data


if __name__ == "__main__":
    main()
