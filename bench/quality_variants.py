"""The quality controls side by side: gram vs w2, with and without the moving average, flat vs
coarse-to-fine with warm-started Adam, on real photo × texture pairs at equal steps.

Run: .venv/bin/python -m bench.quality_variants [--size 256] [--steps 150] [--pairs 4] [--only NAMES] [--out DIR]
     [--sheet PATH] [--quick]
Pairs from pipeline/examples, random:0 weights. Every variant sets its balance with `style_ratio` (the
style gradient r times the content gradient at the seeded noise image), so Gram and W2, whose losses live
on different scales, are compared at the same starting balance rather than at one β tuned for one of them.
Coarse-to-fine runs the same number of steps in three stages √2 apart ending at `--size` (fewer pixel-steps
than flat: the column `compute` gives the share). One evaluator for every result: the project's own
metrics (`nst_core.metrics.feature_metrics`: gram_err against the whole style's Gram targets at the output's
size, content_dist against the content), plus the wall time. Prints a table; the last line is the figures
as JSON. `--sheet` writes a contact sheet (one row per pair: content, style, then every variant). Each run
is kept under `--out` as it finishes (results.jsonl and a PNG), and a rerun skips those: the W2 runs cost
minutes each on a CPU, so a full table may take several invocations.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from nst_core.engine import Stylizer
from nst_core.images import decode_image, encode_image, resize_long_side
from nst_core.metrics import feature_metrics
from nst_core.params import StyleLossKind, StyleParams
from nst_core.targets import Style
from nst_core.vgg import load_vgg

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"
PAIRS = (
    ("astronaut.jpg", "hubble.jpg"),
    ("chelsea.jpg", "strokes.png"),
    ("coffee.jpg", "hubble.jpg"),
    ("astronaut.jpg", "strokes.png"),
)
RATIO = 2.0
"""Style gradient / content gradient at the reference point, for every variant."""


def variants(size: int, steps: int) -> dict[str, StyleParams]:
    third = steps // 3
    stages = tuple((round(size / 2 ** (k / 2)), n) for k, n in ((2, third), (1, third), (0, steps - 2 * third)))
    base = StyleParams(size=size, steps=steps, style_ratio=RATIO, log_every=max(1, steps))
    out: dict[str, StyleParams] = {}
    for loss in (StyleLossKind.gram, StyleLossKind.w2):
        for ema in (0.0, 0.99):
            for c2f in (False, True):
                name = f"{loss.value}{' ema' if ema else ''}{' c2f' if c2f else ''}"
                p = base.replace(style_loss=loss, ema_decay=ema)
                out[name] = p.replace(schedule=stages, warm_start=True) if c2f else p
    return out


def pixel_steps(params: StyleParams) -> int:
    """Pixels × steps summed over the stages: the compute of a run up to the per-step overheads."""
    return sum(side * side * n for side, n in params.stages())


def evaluate(stylizer: Stylizer, content: torch.Tensor, style: Style, image: torch.Tensor, params: StyleParams) -> dict[str, float]:
    """gram_err and content_dist of `image` with the Gram evaluator at the output's size, whatever the run's loss."""
    judge = params.replace(style_loss=StyleLossKind.gram, schedule=None, size=max(image.shape[-2:]))
    targets = stylizer.style_targets(style, tuple(image.shape[-2:]), judge)
    return feature_metrics(stylizer.model, image, content, targets, judge)


def sheet(rows: list[list[torch.Tensor]], path: Path, cell: int = 160) -> None:
    """A grid of thumbnails (each resized to `cell` on its long side, centred in a square)."""
    grid = Image.new("RGB", (cell * len(rows[0]), cell * len(rows)), "white")
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            thumb = resize_long_side(image.clamp(0, 1), cell)
            array = (thumb.permute(1, 2, 0) * 255).round().byte().numpy()
            tile = Image.fromarray(array)
            grid.paste(tile, (c * cell + (cell - tile.width) // 2, r * cell + (cell - tile.height) // 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=88)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def _done(out: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Runs finished by an earlier invocation (results.jsonl and their images), so a long table resumes."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    log = out / "results.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if (out / entry["image"]).exists():
                found[(entry["pair"], entry["variant"])] = entry["figures"]
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--pairs", type=int, default=len(PAIRS))
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/quality"), help="results.jsonl and images; reruns resume")
    ap.add_argument("--sheet", type=Path, default=None, help="write a contact sheet (JPEG) here")
    ap.add_argument("--quick", action="store_true", help="smoke run: 64 px, 6 steps, one pair")
    args = ap.parse_args()
    size, steps, pairs = (64, 6, 1) if args.quick else (args.size, args.steps, args.pairs)
    out = args.out / f"{size}px-{steps}steps"
    out.mkdir(parents=True, exist_ok=True)
    stylizer = Stylizer(load_vgg("vgg19", "random:0"))
    runs = variants(size, steps)
    if args.only:
        runs = {k: v for k, v in runs.items() if k in set(args.only.split(","))}
    flat = size * size * steps
    done = _done(out)
    figures: dict[str, dict[str, dict[str, float]]] = {}
    thumbs: list[list[torch.Tensor]] = []
    for content_name, style_name in PAIRS[:pairs]:
        pair = f"{Path(content_name).stem} × {Path(style_name).stem}"
        content = decode_image(EXAMPLES / "content" / content_name)
        style_image = decode_image(EXAMPLES / "style" / style_name)
        style = Style((style_image,))
        row = [resize_long_side(content, size), resize_long_side(style_image, size)]
        for name, params in runs.items():
            image_name = f"{_slug(pair)}__{_slug(name)}.png"
            if (pair, name) in done:
                figures.setdefault(pair, {})[name] = done[(pair, name)]
                row.append(decode_image(out / image_name))
                continue
            start = time.perf_counter()
            image = stylizer.stylize([content], style, params)[0].image
            seconds = time.perf_counter() - start
            scores = evaluate(stylizer, content, style, image, params)
            entry = {
                "gram_err": round(scores["gram_err"], 4),
                "content_dist": round(scores["content_dist"], 4),
                "compute": round(pixel_steps(params) / flat, 3),
                "seconds": round(seconds, 1),
            }
            figures.setdefault(pair, {})[name] = entry
            (out / image_name).write_bytes(encode_image(image, "png"))
            with (out / "results.jsonl").open("a") as log:
                log.write(json.dumps({"pair": pair, "variant": name, "image": image_name, "figures": entry}) + "\n")
            row.append(image)
            print(f"{pair:24s} {name:16s} gram_err {entry['gram_err']:.4f}  content_dist "
                  f"{entry['content_dist']:.4f}  {seconds:6.1f} s", flush=True)  # fmt: skip
        thumbs.append(row)
    if args.sheet is not None:
        sheet(thumbs, args.sheet)
    print(json.dumps({"size": size, "steps": steps, "style_ratio": RATIO, "variants": list(runs), "pairs": figures}))


if __name__ == "__main__":
    main()
