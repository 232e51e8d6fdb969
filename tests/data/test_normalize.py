"""Per-file normalisation (glcic_tf.data.normalize): modes to 8-bit RGB, kept bytes, EXIF
rotation, colour profiles and every reject reason, without Beam."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from glcic_tf.data import normalize

from helpers.data import bomb_png
from helpers.images import encode, noise, png_bytes


def _corrupt_png():
    data = bytearray(png_bytes(noise(200, 200, 0)))
    data[5000:5100] = b"\x00" * 100
    return bytes(data)


def test_rgb_png_and_jpeg_keep_original_bytes():
    png = png_bytes(noise(130, 140, 0))
    r = normalize.normalize_image_bytes(png, "a.png", 128)
    assert isinstance(r, normalize.NormalizedImage)
    assert (r.encoded, r.format, r.reencoded, r.height, r.width) == (png, "png", False, 130, 140)
    jpg = encode(noise(130, 140, 1), "JPEG", quality=90)
    r = normalize.normalize_image_bytes(jpg, "a.jpg", 128)
    assert (r.encoded, r.format, r.reencoded) == (jpg, "jpeg", False)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "PA-like", "I;16", "CMYK", "1"])
def test_modes_become_8bit_rgb(mode):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (130, 129), dtype=np.uint8)
    if mode == "I;16":
        values = rng.integers(0, 65536, (130, 129)).astype(np.uint16)
        data = png_bytes(values)  # Pillow writes a 16-bit grayscale PNG
        expected = np.repeat(np.rint(values * (255 / 65535)).astype(np.uint8)[..., None], 3, -1)
    elif mode == "L":
        data, expected = png_bytes(gray, "L"), np.repeat(gray[..., None], 3, -1)
    elif mode == "LA":
        alpha = np.where(np.arange(129) < 64, 0, 255).astype(np.uint8)[None].repeat(130, 0)
        data = png_bytes(np.stack([gray, alpha], -1), "LA")
        expected = np.repeat(np.where(alpha == 0, 255, gray)[..., None], 3, -1)
    elif mode == "RGBA":
        rgb = noise(130, 129, 4)
        alpha = rng.integers(0, 256, (130, 129), dtype=np.uint8)
        data = png_bytes(np.dstack([rgb, alpha]), "RGBA")
        a = alpha[..., None].astype(np.float64) / 255
        expected = rgb * a + 255 * (1 - a)  # over white; Pillow rounds its own way
    elif mode in ("P", "PA-like"):
        im = Image.fromarray(noise(130, 129, 5)).quantize(16)
        if mode == "PA-like":
            im.info["transparency"] = 0
        buf = io.BytesIO()
        im.save(buf, format="PNG", **({"transparency": 0} if mode == "PA-like" else {}))
        data = buf.getvalue()
        expected = np.asarray(im.convert("RGB"))
        if mode == "PA-like":
            expected = np.where((np.asarray(im) == 0)[..., None], 255, expected)
    elif mode == "CMYK":
        cmyk = Image.fromarray(noise(130, 129, 6)).convert("CMYK")
        data = encode(np.asarray(cmyk), "JPEG", "CMYK", quality=95)
        expected = None
    else:  # "1"
        bits = gray > 127
        data = png_bytes(bits)
        expected = np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, -1)
    r = normalize.normalize_image_bytes(data, f"x_{mode}", 128)
    assert isinstance(r, normalize.NormalizedImage), r
    assert r.pixels.dtype == np.uint8 and r.pixels.shape == (130, 129, 3)
    assert r.reencoded
    assert r.format == ("jpeg" if mode == "CMYK" else "png")
    decoded = tf.io.decode_image(r.encoded, channels=3).numpy()
    if mode != "CMYK":
        np.testing.assert_array_equal(decoded, r.pixels)  # lossless re-encode
    if expected is not None:
        np.testing.assert_allclose(r.pixels, expected, atol=1)


def test_exif_rotation_is_applied():
    im = np.zeros((150, 200, 3), np.uint8)
    im[:, :100] = (255, 0, 0)  # left half red
    im[:, 100:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    data = encode(im, "JPEG", quality=95, exif=exif.tobytes())
    r = normalize.normalize_image_bytes(data, "rot.jpg", 128)
    assert (r.height, r.width, r.format, r.reencoded) == (200, 150, "jpeg", True)
    assert r.pixels[20, 75, 0] > 200 and r.pixels[20, 75, 2] < 60  # red on top
    assert r.pixels[180, 75, 2] > 200 and r.pixels[180, 75, 0] < 60  # blue at the bottom


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"hello, I am text", "not_an_image"),
    (bomb_png(), "decompression_bomb"),
    (bomb_png(40_000, 200), "decompression_bomb"),  # a side above MAX_SIDE
    (png_bytes(noise(1, 1, 0)), "too_small"),
    (png_bytes(noise(127, 300, 0)), "too_small"),
    (encode(noise(200, 200, 0), "JPEG")[:3000], "truncated"),
    (encode(noise(200, 200, 0), "JPEG")[:300], "truncated"),  # inside the header
    (png_bytes(noise(200, 200, 0))[:-12], "truncated"),  # no IEND: TensorFlow refuses it
    (_corrupt_png(), "corrupt"),  # bad IDAT CRC: Pillow decodes it, TensorFlow refuses it
    (encode(np.zeros((200, 200), np.float32), "TIFF"), "unsupported_mode"),  # float mode "F"
])
def test_rejects(data, reason):
    r = normalize.normalize_image_bytes(data, "bad", 128)
    assert isinstance(r, normalize.Reject) and r.reason == reason, r
    assert r.reason in normalize.REJECT_REASONS


def test_png_colour_profile_is_dropped_by_reencoding():
    """libpng warns on every decode of a broken iCCP chunk; normalisation drops the chunk."""
    buffer = io.BytesIO()
    image = Image.new("RGB", (160, 140), (10, 200, 30))
    image.save(buffer, format="PNG", icc_profile=b"not a real profile")
    assert b"iCCP" in buffer.getvalue()
    result = normalize.normalize_image_bytes(buffer.getvalue(), "profiled.png", 128)
    assert result.reencoded and result.format == "png"
    assert b"iCCP" not in result.encoded
    assert Image.open(io.BytesIO(result.encoded)).getpixel((5, 5)) == (10, 200, 30)
