"""The bad-input corpus: files and manifest rows that real users produce, each with its expected outcome.

Used by test_bad_inputs.py (one run over every row-level case) and listed in docs/reliability.md. Each case
builds its input under a folder and says what the ledger must show: `done`, or the error kind and a piece
of the message (which must also name the file or column).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MAX_PIXELS = 1_000_000
"""The run's --max-pixels: small, so a 2000x2000 image stands in for a decompression bomb."""


@dataclass(frozen=True)
class Case:
    kind: str
    make: Callable[[Path, dict[str, Any]], dict[str, Any]]
    """(folder, context) -> the manifest row's cells (content_uri at least)."""
    expect: str
    """"done" or the error_kind the ledger must record."""
    message: str = ""
    """A piece of the error message (case-insensitive)."""
    names: str | None = "content_uri"
    """Which cell's value the message must name (a file); None for cases named by column."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _noise(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(path: Path, image: Image.Image, **kwargs: Any) -> str:
    image.save(path, **kwargs)
    return str(path)


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_noise(40, 48, 1)).save(buf, format="JPEG")
    return buf.getvalue()


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_noise(40, 48, 2)).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def zero_byte(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": _write(d / "zero.jpg", b"")}


def truncated_jpeg(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    data = _jpeg_bytes()
    return {"content_uri": _write(d / "truncated.jpg", data[: len(data) // 2])}


def truncated_png(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    data = _png_bytes()
    return {"content_uri": _write(d / "truncated.png", data[: len(data) // 2])}


def text_as_jpg(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": _write(d / "notes.jpg", b"these are my holiday notes, not a photo\n" * 20)}


def svg(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    body = b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="40" height="40"/></svg>'
    return {"content_uri": _write(d / "vector.svg", body)}


def psd_like(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    # A Photoshop signature and version, then garbage: recognised by PIL's PSD plugin, unreadable.
    return {"content_uri": _write(d / "layers.psd", b"8BPS\x00\x01" + b"\x00" * 6 + os.urandom(64))}


def bomb(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    # 2000 x 2000 = 4 MP of one colour: a few KB on disk, over the run's --max-pixels of 1 MP.
    return {"content_uri": _save(d / "bomb.png", Image.new("RGB", (2000, 2000), (9, 9, 9)), optimize=True)}


def one_pixel(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": _save(d / "pixel.png", Image.new("RGB", (1, 1), (200, 30, 30)))}


def extreme_aspect(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": _save(d / "sliver.png", Image.fromarray(_noise(2, 4000, 3)))}


def png16(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    grey = np.random.default_rng(4).integers(0, 65536, (40, 48)).astype(np.uint16)
    path = _save(d / "deep16.png", Image.fromarray(grey))
    with Image.open(path) as check:
        assert check.mode.startswith("I"), check.mode  # really a 16-bit grey PNG on disk
    return {"content_uri": path}


def cmyk_jpeg(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": _save(d / "print.jpg", Image.fromarray(_noise(40, 48, 5)).convert("CMYK"))}


def palette_transparent(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    image = Image.fromarray(_noise(40, 48, 6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return {"content_uri": _save(d / "palette.png", image, transparency=0)}


def animated_gif(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    frames = [Image.new("RGB", (48, 40), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = d / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {"content_uri": str(path)}


def exif_rotated(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    # Stored 48 wide x 24 high; EXIF orientation 6 (rotate 90 degrees clockwise) shows it 24 wide x 48 high.
    image = Image.fromarray(_noise(24, 48, 7))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {"content_uri": _save(d / "portrait.jpg", image, exif=exif.tobytes())}


def grayscale(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": _save(d / "grey.png", Image.fromarray(_noise(40, 48, 8, channels=1)))}


def missing(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": str(d / "never-written.png")}


def permission_denied(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    path = Path(_save(d / "locked.png", Image.fromarray(_noise(40, 48, 9))))
    path.chmod(0)
    return {"content_uri": str(path)}


def directory(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    (d / "folder.png").mkdir()
    return {"content_uri": str(d / "folder.png")}


def unknown_scheme(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": "s4://bucket/photo.png"}


def unreachable_bucket(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": "s3://no-such-bucket-nst/photo.png"}


def good(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"content_uri": ctx["contents"][ctx.setdefault("next_good", 0)]}


def with_cells(**cells: Any) -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
    """A good content image with these manifest cells (parameters, output_name, nulls)."""

    def make(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
        index = ctx["next_good"] = ctx.get("next_good", 0) + 1
        return {"content_uri": ctx["contents"][index], **cells}

    return make


def corrupt_style(d: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    data = _png_bytes()
    index = ctx["next_good"] = ctx.get("next_good", 0) + 1
    return {"content_uri": ctx["contents"][index], "style_uri": _write(d / "style-broken.png", data[:100])}


CASES: tuple[Case, ...] = (
    Case("zero-byte file", zero_byte, "bad_input", "empty file"),
    Case("truncated JPEG", truncated_jpeg, "bad_input", "truncated"),
    Case("truncated PNG", truncated_png, "bad_input", "truncated"),
    Case("text file named .jpg", text_as_jpg, "bad_input", "not an image"),
    Case("unsupported format (SVG)", svg, "bad_input", "not an image"),
    Case("unsupported format (PSD-like bytes)", psd_like, "bad_input", "image"),
    Case("decompression bomb (over --max-pixels)", bomb, "bad_input", "exceeds the limit"),
    Case("1x1 image", one_pixel, "done", note="upscaled to --size (32x32)"),
    Case("extreme aspect ratio 4000x2", extreme_aspect, "bad_input", "too elongated"),
    Case("16-bit PNG", png16, "done", note="scaled by 65535, grey replicated to RGB"),
    Case("CMYK JPEG", cmyk_jpeg, "done", note="converted to RGB by PIL"),
    Case("palette PNG with transparency", palette_transparent, "done", note="composited over white"),
    Case("animated GIF", animated_gif, "done", note="first frame only"),
    Case("EXIF-rotated photo", exif_rotated, "done", note="output follows EXIF: 16x32 (W x H)"),
    Case("grayscale", grayscale, "done", note="replicated to RGB"),
    Case("missing file", missing, "bad_input", "file not found"),
    Case("permission denied (chmod 000)", permission_denied, "bad_input", "permission denied"),
    Case("directory instead of file", directory, "bad_input", "directory"),
    Case("URI with unknown scheme", unknown_scheme, "bad_manifest_row", "s4"),
    Case("unreachable bucket", unreachable_bucket, "bad_input", "not found"),
    Case("wrong type (steps='two')", with_cells(steps="two"), "bad_manifest_row", "steps", None),
    Case("null content_uri", with_cells(content_uri=None), "bad_manifest_row", "content_uri", None),
    Case("NaN parameter", with_cells(style_weight=math.nan), "bad_manifest_row", "style_weight", None),
    Case("inf parameter", with_cells(style_weight=math.inf), "bad_manifest_row", "style_weight", None),
    Case("negative steps", with_cells(steps="-1"), "bad_manifest_row", "steps", None),
    Case("absurd size", with_cells(size="1000000"), "bad_manifest_row", "size", None),
    Case("absurd steps", with_cells(steps="1000000000"), "bad_manifest_row", "steps must be <=", None),
    Case("output_name with ..", with_cells(output_name="../escape.png"), "bad_manifest_row", "output_name", None),
    Case("output_name absolute", with_cells(output_name="/tmp/abs.png"), "bad_manifest_row", "output_name", None),
    Case("corrupt style image", corrupt_style, "bad_input", "style", "style_uri"),
    Case("null parameter (uses the run default)", with_cells(steps=None), "done", note="run-level --steps"),
)
