"""Quality at equal budget: Adam vs L-BFGS after the same steps and after the same CPU time, one evaluator.

Run: .venv/bin/python -m bench.quality_budget [--size 128] [--steps 100] [--quick]
One photo × texture pair from pipeline/examples (astronaut × hubble), random:0 weights, the library's
default objective. Every result is scored by the same evaluator: the engine's own paper-form total loss
of the returned (clamped) image, i.e. the loss at step 0 of a run initialised with that image. "Same CPU
time" gives Adam as many steps as fit in the process CPU time L-BFGS used for its run (measured from a
short Adam run, then checked). The last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nst_core.engine import Stylizer
from nst_core.images import decode_image
from nst_core.params import OptimizerName, StyleParams
from nst_core.targets import Style
from nst_core.vgg import load_vgg

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"


def evaluate(stylizer: Stylizer, content: torch.Tensor, style: Style, image: torch.Tensor, params: StyleParams) -> float:
    """The engine's total loss of `image` (the step-0 loss of a run that starts from it)."""
    probe = params.replace(optimizer=OptimizerName.gd, steps=1, log_every=1, early_stop=0.0)
    return stylizer.stylize([content], style, probe, init_images=[image])[0].curve.total[0]


def timed(stylizer: Stylizer, content: torch.Tensor, style: Style, params: StyleParams) -> tuple[torch.Tensor, float]:
    start = time.process_time()
    image = stylizer.stylize([content], style, params)[0].image
    return image, time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--content", default=str(EXAMPLES / "content" / "astronaut.jpg"))
    ap.add_argument("--style", default=str(EXAMPLES / "style" / "hubble.jpg"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="32 px, 6 steps: a smoke run")
    args = ap.parse_args()
    size, steps = (32, 6) if args.quick else (args.size, args.steps)
    stylizer = Stylizer(load_vgg("vgg19", "random:0"))
    content = decode_image(Path(args.content))
    style = Style((decode_image(Path(args.style)),))
    base = StyleParams(size=size, steps=steps, log_every=steps)
    adam, adam_s = timed(stylizer, content, style, base)
    lbfgs, lbfgs_s = timed(stylizer, content, style, base.replace(optimizer=OptimizerName.lbfgs))
    # Adam steps that fit in L-BFGS's CPU time, from Adam's own per-step time in this run.
    equal_steps = max(1, round(steps * lbfgs_s / adam_s))
    adam_eq, adam_eq_s = timed(stylizer, content, style, base.replace(steps=equal_steps))
    start_loss = evaluate(stylizer, content, style, content, base)
    rows = [
        ("start (content image)", 0, 0.0, start_loss),
        ("adam, same steps", steps, adam_s, evaluate(stylizer, content, style, adam, base)),
        ("lbfgs, same steps", steps, lbfgs_s, evaluate(stylizer, content, style, lbfgs, base)),
        ("adam, same CPU time as lbfgs", equal_steps, adam_eq_s, evaluate(stylizer, content, style, adam_eq, base)),
    ]
    print(
        f"{Path(args.content).name} × {Path(args.style).name}, {size} px, threads {torch.get_num_threads()}; "
        "total loss of the clamped output, engine objective"
    )
    print("| run | steps | CPU s | total loss |")
    print("|---|---:|---:|---:|")
    for name, n, sec, loss in rows:
        print(f"| {name} | {n} | {sec:.1f} | {loss:.4g} |")
    print(json.dumps({"size": size, "steps": steps, "rows": [dict(zip(("run", "steps", "cpu_s", "total"), r, strict=True)) for r in rows]}))


if __name__ == "__main__":
    main()
