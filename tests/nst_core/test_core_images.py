"""Image decoding: every mode is converted to RGB, every bad file gives an ImageError naming it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_core.images import ImageError, decode_image, encode_image, resize_long_side, resized_shape


def _bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 40, h: int = 30) -> Image.Image:
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None, :]
    a[..., 1] = np.linspace(0, 255, h)[:, None]
    a[..., 2] = 90
    return Image.fromarray(a)


def test_rgb_png_roundtrip_exact() -> None:
    img = _gradient()
    t = decode_image(_bytes(img, "PNG"))
    assert t.shape == (3, 30, 40) and t.dtype == torch.float32
    assert torch.equal((t * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(np.array(img)))
    again = decode_image(encode_image(t))
    assert torch.equal(again, t)
    assert decode_image(encode_image(t, "jpg")).shape == (3, 30, 40)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        decode_image(empty)
    with pytest.raises(ImageError, match="row-7: empty"):
        decode_image(b"", name="row-7")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    data = _bytes(_gradient(64, 48), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=rf"cut\.{fmt.lower()}: corrupt or truncated"):
        decode_image(path)


def test_text_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("hello, I am not a picture\n")
    with pytest.raises(ImageError, match=r"photo\.jpg: not an image file"):
        decode_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"nope\.png: cannot read"):
        decode_image(tmp_path / "nope.png")


def test_decompression_bomb_limit_is_per_call_and_leaves_pil_global_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS
    data = _bytes(Image.new("RGB", (200, 100)), "PNG")
    with pytest.raises(ImageError, match=r"bomb\.png: 200x100 = 20000 pixels exceeds the limit of 10000"):
        decode_image(data, name="bomb.png", max_pixels=10_000)
    assert decode_image(data, max_pixels=20_000).shape == (3, 100, 200)
    assert Image.MAX_IMAGE_PIXELS == before


def test_sixteen_bit_png_scaled_by_bit_depth() -> None:
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(a)
    t = decode_image(_bytes(img, "PNG"))
    assert t.shape == (3, 1, 3)
    torch.testing.assert_close(t[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))
    assert torch.equal(t[0], t[2])


def test_cmyk_jpeg() -> None:
    img = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # pure red in CMYK
    t = decode_image(_bytes(img, "JPEG", quality=95))
    mean = t.mean(dim=(1, 2))
    assert mean[0] > 0.9 and mean[1] < 0.1 and mean[2] < 0.1


def test_palette_with_transparency_composited_over_white() -> None:
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 1)
    t = decode_image(_bytes(img, "PNG", transparency=0))
    assert torch.allclose(t[:, 1, 1], torch.ones(3))  # transparent red index → white
    assert torch.allclose(t[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))


def test_rgba_and_la_alpha_over_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    t = decode_image(_bytes(rgba, "PNG"))
    assert torch.allclose(t[:, 0, 0], torch.ones(3))
    assert torch.allclose(t[:, 0, 1], torch.full((3,), 127 / 255), atol=1 / 255)
    la = Image.new("LA", (1, 1), (0, 0))
    assert torch.allclose(decode_image(_bytes(la, "PNG"))[:, 0, 0], torch.ones(3))


def test_grayscale_replicated() -> None:
    img = Image.new("L", (3, 2), 51)
    t = decode_image(_bytes(img, "PNG"))
    assert t.shape == (3, 2, 3) and torch.allclose(t, torch.full_like(t, 0.2))


def test_float_and_int32_modes() -> None:
    f = Image.fromarray(np.array([[0.0, 0.5, 2.0]], dtype=np.float32), mode="F")
    t = decode_image(_bytes(f, "TIFF"))
    torch.testing.assert_close(t[1, 0], torch.tensor([0.0, 0.5, 1.0]))
    i = Image.fromarray(np.array([[0, 255]], dtype=np.int32), mode="I")
    torch.testing.assert_close(decode_image(_bytes(i, "TIFF"))[0, 0], torch.tensor([0.0, 1.0]))


def test_exif_rotation_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    t = decode_image(_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert t.shape == (3, 40, 20)
    assert t[0, :5].mean() > 0.8 and t[2, :5].mean() < 0.2  # the left band is now on top
    assert t[0, -5:].mean() < 0.2


def test_one_by_one_pixel() -> None:
    t = decode_image(_bytes(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    assert t.shape == (3, 1, 1)
    assert resize_long_side(t, 32).shape == (3, 32, 32)


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    t = decode_image(buf.getvalue())
    assert t[0].mean() > 0.9 and t[1].mean() < 0.1


def test_resized_shape_keeps_aspect() -> None:
    assert resized_shape(300, 400, 64) == (48, 64)
    assert resized_shape(400, 300, 64) == (64, 48)
    assert resized_shape(1, 1000, 64) == (1, 64)
    batch = torch.rand(2, 3, 30, 40)
    out = resize_long_side(batch, 20)
    assert out.shape == (2, 3, 15, 20) and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_images_are_decoded_at_reduced_size(fmt: str) -> None:
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (1000, 2000, 3), dtype=np.uint8))
    data = _bytes(big, fmt)
    full = decode_image(data)
    assert tuple(full.shape) == (3, 1000, 2000)
    reduced = decode_image(data, long_side=100)
    h, w = reduced.shape[-2:]
    assert 200 <= w < 2000 and abs(w / h - 2.0) < 0.05  # at least twice the processing size, shape kept
    # The reduced decode is what a resize of the full decode would give, up to resampling differences.
    target = resize_long_side(full, 100)
    assert torch.allclose(resize_long_side(reduced, 100), target, atol=0.15)
    sliver = _bytes(Image.new("RGB", (4000, 2)), "PNG")
    assert tuple(decode_image(sliver, long_side=32).shape) == (3, 2, 4000)  # elongated images keep their size


def test_max_pixels_above_pil_default_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # PIL refuses above twice its limit
    data = _bytes(Image.new("RGB", (100, 100)), "PNG")  # 10,000 pixels
    assert decode_image(data, max_pixels=20_000).shape == (3, 100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1_000
    for limit in (5_000, 2_000):  # above and beyond twice the limit (where PIL itself refuses)
        with pytest.raises(ImageError, match=f"10000 pixels exceeds the limit of {limit} "):
            decode_image(data, max_pixels=limit)
