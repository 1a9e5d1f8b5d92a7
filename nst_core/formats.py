"""The image formats a run writes, by file extension. Imports nothing, so `jobs` can use it without torch.

`nst_core.images.encode_image` writes each of these; `jobs.names` accepts exactly these extensions for a
manifest's `output_name`, so a name that passes `manifest validate` is one the run can encode. Other
formats PIL could write (GIF's palette, TIFF, BMP) are not output formats.
"""

from __future__ import annotations

OUTPUT_FORMATS: dict[str, str] = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
"""Output file extension (lower case, no dot) → the encoder's format name."""

__all__ = ["OUTPUT_FORMATS"]
