"""Holes from the user's mask files, alone or mixed with generated holes (tf.data, graph only).

The mask set itself (formats, decoding, the hole threshold) is `glcic_tf.data.mask_sets`.

## Training (`holes_dataset`, zipped with the images by `input_pipeline.make_dataset`)

A separate, repeated, shuffled stream of holes: each element is a file mask with probability
`mask_file_ratio` (chosen per element by a seeded stateless draw and
`tf.data.Dataset.choose_from_datasets`), else holes of `MaskConfig.kind`. A file mask is
decoded, thresholded, resized so that its shorter side is `image_size` (area average, then
thresholded again at 0.5: a pixel is a hole when at least half its footprint is), randomly
flipped horizontally and vertically, rotated by a random multiple of 90 degrees and randomly
cropped to `image_size` x `image_size`.

Empty crops. A crop without a hole pixel is retried with a fresh flip / rotation / crop, up to
`CROP_ATTEMPTS` times in all; if every attempt is empty (or the file holds no hole at all) the
example falls back to one of the paper's generated rectangles (`masks.sample_rect_holes`), so
no training example is ever without a hole.

The local patch. The `local_size` patch is centred on the bounding box of the mask's holes and
clipped to the image. When the bounding box fits in the patch, the patch contains every hole
pixel; when it is larger (big masks, or holes scattered over the image) the patch covers only
its central part, and the local discriminator sees part of the completion.

## Evaluation (`input_pipeline.make_eval_dataset(mask_kind="file")`, `IndexedMasks`)

Deterministic: the image with key k gets mask number `i(k, seed)` of the sorted file list (or
of the records of the sorted TFRecord files, in order), drawn by a stateless random op from
(seed, hash(k)); no flip or rotation; shorter side resized to `image_size` and the centre square
cropped. An empty centre crop falls back to a rectangle seeded the same way. Two models, or
two builds, see identical holes.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import tensorflow as tf

from glcic_tf.config import MaskConfig
from glcic_tf.data import masks as masks_lib
from glcic_tf.data.mask_sets import (
    HOLE_THRESHOLD,
    MaskSet,
    decode_mask,
    open_mask_set,
    parse_mask_record,
    read_encoded_masks,
)

# Flip / rotation / crop attempts for a random crop with a hole before the rectangle fallback.
CROP_ATTEMPTS = 4

# Area resizing leaves values such as 0.4999999 where exactly half a footprint is a hole.
_ROUND_OFF = 1e-4
# Records held by the shuffle buffer of a TFRecord mask set (encoded masks are small).
_RECORD_SHUFFLE_BUFFER = 1024
_CYCLE_LENGTH = 8
# Independent random streams of `holes_dataset`, folded into its seed.
_STREAM_FILE, _STREAM_GENERATED, _STREAM_CHOICE = 1, 2, 3


# --- per-mask ops (graph only; eager and inside Dataset.map alike) ------------------------------


def resize_mask_shorter_side(mask: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes a {0, 1} mask so its shorter side is `size` (aspect kept); result in {0, 1}.

    Area averaging, then a pixel is a hole when at least half of its footprint was.
    """
    shape = tf.shape(mask)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    scale = tf.cast(size, tf.float64) / tf.minimum(height, width)
    new_height = tf.cast(tf.maximum(tf.round(height * scale), size), tf.int32)
    new_width = tf.cast(tf.maximum(tf.round(width * scale), size), tf.int32)
    resized = tf.image.resize(mask, tf.stack([new_height, new_width]), method="area")
    return tf.cast(resized >= HOLE_THRESHOLD - _ROUND_OFF, tf.float32)


def random_mask_crop(mask: tf.Tensor, image_size: int, seed) -> tf.Tensor:
    """Random horizontal and vertical flips, a random k*90 degree rotation, a random square crop.

    Args:
      mask: [H, W, 1] with min(H, W) >= image_size.
      image_size: side of the square crop.
      seed: [2] integer seed for stateless random ops.
    """
    s_h, s_v, s_rot, s_y, s_x = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5))
    mask = tf.cond(tf.random.stateless_uniform([], s_h) < 0.5,
                   lambda: tf.reverse(mask, axis=[1]), lambda: mask)
    mask = tf.cond(tf.random.stateless_uniform([], s_v) < 0.5,
                   lambda: tf.reverse(mask, axis=[0]), lambda: mask)
    mask = tf.image.rot90(mask, tf.random.stateless_uniform([], s_rot, 0, 4, dtype=tf.int32))
    shape = tf.shape(mask)
    y = tf.random.stateless_uniform([], s_y, 0, shape[0] - image_size + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], s_x, 0, shape[1] - image_size + 1, dtype=tf.int32)
    return tf.ensure_shape(mask[y:y + image_size, x:x + image_size], [image_size, image_size, 1])


def center_mask_crop(mask: tf.Tensor, image_size: int) -> tf.Tensor:
    """The centre `image_size` square of a mask whose shorter side is >= image_size."""
    shape = tf.shape(mask)
    y = (shape[0] - image_size) // 2
    x = (shape[1] - image_size) // 2
    return tf.ensure_shape(mask[y:y + image_size, x:x + image_size], [image_size, image_size, 1])


def local_offset_for(mask: tf.Tensor, local_size: int) -> tf.Tensor:
    """Top-left (y, x) of the `local_size` patch centred on the holes' bounding box, clipped to
    the image; int32 [2] (`masks.centred_offset`)."""
    return masks_lib.centred_offset(mask, local_size)


def file_holes(encoded: tf.Tensor, image_size: int, masks_config: MaskConfig, seed, *,
               random: bool = True) -> dict:
    """Holes from one encoded mask image, at the training size, never empty.

    Args:
      encoded: string scalar, the bytes of a mask image.
      image_size: S, the side of the square training crop.
      masks_config: `local_size`, `mask_file_invert` and the rectangles of the fallback.
      seed: [2] integer seed for stateless random ops.
      random: flip / rotate / crop at random, retrying empty crops (training); False: the
        centre crop, no flip (evaluation).

    Returns:
      {"mask": float32 [S, S, 1] in {0, 1}, "local_offset": int32 [2] (y, x),
       "from_file": bool scalar, False when the rectangle fallback was used}.
    """
    _check_sizes(image_size, masks_config)
    s_crop, s_fallback = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    full = resize_mask_shorter_side(decode_mask(encoded, masks_config.mask_file_invert),
                                    image_size)
    if random:
        def attempt(i):
            return random_mask_crop(
                full, image_size, tf.random.experimental.stateless_fold_in(s_crop, i))

        def empty(mask):
            return tf.reduce_max(mask) < 0.5

        _, mask = tf.while_loop(
            lambda i, mask: (i < CROP_ATTEMPTS) & empty(mask),
            lambda i, mask: (i + 1, attempt(tf.cast(i, tf.int64))),
            (tf.constant(1), attempt(tf.constant(0, tf.int64))),
            maximum_iterations=CROP_ATTEMPTS)
    else:
        mask = center_mask_crop(full, image_size)
    mask = tf.ensure_shape(mask, [image_size, image_size, 1])
    from_file = tf.reduce_max(mask) >= 0.5

    def fallback():
        rect = masks_lib.sample_rect_holes(image_size, masks_config, s_fallback)
        return rect["mask"], rect["local_offset"]

    mask, offset = tf.cond(from_file,
                           lambda: (mask, local_offset_for(mask, masks_config.local_size)),
                           fallback)
    return {"mask": tf.ensure_shape(mask, [image_size, image_size, 1]),
            "local_offset": tf.ensure_shape(offset, [2]), "from_file": from_file}


def _check_sizes(image_size: int, masks_config: MaskConfig) -> None:
    # The rectangle fallback needs hole_max <= local_size <= image_size.
    if not masks_config.hole_max <= masks_config.local_size <= image_size:
        raise ValueError(
            f"file holes need hole_max <= local_size <= image_size, got "
            f"hole_max={masks_config.hole_max}, local_size={masks_config.local_size}, "
            f"image_size={image_size}")


# --- streams -------------------------------------------------------------------------------------


# Stream seeds are Python ints, so that building a stream runs no TensorFlow op (it may be
# built inside a tf.function); element i of a stream gets the [2] seed fold_in(stream, i).


def _seed_pair(seed: int | Sequence[int]) -> tuple[int, int]:
    """An int or a pair of ints as a pair of non-negative ints below 2**62."""
    pair = (0, seed) if isinstance(seed, numbers.Integral) else tuple(seed)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) for v in pair):
        raise ValueError(f"seed must be an int or a pair of ints, got {seed!r}")
    return int(pair[0]) % 2**62, int(pair[1]) % 2**62


def _sub_seed(seed: tuple[int, int], stream_id: int) -> tuple[int, int]:
    """A seed for an independent stream derived from `seed`."""
    return (seed[0] * 1_000_003 + stream_id * 7_919) % 2**62, seed[1]


def _element_seed(stream_seed: tuple[int, int], index: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(tf.constant(stream_seed, tf.int64),
                                                    tf.cast(index, tf.int64))


def encoded_mask_dataset(mask_set: MaskSet, *, seed: int | Sequence[int], shuffle: bool = True,
                         num_parallel_calls: int | None = None,
                         deterministic: bool = True) -> tf.data.Dataset:
    """The set's encoded masks (string scalars), repeated forever, shuffled when `shuffle`."""
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    files = list(mask_set.files)
    # An int seed for the tf.data shuffles.
    a, b = _seed_pair(seed)
    shuffle_seed = (a * 31 + b) % (2**31 - 1)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.repeat()
    if mask_set.format == "image":
        return ds.map(tf.io.read_file, num_parallel_calls=parallel, deterministic=deterministic)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), _CYCLE_LENGTH),
                       block_length=1, num_parallel_calls=parallel, deterministic=deterministic)
    if shuffle:
        ds = ds.shuffle(_RECORD_SHUFFLE_BUFFER, seed=shuffle_seed + 1,
                        reshuffle_each_iteration=True)
    return ds.map(parse_mask_record, num_parallel_calls=parallel, deterministic=deterministic)


def file_holes_dataset(mask_set: MaskSet, image_size: int, masks_config: MaskConfig, *, seed,
                       num_parallel_calls: int | None = None,
                       deterministic: bool = True) -> tf.data.Dataset:
    """An endless, shuffled stream of file holes: {"mask", "local_offset", "from_file"}.

    Element i is augmented with the seed fold_in(seed, i), so with `deterministic` the stream
    depends only on `seed` (an int or a pair of ints).
    """
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    stream_seed = _seed_pair(seed)
    ds = encoded_mask_dataset(mask_set, seed=stream_seed, num_parallel_calls=parallel,
                              deterministic=deterministic).enumerate()
    return ds.map(
        lambda i, encoded: file_holes(encoded, image_size, masks_config,
                                      _element_seed(stream_seed, i)),
        num_parallel_calls=parallel, deterministic=deterministic)


def holes_dataset(masks_config: MaskConfig, image_size: int, *, seed,
                  mask_set: MaskSet | None = None, num_parallel_calls: int | None = None,
                  deterministic: bool = True) -> tf.data.Dataset:
    """An endless stream of holes, {"mask": [S, S, 1], "local_offset": [2]}, to zip with images.

    Each element is a file mask (from `masks_config.mask_files`) with probability
    `masks_config.mask_file_ratio`, else holes of `masks_config.kind`; the choice and every
    hole are drawn from stateless seeds folded from `seed` (an int or a pair of ints), so with
    `deterministic` the stream depends only on `seed`.

    Args:
      masks_config: hole parameters, `mask_files` and `mask_file_ratio`.
      image_size: S, the side of the square training crop.
      seed: an int or a pair of ints (e.g. (base seed, input pipeline id)).
      mask_set: an already opened `open_mask_set(masks_config.mask_files)`.
      num_parallel_calls: map parallelism (default AUTOTUNE).
      deterministic: keep element order fixed.
    """
    ratio = masks_config.mask_file_ratio
    base = _seed_pair(seed)
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls

    def stream(stream_id):
        return _sub_seed(base, stream_id)

    def generated():
        generated_seed = stream(_STREAM_GENERATED)
        return tf.data.Dataset.counter().map(
            lambda i: masks_lib.sample_holes(image_size, masks_config,
                                             _element_seed(generated_seed, i)),
            num_parallel_calls=parallel, deterministic=deterministic)

    if ratio <= 0.0:
        return generated()
    if mask_set is None:
        mask_set = open_mask_set(masks_config.mask_files)
    files = file_holes_dataset(mask_set, image_size, masks_config, seed=stream(_STREAM_FILE),
                               num_parallel_calls=parallel, deterministic=deterministic)
    files = files.map(lambda h: {"mask": h["mask"], "local_offset": h["local_offset"]})
    if ratio >= 1.0:
        return files
    choice_seed = stream(_STREAM_CHOICE)
    # 0 picks the file stream, 1 the generated one.
    choices = tf.data.Dataset.counter().map(
        lambda i: tf.cast(tf.random.stateless_uniform([], _element_seed(choice_seed, i))
                          >= ratio, tf.int64))
    return tf.data.Dataset.choose_from_datasets([files, generated()], choices)


class IndexedMasks:
    """Random access to a mask set by index, for deterministic evaluation holes.

    Image sets read the file of index i in the graph; TFRecord sets are read into memory once
    (the encoded masks, typically a few KB each).
    """

    def __init__(self, mask_set: MaskSet):
        self.mask_set = mask_set
        if mask_set.format == "image":
            self._entries = tf.constant(list(mask_set.files), tf.string)
        else:
            encoded = read_encoded_masks(mask_set)
            if not encoded:
                raise ValueError(f"the mask TFRecords {mask_set.pattern} hold no record")
            self._entries = tf.constant(encoded, tf.string)
        self.size = int(self._entries.shape[0])

    def encoded(self, index: tf.Tensor) -> tf.Tensor:
        """The encoded mask number `index` (0 <= index < size)."""
        entry = tf.gather(self._entries, index)
        return tf.io.read_file(entry) if self.mask_set.format == "image" else entry

    def eval_holes(self, image_size: int, masks_config: MaskConfig, seed) -> dict:
        """The evaluation holes for a [2] seed (e.g. (seed, hash(image key))): mask number
        uniform(seed) in [0, size), centre-cropped; {"mask", "local_offset", "from_file"}."""
        s_index, s_holes = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
        index = tf.random.stateless_uniform([], s_index, 0, self.size, dtype=tf.int64)
        return file_holes(self.encoded(index), image_size, masks_config, s_holes, random=False)
