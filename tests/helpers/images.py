"""Encoded test images and TFRecord shards written with the library's own writer."""

import io
import os

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save_kwargs) -> bytes:
    """`array` (uint8 [H, W], [H, W, 1|3|4]) encoded by Pillow as `fmt` (PNG, JPEG, TIFF...)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    return encode(array, "PNG", mode)


def decode(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def noise(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """uint8 noise, [H, W, channels]."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic 'photo' (uint8 [H, W, 3]): per-channel low-frequency sinusoids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / float(max(h, w))
    f = rng.uniform(1, 3, (3, 2))
    image = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f[c, 0] * yy + f[c, 1] * xx))
                      for c in range(3)], -1)
    return (image * 255).astype(np.uint8)


def example_bytes(key: str, pixels: np.ndarray, fmt: str = "png") -> bytes:
    """One `tf.train.Example` in the training schema, made by `schema.to_example_bytes`."""
    from glcic_tf.data import normalize, schema

    encoded = encode(pixels, {"png": "PNG", "jpeg": "JPEG"}[fmt])
    image = normalize.NormalizedImage(path=key, key=key, encoded=encoded, format=fmt,
                                      pixels=pixels, reencoded=True)
    return schema.to_example_bytes(image)


def write_shard(path, images, keys=None, fmt: str = "png") -> str:
    """Writes `images` (uint8 [H, W, 3] arrays) as one TFRecord shard in the training schema."""
    import tensorflow as tf

    path = os.fspath(path)
    keys = keys or [f"img{i}" for i in range(len(images))]
    with tf.io.TFRecordWriter(path) as writer:
        for key, pixels in zip(keys, images):
            writer.write(example_bytes(key, pixels, fmt))
    return path
