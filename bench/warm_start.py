"""Coarse-to-fine with and without `warm_start`, against a flat run of the same pixel-steps.

Run: .venv/bin/python -m bench.warm_start [--schedule 64:60,128:60]
Three Adam runs of astronaut × hubble (pipeline/examples, random:0 weights, defaults otherwise): the
schedule with fresh moments per stage, the same with `warm_start`, and one stage at the last size with
the schedule's pixel-steps (Σ side² · steps / last side², rounded). One evaluator for all three: the
engine's paper-form total loss of the returned clamped image at the last size (the step-0 row of a run
that starts from that image). Prints a table; the last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nst_core.engine import ImageResult, Stylizer
from nst_core.images import decode_image
from nst_core.params import StyleParams, parse_field
from nst_core.targets import Style
from nst_core.vgg import load_vgg

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedule", default="64:60,128:60", help="coarse-to-fine stages size:steps")
    args = ap.parse_args()
    schedule: tuple[tuple[int, int], ...] = parse_field("schedule", args.schedule)
    side = schedule[-1][0]
    flat_steps = round(sum(s * s * n for s, n in schedule) / (side * side))
    vgg = load_vgg("vgg19", "random:0")
    content = decode_image(EXAMPLES / "content" / "astronaut.jpg")
    style = Style((decode_image(EXAMPLES / "style" / "hubble.jpg"),))
    stylizer = Stylizer(vgg)
    runs = {
        "schedule, fresh Adam per stage": StyleParams(schedule=schedule),
        "schedule, warm_start": StyleParams(schedule=schedule, warm_start=True),
        f"flat {side} px, {flat_steps} steps": StyleParams(size=side, steps=flat_steps),
    }

    def evaluate(image: torch.Tensor) -> float:
        # The same evaluation for every run: loss terms at step 0 of a run at `side` from the image.
        probe = StyleParams(size=side, steps=1, log_every=1)
        return stylizer.stylize([content], style, probe, init_images=[image.clamp(0, 1)])[0].curve.total[0]

    print(f"astronaut × hubble, random:0, schedule {args.schedule}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"| run | pixel-steps ({side}² units) | loss at {side} px | seconds |")
    print("|---|---:|---:|---:|")
    rows = []
    for name, params in runs.items():
        start = time.perf_counter()
        result: ImageResult = stylizer.stylize([content], style, params)[0]
        seconds = time.perf_counter() - start
        loss = evaluate(result.image)
        units = sum(s * s * n for s, n in params.stages()) / (side * side)
        rows.append({"run": name, "pixel_steps": units, "loss": loss, "seconds": seconds})
        print(f"| {name} | {units:g} | {loss:.5g} | {seconds:.1f} |", flush=True)
    print(json.dumps({"schedule": args.schedule, "side": side, "rows": rows}))


if __name__ == "__main__":
    main()
