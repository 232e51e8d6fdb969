"""The user's own hole masks on disk: mask sets, their two formats, decoding, writing, checking.

`MaskConfig.mask_files` names a mask set: a glob of mask images or of mask TFRecords
(`open_mask_set` lists and checks it).

* Images: PNG, JPEG, GIF (first frame) or BMP, any size, gray, RGB, RGBA or 1-bit. A pixel is a
  hole when its luminance (ITU-R 601 luma of RGB scaled to [0, 1]) is >= `HOLE_THRESHOLD` (0.5):
  white = hole, black = known. Alpha is ignored. `MaskConfig.mask_file_invert` swaps the two for
  sets that mark holes in black (`decode_mask`).
* TFRecords (file names containing `.tfrecord` or ending in `.tfr`): tf.train.Examples whose
  `mask/encoded` feature holds such an image (and `mask/key` its source name).
  `write_mask_tfrecords` writes them; from a shell:
  `python pipelines/make_mask_set.py --masks 'masks/*.png' --output masks.tfrecord`.

How masks become training and evaluation holes (crops, flips, the mix with generated holes) is
`glcic_tf.data.file_holes`.

Errors. A glob matching nothing raises FileNotFoundError naming the glob; a matched file that
is neither an image nor a TFRecord by name, or whose first bytes are not a PNG/JPEG/GIF/BMP
signature, raises ValueError naming the file when the dataset is built. Images that are
corrupt further in fail in the graph with TensorFlow's own decode error;
`find_bad_masks(pattern)` decodes every mask and names the bad ones.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Sequence

import tensorflow as tf

FEATURE_MASK_ENCODED = "mask/encoded"
FEATURE_MASK_KEY = "mask/key"

# Luminance in [0, 1] at or above which a mask pixel is a hole (before `invert`).
HOLE_THRESHOLD = 0.5

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
# The first bytes of each image format tf.io.decode_image reads.
_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_SIGNATURE_BYTES = 8


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


def parse_mask_record(serialized: tf.Tensor) -> tf.Tensor:
    """The `mask/encoded` bytes of one serialized mask record (graph only)."""
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
    ds = tf.data.TFRecordDataset(list(mask_set.files)).map(parse_mask_record)
    return [bytes(e) for e in ds.as_numpy_iterator()]


def decode_mask(encoded: tf.Tensor, invert: bool = False) -> tf.Tensor:
    """Decodes a mask image to float32 [H, W, 1] in {0, 1} (1 = hole).

    Any mode (gray, RGB, RGBA, palette, 1-bit); the hole is luminance >= HOLE_THRESHOLD, alpha
    ignored. With `invert`, dark pixels are holes instead.
    """
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.float32, expand_animations=False)
    luma = tf.image.rgb_to_grayscale(tf.ensure_shape(image, [None, None, 3]))
    hole = luma < HOLE_THRESHOLD if invert else luma >= HOLE_THRESHOLD
    return tf.cast(hole, tf.float32)


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
                    encoded = parse_mask_record(tf.constant(record)).numpy()
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
