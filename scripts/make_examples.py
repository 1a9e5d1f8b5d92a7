"""Regenerates the bundled example images in pipeline/examples/ (run once by maintainers, output is committed).

Content photos and one style come from scikit-image's sample data (CC0 / public domain, see
pipeline/examples/LICENSES.md); the "strokes" style is painted procedurally here so its provenance is this file.
Usage: python -m scripts.make_examples PATH_TO_SKIMAGE_DATA_DIR
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parents[1] / "pipeline" / "examples"
LONG_SIDE = 256


def shrink(image: Image.Image, long_side: int = LONG_SIDE) -> Image.Image:
    scale = long_side / max(image.size)
    return image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def strokes(size: int = LONG_SIDE, seed: int = 7) -> Image.Image:
    """Bold curved brush strokes in a warm/cool palette: a texture with strong colour and orientation statistics."""
    rng = random.Random(seed)
    palette = [(23, 42, 99), (46, 94, 170), (240, 200, 60), (235, 120, 40), (250, 240, 210), (20, 20, 30), (90, 160, 200)]
    image = Image.new("RGB", (size, size), palette[0])
    draw = ImageDraw.Draw(image)
    for _ in range(900):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        angle = math.atan2(y - size / 2, x - size / 2) + math.pi / 2 + rng.uniform(-0.4, 0.4)
        colour = rng.choice(palette)
        width = rng.randint(2, 6)
        points = []
        for _ in range(8):
            points.append((x, y))
            angle += rng.uniform(-0.25, 0.25)
            x += 4 * math.cos(angle)
            y += 4 * math.sin(angle)
        draw.line(points, fill=colour, width=width, joint="curve")
    return image.filter(ImageFilter.SMOOTH)


def main(data_dir: str) -> None:
    src = Path(data_dir)
    (OUT / "content").mkdir(parents=True, exist_ok=True)
    (OUT / "style").mkdir(parents=True, exist_ok=True)
    for name in ("chelsea", "coffee", "astronaut"):
        shrink(Image.open(src / f"{name}.png")).save(OUT / "content" / f"{name}.jpg", quality=90)
    shrink(Image.open(src / "hubble_deep_field.jpg")).save(OUT / "style" / "hubble.jpg", quality=90)
    strokes().save(OUT / "style" / "strokes.png")


if __name__ == "__main__":
    main(sys.argv[1])
