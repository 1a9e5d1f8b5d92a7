"""What `--compile` changes in the image: eager vs torch.compile (inductor) on the same run.

Run: .venv/bin/python -m bench.compile_drift [--size 64] [--steps 1,10,30]
Compiled kernels fuse and reorder float32 sums, so every step differs by rounding and an iterative
optimisation carries the differences forward. Prints, per step count, the largest and the mean absolute
pixel difference (pixels in [0, 1]) and the relative difference of the final total loss; the last line is
the figures as JSON. astronaut × hubble from pipeline/examples, random:0 weights, Adam.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nst_core.engine import Stylizer
from nst_core.images import decode_image
from nst_core.params import StyleParams
from nst_core.targets import Style
from nst_core.vgg import load_vgg

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", default="1,10,30", help="comma-separated step counts")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager for a smoke run)")
    args = ap.parse_args()
    vgg = load_vgg("vgg19", "random:0")
    content = decode_image(EXAMPLES / "content" / "astronaut.jpg")
    style = Style((decode_image(EXAMPLES / "style" / "hubble.jpg"),))
    eager = Stylizer(vgg)
    compiled = Stylizer(vgg, compile=True, compile_backend=args.backend)
    rows = []
    print(f"{args.size} px, backend {args.backend}, torch {torch.__version__}")
    print("| steps | max |Δpixel| | mean |Δpixel| | final loss rel. diff |")
    print("|---:|---:|---:|---:|")
    for steps in (int(s) for s in args.steps.split(",")):
        params = StyleParams(size=args.size, steps=steps, log_every=steps)
        a = eager.stylize([content], style, params)[0]
        b = compiled.stylize([content], style, params)[0]
        if not compiled.step_function.is_compiled:
            raise SystemExit(f"torch.compile failed: {compiled.step_function.error}")
        diff = (a.image - b.image).abs()
        rel = abs(a.final["total"] - b.final["total"]) / abs(a.final["total"])
        rows.append({"steps": steps, "max_pixel_diff": float(diff.max()), "mean_pixel_diff": float(diff.mean()),
                     "loss_rel_diff": rel})
        print(f"| {steps} | {float(diff.max()):.4f} | {float(diff.mean()):.2e} | {rel:.1e} |", flush=True)
    print(json.dumps({"size": args.size, "backend": args.backend, "rows": rows}))


if __name__ == "__main__":
    main()
