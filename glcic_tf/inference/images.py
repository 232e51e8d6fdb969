"""Images and masks as completion takes them: files, arrays, and what counts as a hole.

Any image size and any mask are accepted, as by the authors' `inpaint.lua`: the hole is
`gray(mask) >= HOLE_THRESHOLD` (0.2, the official threshold; white = hole), where gray is the
ITU-R 601 luma of a colour mask, multiplied by its alpha when it has one, so white strokes on a
transparent layer work. `load_image`/`load_mask`/`save_image` read and write files;
`as_rgb_uint8`/`as_hole` check arrays; every problem is a `CompletionError` whose message names
the file (or array) and what is wrong with it.
"""

from __future__ import annotations

import os

import numpy as np

HOLE_THRESHOLD = 0.2
# ITU-R 601 luma weights (they add up to exactly 1, so white stays 1.0).
LUMA = (0.299, 0.587, 0.114)


class CompletionError(ValueError):
    """An image, mask or model cannot be used; the message names the file and the problem."""


def load_image(path: str) -> np.ndarray:
    """Reads an image file as uint8 RGB [H, W, 3] (gray and RGBA are converted, alpha dropped).

    Raises:
      CompletionError: the file does not exist or is not a readable image.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise CompletionError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, np.float64) / 65535.0 * 255.0
                gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            return np.asarray(im.convert("RGB"), np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CompletionError(f"{path}: cannot read image ({e})") from e


def load_mask(path: str) -> np.ndarray:
    """Reads a mask file as float32 [H, W] in [0, 1]; >= 0.2 is hole (white = hole).

    Gray, gray+alpha, RGB, RGBA and palette images are accepted: colour is reduced to luma
    (ITU-R 601) and multiplied by alpha when there is one.

    Raises:
      CompletionError: the file does not exist or is not a readable image.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise CompletionError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA")
                mode = "RGBA"
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.clip(np.asarray(im, np.float32) / 65535.0, 0.0, 1.0)
            if mode == "F":
                return np.clip(np.asarray(im, np.float32), 0.0, 1.0)
            if mode in ("1", "L"):
                return np.asarray(im.convert("L"), np.float32) / 255.0
            if mode == "LA":
                la = np.asarray(im, np.float32) / 255.0
                return la[..., 0] * la[..., 1]
            if mode not in ("RGB", "RGBA"):
                im = im.convert("RGBA")
            arr = np.asarray(im, np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CompletionError(f"{path}: cannot read mask ({e})") from e
    gray = arr[..., :3] @ np.asarray(LUMA, np.float32)
    if arr.shape[-1] == 4:
        gray = gray * arr[..., 3]
    return gray.astype(np.float32)


def save_image(path: str, image: np.ndarray) -> None:
    """Writes uint8 [H, W, 3] RGB or [H, W] gray; the format follows the extension."""
    from PIL import Image

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)


def as_rgb_uint8(image, name: str) -> np.ndarray:
    """uint8 [H, W, 3] from a uint8 RGB, RGBA (alpha dropped) or gray [H, W] array.

    Raises:
      CompletionError: wrong shape or dtype, or an empty image (`name` says which).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise CompletionError(f"{name}: expected an image [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise CompletionError(f"{name}: expected a uint8 image, got dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise CompletionError(f"{name}: empty image of shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def as_hole(mask, name: str) -> np.ndarray:
    """bool [H, W], True = hole, from a bool mask, a uint8 one (>= 0.2 * 255) or a float one
    (>= 0.2), [H, W] or [H, W, 1].

    Raises:
      CompletionError: any other shape (colour masks go through `load_mask` first).
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise CompletionError(f"{name}: expected a mask [H, W] (or [H, W, 1]), got shape "
                              f"{mask.shape}; load colour masks with load_mask()")
    if mask.dtype == bool:
        return mask
    if mask.dtype == np.uint8:
        return mask >= HOLE_THRESHOLD * 255
    return mask.astype(np.float32) >= HOLE_THRESHOLD
