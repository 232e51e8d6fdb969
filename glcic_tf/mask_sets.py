"""The user's own hole masks, read from files and mixed with generated holes (tf.data, graph only).

`MaskConfig.mask_files` names a mask set: a glob of mask images or of mask TFRecords.

* Images: PNG, JPEG, GIF (first frame) or BMP, any size, gray, RGB, RGBA or 1-bit. A pixel is a
  hole when its luminance (ITU-R 601 luma of RGB scaled to [0, 1]) is >= `HOLE_THRESHOLD` (0.5):
  white = hole, black = known. Alpha is ignored. `MaskConfig.mask_file_invert` swaps the two for
  sets that mark holes in black.
* TFRecords (file names containing `.tfrecord` or ending in `.tfr`): tf.train.Examples whose
  `mask/encoded` feature holds such an image (and `mask/key` its source name).
  `write_mask_tfrecords` writes them; from a shell:
  `python -m glcic_tf.mask_sets --masks 'masks/*.png' --output masks.tfrecord`.

## Training (`holes_dataset`, zipped with the images by `data.make_dataset`)

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

## Evaluation (`data.make_eval_dataset(mask_kind="file")`)

Deterministic: the image with key k gets mask number `i(k, seed)` of the sorted file list (or
of the records of the sorted TFRecord files, in order), drawn by a stateless random op from
(seed, hash(k)); no flip or rotation; shorter side resized to `image_size` and the centre square
cropped. An empty centre crop falls back to a rectangle seeded the same way. Two models, or
two builds, see identical holes.

Errors. A glob matching nothing raises FileNotFoundError naming the glob; a matched file that
is neither an image nor a TFRecord by name, or whose first bytes are not a PNG/JPEG/GIF/BMP
signature, raises ValueError naming the file when the dataset is built. Images that are
corrupt further in fail in the graph with TensorFlow's own decode error;
`find_bad_masks(pattern)` decodes every mask and names the bad ones.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import numbers
import os
import sys
from typing import Sequence

import tensorflow as tf

from glcic_tf import masks as masks_lib
from glcic_tf.config import MaskConfig

FEATURE_MASK_ENCODED = "mask/encoded"
FEATURE_MASK_KEY = "mask/key"

# Luminance in [0, 1] at or above which a mask pixel is a hole (before `invert`).
HOLE_THRESHOLD = 0.5
# Flip / rotation / crop attempts for a random crop with a hole before the rectangle fallback.
CROP_ATTEMPTS = 4

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
# The first bytes of each image format tf.io.decode_image reads.
_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_SIGNATURE_BYTES = 8
# Area resizing leaves values such as 0.4999999 where exactly half a footprint is a hole.
_ROUND_OFF = 1e-4
# Records held by the shuffle buffer of a TFRecord mask set (encoded masks are small).
_RECORD_SHUFFLE_BUFFER = 1024
_CYCLE_LENGTH = 8
# Independent random streams of `holes_dataset`, folded into its seed.
_STREAM_FILE, _STREAM_GENERATED, _STREAM_CHOICE = 1, 2, 3


# --- the mask set on disk ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MaskSet:
    """The files of a mask set.

    Attributes:
      pattern: the glob(s) it was listed from (for messages).
      files: sorted matched files.
      format: "image" (one mask per file) or "tfrecord" (records with `mask/encoded`).
    """

    pattern: str
    files: tuple[str, ...]
    format: str


def _file_format(path: str) -> str | None:
    name = os.path.basename(path).lower()
    if name.endswith(IMAGE_EXTENSIONS):
        return "image"
    if ".tfrecord" in name or name.endswith(".tfr"):
        return "tfrecord"
    return None


def _read_signature(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read(_SIGNATURE_BYTES)


def open_mask_set(pattern: str | Sequence[str], *, check_signatures: bool = True) -> MaskSet:
    """Lists and checks a mask set: a glob (or globs) of mask images or of mask TFRecords.

    Args:
      pattern: glob pattern(s), e.g. "masks/*.png" or "masks/train-*.tfrecord".
      check_signatures: read the first bytes of every image file (in parallel) and reject files
        that are not PNG/JPEG/GIF/BMP, naming them. Costs one small read per file.

    Raises:
      ValueError: the pattern is empty, a file is neither an image nor a TFRecord by name, the
        set mixes images and TFRecords, or an image file is not an image (names the file).
      FileNotFoundError: a glob matches no file (names the glob).
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    patterns = [p.strip() for p in patterns if isinstance(p, str) and p.strip()]
    shown = ", ".join(repr(p) for p in patterns)
    if not patterns:
        raise ValueError("the mask set's glob is empty: set masks.mask_files to a glob of mask "
                         "images (e.g. 'masks/*.png') or mask TFRecords")
    files: set[str] = set()
    for p in patterns:
        matched = tf.io.gfile.glob(p)
        if not matched:
            raise FileNotFoundError(f"masks.mask_files: no mask file matches {p!r}")
        files.update(matched)
    listed = sorted(f for f in files if not tf.io.gfile.isdir(f))
    if not listed:
        raise FileNotFoundError(f"masks.mask_files: {shown} matches only directories")
    formats = {}
    for path in listed:
        kind = _file_format(path)
        if kind is None:
            raise ValueError(
                f"mask file {path} (from {shown}) is neither an image "
                f"({'/'.join(IMAGE_EXTENSIONS)}) nor a TFRecord (.tfrecord): narrow the glob")
        formats.setdefault(kind, path)
    if len(formats) > 1:
        raise ValueError(f"the mask set {shown} mixes images ({formats['image']}) and TFRecords "
                         f"({formats['tfrecord']}): use one kind")
    kind = next(iter(formats))
    if kind == "image" and check_signatures:
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            heads = list(pool.map(_read_signature, listed))
        for path, head in zip(listed, heads):
            if not head.startswith(_SIGNATURES):
                raise ValueError(f"mask file {path} cannot be decoded: it is not a PNG, JPEG, "
                                 f"GIF or BMP image (it starts with {head!r})")
    return MaskSet(pattern=", ".join(patterns), files=tuple(listed), format=kind)


def _parse_record(serialized: tf.Tensor) -> tf.Tensor:
    return tf.io.parse_single_example(serialized, {
        FEATURE_MASK_ENCODED: tf.io.FixedLenFeature([], tf.string)})[FEATURE_MASK_ENCODED]


def read_encoded_masks(mask_set: MaskSet) -> list[bytes]:
    """Every mask's encoded bytes, in set order (sorted files; records in file order)."""
    if mask_set.format == "image":
        out = []
        for path in mask_set.files:
            with tf.io.gfile.GFile(path, "rb") as f:
                out.append(f.read())
        return out
    ds = tf.data.TFRecordDataset(list(mask_set.files)).map(_parse_record)
    return [bytes(e) for e in ds.as_numpy_iterator()]


# --- per-mask ops (graph only; eager and inside Dataset.map alike) ------------------------------


def decode_mask(encoded: tf.Tensor, invert: bool = False) -> tf.Tensor:
    """Decodes a mask image to float32 [H, W, 1] in {0, 1} (1 = hole).

    Any mode (gray, RGB, RGBA, palette, 1-bit); the hole is luminance >= HOLE_THRESHOLD, alpha
    ignored. With `invert`, dark pixels are holes instead.
    """
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.float32, expand_animations=False)
    luma = tf.image.rgb_to_grayscale(tf.ensure_shape(image, [None, None, 3]))
    hole = luma < HOLE_THRESHOLD if invert else luma >= HOLE_THRESHOLD
    return tf.cast(hole, tf.float32)


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
    return ds.map(_parse_record, num_parallel_calls=parallel, deterministic=deterministic)


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


# --- writing and checking mask sets --------------------------------------------------------------


def _mask_paths(mask_paths: str | Sequence[str]) -> list[str]:
    if isinstance(mask_paths, str):
        return list(open_mask_set(mask_paths).files)
    return [str(p) for p in mask_paths]


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _decode_problem(encoded: bytes) -> str | None:
    try:
        decode_mask(tf.constant(encoded))
    except (tf.errors.InvalidArgumentError, ValueError) as e:
        message = (getattr(e, "message", None) or str(e)).strip()
        return message.splitlines()[0][:300] if message else type(e).__name__
    return None


def write_mask_tfrecords(mask_paths: str | Sequence[str], output: str) -> int:
    """Writes mask images into one TFRecord file of `mask/encoded` (the original bytes) and
    `mask/key` (the source file name); returns the number of masks written.

    Args:
      mask_paths: a glob of mask images or a list of their paths.
      output: the TFRecord file to write (any filesystem tf.io.gfile supports).

    Raises:
      ValueError: a mask does not decode (names the file), or there is no mask.
      FileNotFoundError: the glob matches nothing.
    """
    paths = _mask_paths(mask_paths)
    if not paths:
        raise ValueError("write_mask_tfrecords: no mask paths given")
    count = 0
    with tf.io.TFRecordWriter(output) as writer:
        for path in paths:
            with tf.io.gfile.GFile(path, "rb") as f:
                encoded = f.read()
            problem = _decode_problem(encoded)
            if problem is not None:
                raise ValueError(f"mask file {path} cannot be decoded: {problem}")
            example = tf.train.Example(features=tf.train.Features(feature={
                FEATURE_MASK_ENCODED: _bytes_feature(encoded),
                FEATURE_MASK_KEY: _bytes_feature(os.path.basename(path).encode()),
            }))
            writer.write(example.SerializeToString())
            count += 1
    return count


def find_bad_masks(pattern: str | Sequence[str]) -> list[tuple[str, str]]:
    """Decodes every mask of a set: (file, or "file#record", problem) for each that fails.

    Names the file behind an in-graph decode error; one eager decode per mask.
    """
    mask_set = open_mask_set(pattern, check_signatures=False)
    bad = []
    for path in mask_set.files:
        if mask_set.format == "image":
            with tf.io.gfile.GFile(path, "rb") as f:
                problem = _decode_problem(f.read())
            if problem is not None:
                bad.append((path, problem))
            continue
        try:
            for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
                try:
                    encoded = _parse_record(tf.constant(record)).numpy()
                except tf.errors.InvalidArgumentError as e:
                    bad.append((f"{path}#{i}", f"not a mask record ({_first_line(e)})"))
                    continue
                problem = _decode_problem(encoded)
                if problem is not None:
                    bad.append((f"{path}#{i}", problem))
        except tf.errors.DataLossError as e:
            bad.append((path, f"truncated or corrupt TFRecord ({_first_line(e)})"))
    return bad


def _first_line(error: Exception) -> str:
    message = (getattr(error, "message", None) or str(error)).strip()
    return message.splitlines()[0][:300] if message else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m glcic_tf.mask_sets --masks 'masks/*.png' --output masks.tfrecord`."""
    p = argparse.ArgumentParser(
        prog="python -m glcic_tf.mask_sets",
        description="Pack mask images (white = hole) into a TFRecord file of `mask/encoded` "
                    "records for masks.mask_files / --mask-files. With --check only, decode "
                    "every mask of a set and list the bad ones.")
    p.add_argument("--masks", required=True, help="glob of mask images (or, with --check, of "
                   "mask TFRecords)")
    p.add_argument("--output", help="TFRecord file to write")
    p.add_argument("--check", action="store_true", help="only decode and report bad masks")
    args = p.parse_args(argv)
    if not args.check and not args.output:
        p.error("give --output (or --check)")
    try:
        if args.check:
            bad = find_bad_masks(args.masks)
            for name, problem in bad:
                print(f"{name}: {problem}")
            print(f"{len(bad)} bad mask(s)")
            return 1 if bad else 0
        count = write_mask_tfrecords(args.masks, args.output)
    except (ValueError, FileNotFoundError) as e:
        print(f"mask_sets: {e}", file=sys.stderr)
        return 1
    print(f"wrote {count} masks to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
