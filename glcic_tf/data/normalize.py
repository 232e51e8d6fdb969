"""Per-file normalisation (Pillow): one image file's bytes to 8-bit RGB, or a reason to refuse it.

`normalize_image_bytes` decodes a file once with Pillow and returns a `NormalizedImage` (the
bytes to store, in the schema of `glcic_tf.data.schema`) or a `Reject` with a stable reason
code. The Beam pipeline (`glcic_tf.data.tfrecords`) runs it on every input file; it never fails
on a bad file.

Normalisation rules:

* Everything becomes 8-bit RGB. Grayscale (`L`, `1`) is replicated to three channels; palette
  (`P`) is expanded; `CMYK` and `YCbCr` are converted by Pillow; 16-bit (`I;16*`, and `I`, which
  Pillow uses for 16-bit grayscale PNGs) is scaled with `round(v * 255 / 65535)`.
* Transparency (`RGBA`, `LA`, `PA`, `P` or `RGB` with a `tRNS` colour) is composited over WHITE.
  Colour values under fully transparent pixels are undefined (often black or garbage); white is
  what image viewers and browsers show, so the training photo matches what a person sees.
* EXIF orientation is applied (`ImageOps.exif_transpose`): TensorFlow's decoders ignore EXIF, so a
  rotated phone photo would otherwise train sideways. Re-encoded images carry no EXIF.
* The original bytes are kept when they already are what training needs: an 8-bit RGB JPEG (or
  MPO, a camera JPEG with extra frames appended that JPEG decoders read as its first frame), or
  an 8-bit truecolour PNG without transparency, with no EXIF rotation to apply. Otherwise the
  pixels are re-encoded: JPEG quality 95 (4:4:4) for JPEG sources, PNG for every other source
  (lossless sources stay lossless; re-encoding them as JPEG would add artefacts).
* Colour profiles (ICC) are not applied; pixels are taken as stored (as `tf.io.decode_image` does).

Reject reasons (stable codes, see `REJECT_REASONS`): `empty`, `not_an_image`, `truncated`,
`corrupt`, `too_small` (shorter side < `min_side`), `decompression_bomb` (refused from the header,
BEFORE any pixel is decoded: more than `MAX_PIXELS` pixels or a side above `MAX_SIDE`),
`unsupported_mode` (e.g. float `F`, `LAB`) and `unreadable` (the file system failed).

Each image gets a stable key, `image_key(path) = sha1(path)[:16]` (hex; the path taken relative
to `key_root` when one is given), which also decides its split (`tfrecords.split_of`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images declaring more pixels than this (or a side above MAX_SIDE) before decoding: a
# 100 MP RGB image already needs 300 MB decoded; a crafted header can claim 10^10 pixels.
MAX_PIXELS = 100_000_000
MAX_SIDE = 30_000
JPEG_QUALITY = 95

REJECT_REASONS = ("empty", "not_an_image", "truncated", "corrupt", "too_small",
                  "decompression_bomb", "unsupported_mode", "unreadable")

_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_CONVERTIBLE_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr") + _TRANSPARENT_MODES
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class NormalizedImage:
    """A file that passed normalisation.

    Attributes:
      path: source path as given.
      key: 16 hex digits, stable id of the source (see `image_key`).
      encoded: bytes to store in `image/encoded` (original or re-encoded).
      format: "jpeg" or "png".
      pixels: the decoded image, uint8 array of shape (height, width, 3).
      reencoded: False when `encoded` are the original file bytes.
    """

    path: str
    key: str
    encoded: bytes
    format: str
    pixels: np.ndarray
    reencoded: bool

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclasses.dataclass(frozen=True)
class Reject:
    """A file that was refused. `reason` is one of `REJECT_REASONS`; `detail` is for people."""

    path: str
    reason: str
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps({"path": self.path, "reason": self.reason, "detail": self.detail})


def image_key(path: str, key_root: str | None = None) -> str:
    """Stable id of a source file: the first 16 hex digits of sha1 of its (relative) path."""
    if key_root:
        root = key_root.rstrip("/") + "/"
        if path.startswith(root):
            path = path[len(root):]
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None if `data` is no PNG."""
    if len(data) >= 26 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _has_png_chunk(data: bytes, chunk: bytes) -> bool:
    """Whether a PNG holds an ancillary chunk before its image data (walks the chunk list)."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        name = data[pos + 4:pos + 8]
        if name == chunk:
            return True
        if name in (b"IDAT", b"IEND"):
            return False
        pos += 12 + length
    return False


def _composite_over_white(im):
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(im):
    """Any supported Pillow image to 8-bit RGB (see the module docstring for the rules)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(im, dtype=np.float64)
        gray = np.clip(np.rint(np.clip(values, 0, 65535) * (255.0 / 65535.0)), 0, 255)
        return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
    if mode in _TRANSPARENT_MODES or (mode in ("P", "RGB", "L") and "transparency" in im.info):
        return _composite_over_white(im)
    return im if mode == "RGB" else im.convert("RGB")


def _encode(rgb, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        # icc_profile=None: Pillow would otherwise copy the source's (often broken) profile.
        rgb.save(buffer, format="PNG", compress_level=6, icc_profile=None)
    return buffer.getvalue()


def _decode_error(path: str, e: Exception) -> Reject:
    message = f"{type(e).__name__}: {e}"
    truncated = isinstance(e, EOFError) or "truncated" in message.lower()
    return Reject(path, "truncated" if truncated else "corrupt", message)


def normalize_image_bytes(data: bytes, path: str, min_side: int = 128, *,
                          key_root: str | None = None) -> NormalizedImage | Reject:
    """Decodes one file with Pillow and returns it as 8-bit RGB, or why it was refused.

    Pillow must be strict about truncation (`PIL.ImageFile.LOAD_TRUNCATED_IMAGES` False, its
    default); the Beam DoFn sets it in `setup()`.

    Args:
      data: the file's bytes.
      path: the file's path (for the key and messages).
      min_side: files whose shorter side is below this are rejected as "too_small".
      key_root: see `image_key`.

    Returns:
      A `NormalizedImage`, or a `Reject` whose `reason` is one of `REJECT_REASONS`.
    """
    if not data:
        return Reject(path, "empty", "zero-byte file")
    with warnings.catch_warnings():
        # Our own limit (MAX_PIXELS) replaces Pillow's DecompressionBombWarning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            return Reject(path, "decompression_bomb", str(e))
        except UnidentifiedImageError:
            return Reject(path, "not_an_image",
                          f"Pillow recognises no image format; first bytes {data[:16]!r}")
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            return _decode_error(path, e)
        width, height = im.size
        # Header checks first: nothing below this line runs for absurd or tiny images.
        if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
            return Reject(path, "decompression_bomb",
                          f"header declares {width}x{height} pixels; limit is {MAX_PIXELS} "
                          f"pixels and {MAX_SIDE} per side")
        if min(width, height) < min_side:
            return Reject(path, "too_small",
                          f"{width}x{height}: shorter side below min_side={min_side}")
        if im.mode not in _CONVERTIBLE_MODES + _SIXTEEN_BIT_MODES:
            return Reject(path, "unsupported_mode", f"Pillow mode {im.mode!r}")
        source_format = im.format
        try:
            if source_format == "PNG":
                # Chunk CRCs and the chunk list up to IEND: Pillow's decoder checks neither, but
                # TensorFlow's does, and PNG bytes are usually kept as they are.
                Image.open(io.BytesIO(data)).verify()
            im.load()
        except (OSError, EOFError, SyntaxError, ValueError, MemoryError) as e:
            return _decode_error(path, e)
        try:  # after load(): a PNG's eXIf chunk may follow the image data
            orientation = im.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to lose the photo
            orientation = 1
        mode = im.mode
        try:
            if orientation not in (1, None):
                im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
        except (OSError, ValueError) as e:
            return Reject(path, "unsupported_mode", f"mode {mode!r}: {type(e).__name__}: {e}")

    rotated = orientation not in (1, None)
    png = _png_header(data)
    if source_format in ("JPEG", "MPO"):  # MPO: camera JPEG with extra frames appended
        fmt = "jpeg"
        keep = mode == "RGB" and not rotated
    else:
        fmt = "png"
        # iCCP: colour profiles are not applied, and libpng warns on every decode of the many
        # PNGs with broken ones; re-encoding drops the chunk.
        keep = (source_format == "PNG" and png == (8, 2) and not rotated
                and not _has_png_chunk(data, b"tRNS") and not _has_png_chunk(data, b"iCCP"))
    pixels = np.asarray(rgb, dtype=np.uint8)
    encoded = data if keep else _encode(rgb, fmt)
    return NormalizedImage(path=path, key=image_key(path, key_root), encoded=encoded, format=fmt,
                           pixels=pixels, reencoded=not keep)
