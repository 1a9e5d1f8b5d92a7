"""Border saturation by first-convolution padding: the share of saturated pixels in the outer ring vs inside.

Run: .venv/bin/python -m bench.border [--size 256] [--steps 150] [--ring 2] [--quick]
One content × style pair from pipeline/examples (default chelsea × hubble), random:0 weights, Adam with
the library defaults otherwise, once per padding (`zeros`, `replicate`, `reflect`). A pixel is saturated
when any channel rounds to 0 or 255 in 8 bits. The ring is the outer `--ring` pixels on every side; the
interior is everything else. The last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nst_core.engine import Stylizer
from nst_core.images import decode_image
from nst_core.params import Padding, StyleParams
from nst_core.targets import Style
from nst_core.vgg import load_vgg

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"


def saturated_shares(image: torch.Tensor, ring: int) -> tuple[float, float]:
    """(share of ring pixels, share of interior pixels) with at least one channel at 0 or 255."""
    q = (image.clamp(0, 1) * 255).round()
    sat = ((q == 0) | (q == 255)).any(dim=0)
    mask = torch.ones_like(sat)
    mask[ring:-ring, ring:-ring] = False
    return float(sat[mask].float().mean()), float(sat[~mask].float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--content", default=str(EXAMPLES / "content" / "chelsea.jpg"))
    ap.add_argument("--style", default=str(EXAMPLES / "style" / "hubble.jpg"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--ring", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="48 px, 5 steps: a smoke run")
    args = ap.parse_args()
    size, steps = (48, 5) if args.quick else (args.size, args.steps)
    vgg = load_vgg("vgg19", "random:0")
    stylizer = Stylizer(vgg)
    content = decode_image(Path(args.content))
    style = Style((decode_image(Path(args.style)),))
    print(f"{Path(args.content).name} × {Path(args.style).name}, {size} px, {steps} Adam steps, ring {args.ring} px")
    print("| padding | saturated, outer ring | saturated, interior | final total loss |")
    print("|---|---:|---:|---:|")
    rows = []
    for padding in Padding:
        params = StyleParams(size=size, steps=steps, padding=padding, log_every=steps)
        result = stylizer.stylize([content], style, params)[0]
        ring, inside = saturated_shares(result.image, args.ring)
        rows.append({"padding": padding.value, "ring": ring, "interior": inside, "total": result.final["total"]})
        print(f"| {padding.value} | {100 * ring:.1f} % | {100 * inside:.1f} % | {result.final['total']:.4g} |")
    print(json.dumps({"size": size, "steps": steps, "ring_px": args.ring, "rows": rows}))


if __name__ == "__main__":
    main()
