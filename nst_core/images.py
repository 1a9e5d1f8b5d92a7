"""Image decoding, encoding and resizing for the engine; called by the pipeline's readers/writers and the CLI.

Decoding is strict: anything that is not a complete, reasonably sized image raises ImageError naming the
file, so one bad row is reported as data rather than stylised as garbage.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from nst_core.formats import OUTPUT_FORMATS

DEFAULT_MAX_PIXELS: int = 89_478_485
"""Pixel-count limit against decompression bombs (PIL's own default, ~ 0.25 GB of 24-bit RGB)."""


BYTES_PER_PIXEL_MAX = 16
"""The widest uncompressed encoding PIL decodes (four 32-bit channels); compressed formats are smaller."""
METADATA_ALLOWANCE = 16 * 2**20
"""Room for headers, EXIF, ICC profiles and thumbnails on top of the pixel data."""


class ImageError(ValueError):
    """Bad image input; the message names the source and the cause."""


def max_file_bytes(max_pixels: int) -> int:
    """Largest encoded file worth reading for an image of at most `max_pixels`: anything longer is refused
    before it is read, so a stream that never ends (`/dev/zero`, a huge object) cannot exhaust memory."""
    return int(max_pixels) * BYTES_PER_PIXEL_MAX + METADATA_ALLOWANCE


REDUCE_MARGIN = 2
"""Reduced decoding keeps at least twice the processing size, so the antialiased resize that follows
still has detail to work with."""
MIN_REDUCED_SIDE = 64
"""…and never shrinks the short side below this (elongated images keep their exact shape for the checks)."""


def reduce_factor(width: int, height: int, long_side: int | None) -> int:
    """Integer factor an image may be shrunk by at decode time while staying >= REDUCE_MARGIN x `long_side`."""
    if not long_side or long_side <= 0:
        return 1
    by_long = max(width, height) // (REDUCE_MARGIN * long_side)
    by_short = min(width, height) // MIN_REDUCED_SIDE
    return max(1, min(by_long, by_short))


def decode_image(
    data: bytes | BinaryIO | str | os.PathLike[str],
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    long_side: int | None = None,
) -> torch.Tensor:
    """Decode to [3, H, W] float32 RGB in [0, 1], with EXIF orientation applied.

    Modes: L/I;16/I/F (grey) are replicated to RGB; 16-bit and 32-bit integers are scaled by their bit
    depth, float images are taken as [0, 1] and clipped; CMYK/YCbCr/LAB/HSV/1 go through PIL's RGB conversion.
    Transparency (LA, RGBA, PA, P with a transparent index) is composited over WHITE — what viewers and
    browsers show — because transparent pixels carry arbitrary colour values that would otherwise leak in.
    Animated images: the first frame.

    `long_side`: the size the caller will resize to. A much larger image is then decoded at reduced size
    (JPEG: `draft`, DCT scaling during decoding; other formats: `reduce` right after decoding, before any
    float copy), so memory follows the processing size rather than the file's pixel count.
    `max_pixels` is also PIL's own limit (`Image.MAX_IMAGE_PIXELS`), which otherwise refuses images above
    twice its default whatever `max_pixels` says.
    """
    label = name if name is not None else _default_name(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) == 0:
            raise ImageError(f"{label}: empty file")
        stream: BinaryIO | str | os.PathLike[str] = io.BytesIO(bytes(data))
    else:
        stream = data
    if isinstance(stream, (str, os.PathLike)):
        try:
            if os.path.getsize(stream) == 0:
                raise ImageError(f"{label}: empty file")
        except OSError as exc:
            raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    try:
        with warnings.catch_warnings():
            # `max_pixels` is checked below from the header alone; PIL's warning is silenced here only.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = _open_with_limit(stream, max_pixels)
            with img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{label}: {width}x{height} = {width * height} pixels exceeds the limit of "
                        f"{max_pixels} (decompression-bomb protection); downscale it or raise max_pixels"
                    )
                img.seek(0)  # animated images: first frame
                factor = reduce_factor(width, height, long_side)
                if factor > 1 and img.format == "JPEG":
                    img.draft(img.mode, (-(-width // factor), -(-height // factor)))
                img.load()
                img = _reduced(img, reduce_factor(*img.size, long_side))
                img = ImageOps.exif_transpose(img)
                array = _to_rgb_array(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{label}: decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({type(exc).__name__}: {exc})") from None
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{label}: image has no pixels")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


_PIL_LIMIT_LOCK = threading.Lock()


def _open_with_limit(stream: BinaryIO | str | os.PathLike[str], max_pixels: int) -> Image.Image:
    """`Image.open` with PIL's own bomb limit (it refuses above twice `Image.MAX_IMAGE_PIXELS`) set to
    `max_pixels` for this call only: raised or lowered with it, and the global left as it was."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return Image.open(stream)
        except Image.DecompressionBombError:
            # Header only, so that the caller refuses it with the one message naming its size and the limit.
            Image.MAX_IMAGE_PIXELS = None
            if hasattr(stream, "seek"):
                stream.seek(0)
            return Image.open(stream)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _reduced(img: Image.Image, factor: int) -> Image.Image:
    if factor <= 1:
        return img
    try:
        return img.reduce(factor)
    except (ValueError, OSError):  # modes reduce() does not support (P, 1, I;16): decoded at full size
        return img


def _default_name(data: object) -> str:
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    return str(
        getattr(data, "name", "<bytes>" if isinstance(data, (bytes, bytearray, memoryview)) else "<stream>")
    )


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """[H, W, 3] float32 in [0, 1] from any PIL mode."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(img.convert("I"), dtype=np.float32) / 65535.0
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "I":
        grey = np.asarray(img, dtype=np.float64)
        # 32-bit containers usually hold 16-bit data (PNG/TIFF); 8-bit data is recognisable by its range.
        scale = (
            255.0 if grey.max(initial=0) <= 255 else 65535.0 if grey.max(initial=0) <= 65535 else 2**32 - 1
        )
        return np.repeat((grey / scale).clip(0, 1).astype(np.float32)[:, :, None], 3, axis=2)
    if mode == "F":
        grey = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0).clip(0, 1)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    rgb = img.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0


def encode_image(image: torch.Tensor, fmt: str = "png", quality: int = 95) -> bytes:
    """[3, H, W] in [0, 1] → encoded bytes, rounded to 8 bits. `fmt`: a key or value of
    `formats.OUTPUT_FORMATS` (png, jpg/jpeg, webp: what a run writes) or another format PIL can save."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a [3, H, W] image, got shape {tuple(image.shape)}")
    array = (
        (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    )
    pil_format = OUTPUT_FORMATS.get(fmt.lower(), fmt).upper()
    buf = io.BytesIO()
    kwargs = {"quality": quality} if pil_format in ("JPEG", "WEBP") else {}
    Image.fromarray(array, mode="RGB").save(buf, format=pil_format, **kwargs)
    return buf.getvalue()


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) with the longer side equal to `long_side`, aspect ratio kept, each side at least 1."""
    if height <= 0 or width <= 0 or long_side <= 0:
        raise ValueError(f"invalid sizes {height}x{width} → {long_side}")
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_to(image: torch.Tensor, shape: tuple[int, int], *, clamp: bool = True) -> torch.Tensor:
    """[3,H,W] or [B,C,H,W] resized to `shape` (bilinear, antialiased when shrinking), kept in [0, 1] unless
    `clamp` is False (fields that are not pixels, such as Adam's moments)."""
    batched = image.dim() == 4
    x = image if batched else image.unsqueeze(0)
    if tuple(x.shape[-2:]) != tuple(shape):
        x = F.interpolate(x.float(), size=shape, mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp(0.0, 1.0) if clamp else x
    return x if batched else x.squeeze(0)


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """[3,H,W] or [B,3,H,W] resized so that the longer side is `long_side`."""
    h, w = image.shape[-2:]
    return resize_to(image, resized_shape(int(h), int(w), long_side))


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "max_file_bytes",
    "reduce_factor",
    "decode_image",
    "encode_image",
    "resize_long_side",
    "resize_to",
    "resized_shape",
]
