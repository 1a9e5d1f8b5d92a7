"""Regenerates the small photo-like test images in tests/data (run: python tests/data/make_fixtures.py).

content_landscape.png: a procedural scene (sky gradient, sun, ridges, lake, trees, film grain) standing in
for a photograph; style_strokes.png: a painting-like field of coloured brush strokes. Both 96 px, seeded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).parent
W, H = 96, 72


def landscape(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, H)[:, None, None]
    sky = (1 - y) * np.array([0.35, 0.55, 0.95]) + y * np.array([0.95, 0.85, 0.7])
    img = Image.fromarray((np.broadcast_to(sky, (H, W, 3)) * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse((62, 8, 78, 24), fill=(255, 236, 170))
    for k, (base, colour) in enumerate([(38, (92, 104, 128)), (48, (60, 96, 70)), (56, (40, 72, 44))]):
        pts = [(0, H)]
        for x in range(0, W + 8, 8):
            pts.append((x, base - 10 * math.sin(x / (11 + 5 * k) + k) - rng.uniform(0, 5)))
        pts.append((W, H))
        d.polygon(pts, fill=colour)
    d.rectangle((0, 60, W, H), fill=(70, 110, 150))
    for _ in range(9):
        x0 = int(rng.integers(0, W - 6))
        d.rectangle((x0 + 2, 50, x0 + 3, 60), fill=(70, 45, 25))
        d.ellipse((x0 - 2, 40, x0 + 7, 53), fill=(30, int(rng.integers(70, 110)), 35))
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    grain = rng.normal(0, 6, (H, W, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + grain, 0, 255).astype(np.uint8))


def strokes(seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (W, W), (30, 40, 90))
    d = ImageDraw.Draw(img)
    palette = [(240, 200, 40), (30, 90, 200), (250, 250, 230), (20, 30, 70), (90, 160, 220), (230, 120, 30)]
    for _ in range(260):
        cx, cy = rng.uniform(0, W, 2)
        angle = math.atan2(cy - W / 2, cx - W / 2) + math.pi / 2 + rng.normal(0, 0.3)  # swirling strokes
        length = rng.uniform(5, 12)
        dx, dy = math.cos(angle) * length, math.sin(angle) * length
        colour = palette[int(rng.integers(0, len(palette)))]
        d.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour, width=int(rng.integers(2, 4)))
    return img


def main() -> None:
    landscape().save(HERE / "content_landscape.png")
    strokes().save(HERE / "style_strokes.png")


if __name__ == "__main__":
    main()
