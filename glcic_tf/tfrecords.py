"""Images to TFRecords: per-file normalisation (Pillow) and the Apache Beam pipeline.

Every input file is read once through `apache_beam.io.filesystems.FileSystems` (local paths,
`gs://`, `s3://`, ... whatever Beam supports) and decoded once with Pillow. A file either becomes
one `tf.train.Example` (schema in `glcic_tf.data`) or one line in the rejects file with a stable
reason code; the pipeline never fails on a bad file.

Normalisation rules (`normalize_image_bytes`):

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

Outputs of `build_pipeline` / `run` for an output prefix `DIR/NAME`:

* `DIR/NAME-train-SSSSS-of-NNNNN.tfrecord` and `DIR/NAME-val-SSSSS-of-MMMMM.tfrecord`,
* `DIR/NAME-rejects.jsonl`: one `{"path": ..., "reason": ...}` per rejected file,
* `DIR/NAME-dataset_info.json` (`glcic_tf.datasets`): counts per split, rejects by reason, the
  train split's mean pixel (RGB in [0, 1], exact: sum of all decoded train pixels / pixel count,
  via a Beam `CombineFn`) and pixel count, size statistics per split, the shard files (names
  relative to the metadata file), their count and bytes per split, `min_side` and a creation
  timestamp. Each prefix has its own metadata, so datasets share a folder; writing to a prefix
  that holds a dataset is refused unless `overwrite`, which first removes all its old files.

Shards are sized by bytes: each split gets ceil(input bytes of its files / `shard_size_mb`)
shards (at most one per file, at least one), the split of every matched file being known before
the pipeline starts (it is a hash of the path), so `WriteToTFRecord` gets exact `num_shards`.
Output bytes follow input bytes for files kept as they are (8-bit RGB JPEG/PNG); re-encoded
files (16-bit, CMYK, TIFF, ...) may shrink or grow. 128 MB shards suit tf.data's interleave
(`data.make_dataset` reads up to 16 at once) and Beam's parallel writes alike.

Progress (`progress_every` seconds > 0, DirectRunner): each worker's `NormalizeFn` writes its
counts to a small file in a local temporary folder and the launching process prints one line
per period, e.g. `make_tfrecords: 1200/5000 files (24%), 1188 written, 12 rejected, 41.3
images/s, about 1.5 min left`. Remote runners (Dataflow) show progress in their own UI.

The split is a pure function of the path: `key = sha1(path)[:16]` (hex; the path taken relative
to `key_root` when one is given, so a dataset keeps its split when moved between file systems) and
an example goes to `val` iff `int(key, 16) < val_fraction * 2**64`. Re-running gives the same
split, and adding files never moves existing ones between splits.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import math
import os
import posixpath
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from typing import Any, Callable, Iterable, Sequence

import apache_beam as beam
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from glcic_tf import datasets
from glcic_tf.data import (
    FEATURE_CHANNELS,
    FEATURE_ENCODED,
    FEATURE_FORMAT,
    FEATURE_HEIGHT,
    FEATURE_KEY,
    FEATURE_WIDTH,
)

# Refuse images declaring more pixels than this (or a side above MAX_SIDE) before decoding: a
# 100 MP RGB image already needs 300 MB decoded; a crafted header can claim 10^10 pixels.
MAX_PIXELS = 100_000_000
MAX_SIDE = 30_000
JPEG_QUALITY = 95
# Default shard size (MB = 2**20 bytes of input): tf.data's guide and TFDS aim at 100-200 MB.
DEFAULT_SHARD_SIZE_MB = 128.0

SPLITS = ("train", "val")
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


def split_of(key: str, val_fraction: float) -> str:
    """The split of `key`: "val" iff int(key, 16) < val_fraction * 2**64, else "train"."""
    return "val" if int(key, 16) < val_fraction * 2.0**64 else "train"


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


def to_example_bytes(image: NormalizedImage) -> bytes:
    """Serialises a `NormalizedImage` as a `tf.train.Example` in the `glcic_tf.data` schema."""
    import tensorflow as tf

    def _bytes(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def _int(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        FEATURE_ENCODED: _bytes(image.encoded),
        FEATURE_FORMAT: _bytes(image.format.encode()),
        FEATURE_HEIGHT: _int(image.height),
        FEATURE_WIDTH: _int(image.width),
        FEATURE_CHANNELS: _int(3),
        FEATURE_KEY: _bytes(image.key.encode()),
    })).SerializeToString()


# ------------------------------------------------------------------------------------------------
# Beam pipeline


@dataclasses.dataclass(frozen=True)
class ImageStats:
    """Per-image numbers combined into the split statistics (small: cheap to shuffle)."""

    height: int
    width: int
    channel_sums: tuple[int, int, int]


class SplitStatsFn(beam.CombineFn):
    """Count, exact per-channel pixel sums and size statistics of a split.

    The accumulator holds Python integers, so the mean pixel is exact for any dataset size.
    """

    def create_accumulator(self) -> dict:
        return {"count": 0, "pixels": 0, "sums": [0, 0, 0], "min_h": None, "max_h": 0,
                "sum_h": 0, "min_w": None, "max_w": 0, "sum_w": 0}

    def add_input(self, acc: dict, s: ImageStats) -> dict:
        acc["count"] += 1
        acc["pixels"] += s.height * s.width
        acc["sums"] = [a + b for a, b in zip(acc["sums"], s.channel_sums)]
        acc["min_h"] = s.height if acc["min_h"] is None else min(acc["min_h"], s.height)
        acc["min_w"] = s.width if acc["min_w"] is None else min(acc["min_w"], s.width)
        acc["max_h"] = max(acc["max_h"], s.height)
        acc["max_w"] = max(acc["max_w"], s.width)
        acc["sum_h"] += s.height
        acc["sum_w"] += s.width
        return acc

    def merge_accumulators(self, accs: Iterable[dict]) -> dict:
        out = self.create_accumulator()
        for a in accs:
            out["count"] += a["count"]
            out["pixels"] += a["pixels"]
            out["sums"] = [x + y for x, y in zip(out["sums"], a["sums"])]
            for k in ("min_h", "min_w"):
                if a[k] is not None:
                    out[k] = a[k] if out[k] is None else min(out[k], a[k])
            for k in ("max_h", "max_w"):
                out[k] = max(out[k], a[k])
            out["sum_h"] += a["sum_h"]
            out["sum_w"] += a["sum_w"]
        return out

    def extract_output(self, acc: dict) -> dict:
        n = acc["count"]
        return {
            "count": n,
            "pixels": acc["pixels"],
            "mean_pixel": ([v / acc["pixels"] / 255.0 for v in acc["sums"]]
                           if acc["pixels"] else None),
            "height": {"min": acc["min_h"], "max": acc["max_h"] if n else None,
                       "mean": acc["sum_h"] / n if n else None},
            "width": {"min": acc["min_w"], "max": acc["max_w"] if n else None,
                      "mean": acc["sum_w"] / n if n else None},
        }


class _ProgressFile:
    """One DoFn instance's counts, written to PROGRESS_DIR/<uuid>.json at most every 0.5 s."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, f"{uuid.uuid4().hex}.json")
        self.done = self.rejects = 0
        self._written = 0.0

    def add(self, rejected: bool) -> None:
        self.done += 1
        self.rejects += int(rejected)
        if time.monotonic() - self._written >= 0.5:
            self.flush()

    def flush(self) -> None:
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"done": self.done, "rejects": self.rejects}, f)
            os.replace(tmp, self.path)
        except OSError:  # progress is best effort; the folder may be gone at shutdown
            pass
        self._written = time.monotonic()


def read_progress(directory: str) -> tuple[int, int]:
    """(files done, rejects) summed over the progress files in `directory`."""
    done = rejects = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0, 0
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                counts = json.load(f)
        except (OSError, ValueError):
            continue
        done += int(counts.get("done", 0))
        rejects += int(counts.get("rejects", 0))
    return done, rejects


def format_progress(done: int, total: int, rejects: int, elapsed: float) -> str:
    """`make_tfrecords: 1200/5000 files (24%), 1188 written, 12 rejected, 41.3 images/s, ...`"""
    rate = done / elapsed if elapsed > 0 else 0.0
    line = (f"make_tfrecords: {done}/{total} files ({100.0 * done / max(total, 1):.0f}%), "
            f"{done - rejects} written, {rejects} rejected, {rate:.1f} images/s")
    if 0 < done < total and rate > 0:
        left = (total - done) / rate
        line += (f", about {left / 60:.1f} min left" if left >= 60 else
                 f", about {left:.0f} s left")
    return line


class NormalizeFn(beam.DoFn):
    """Per file: read via FileSystems, normalise; tagged outputs train / val / stats / rejects."""

    def __init__(self, min_side: int, val_fraction: float, key_root: str | None,
                 progress_dir: str | None = None):
        super().__init__()
        self.min_side = min_side
        self.val_fraction = val_fraction
        self.key_root = key_root
        self.progress_dir = progress_dir
        self._progress = None

    def setup(self) -> None:
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # worker-wide: truncated files are rejects
        if self.progress_dir and os.path.isdir(self.progress_dir):
            self._progress = _ProgressFile(self.progress_dir)

    def finish_bundle(self) -> None:
        if self._progress is not None:
            self._progress.flush()

    def process(self, path: str):
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
        except Exception as e:  # noqa: BLE001 - any file-system failure is a per-file reject
            result = Reject(path, "unreadable", f"{type(e).__name__}: {e}")
        else:
            result = normalize_image_bytes(data, path, self.min_side, key_root=self.key_root)
        if self._progress is not None:
            self._progress.add(isinstance(result, Reject))
        if isinstance(result, Reject):
            beam.metrics.Metrics.counter("glcic_tf", f"reject_{result.reason}").inc()
            yield beam.pvalue.TaggedOutput("rejects", result.to_json())
            return
        split = split_of(result.key, self.val_fraction)
        sums = result.pixels.reshape(-1, 3).sum(axis=0, dtype=np.int64)
        beam.metrics.Metrics.counter("glcic_tf", f"written_{split}").inc()
        yield beam.pvalue.TaggedOutput(
            "stats", (split, ImageStats(result.height, result.width, tuple(int(v) for v in sums))))
        yield beam.pvalue.TaggedOutput(split, to_example_bytes(result))


def _write_info(_, info_path: str, base: dict, stats: dict, by_reason: dict[str, int],
                train_files: list[str], val_files: list[str]) -> None:
    """Writes PREFIX-dataset_info.json via FileSystems (runs once, on a worker, after the shards
    are final: the shard names come from the writes' outputs)."""
    empty = SplitStatsFn().extract_output(SplitStatsFn().create_accumulator())
    splits = {s: stats.get(s, empty) for s in SPLITS}
    files = {"train": sorted(train_files), "val": sorted(val_files)}
    sizes = {s: sum(m.size_in_bytes for r in FileSystems.match(fs) for m in r.metadata_list)
             if fs else 0 for s, fs in files.items()}
    info = dict(base)
    info.update({
        "counts": {s: splits[s]["count"] for s in SPLITS},
        "num_rejects": sum(by_reason.values()),
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "mean_pixel": splits["train"]["mean_pixel"],
        "num_pixels": {s: splits[s]["pixels"] for s in SPLITS},
        "size_stats": {s: {"height": splits[s]["height"], "width": splits[s]["width"]}
                       for s in SPLITS},
        "split_mean_pixel": {s: splits[s]["mean_pixel"] for s in SPLITS},
        # Names relative to the metadata file's folder (the shards sit beside it).
        "shard_files": {s: [posixpath.basename(p) for p in fs] for s, fs in files.items()},
        "num_shards": {s: len(fs) for s, fs in files.items()},
        "shard_bytes": sizes,
    })
    tmp = info_path + ".tmp"
    with FileSystems.create(tmp, mime_type="application/json") as f:
        f.write((json.dumps(info, indent=2) + "\n").encode())
    FileSystems.rename([tmp], [info_path])


def _output_dir(output_prefix: str) -> str:
    return FileSystems.split(output_prefix)[0]


def match_inputs(inputs: Sequence[str]) -> dict[str, int]:
    """{path: bytes} of the files matched by `inputs` (globs); raises if a glob matches nothing."""
    if not inputs:
        raise ValueError("no input globs given")
    paths: dict[str, int] = {}
    for pattern, result in zip(inputs, FileSystems.match(list(inputs))):
        if not result.metadata_list:
            raise FileNotFoundError(f"input glob {pattern!r} matches no files")
        for m in result.metadata_list:
            paths[m.path] = m.size_in_bytes
    return paths


def plan_shards(files: dict[str, int], *, val_fraction: float, key_root: str | None = None,
                shard_size_mb: float = DEFAULT_SHARD_SIZE_MB) -> dict[str, int]:
    """Shards per split: ceil(input bytes of the split's files / shard size), between 1 and
    the split's file count. The split of each file is known from its path (`split_of`)."""
    if shard_size_mb <= 0:
        raise ValueError(f"shard_size_mb must be > 0, got {shard_size_mb}")
    num_bytes = {s: 0 for s in SPLITS}
    num_files = {s: 0 for s in SPLITS}
    for path, size in files.items():
        split = split_of(image_key(path, key_root), val_fraction)
        num_bytes[split] += size
        num_files[split] += 1
    limit = shard_size_mb * 2**20
    return {s: max(1, min(num_files[s], math.ceil(num_bytes[s] / limit))) for s in SPLITS}


def build_pipeline(pipeline, inputs: Sequence[str], output_prefix: str, *,
                   shards: int | dict[str, int], val_fraction: float = 0.05,
                   min_side: int = 128, key_root: str | None = None,
                   shard_size_mb: float | None = None, progress_dir: str | None = None) -> None:
    """Adds the images-to-TFRecords transforms to `pipeline` (see the module docstring).

    Args:
      pipeline: a `beam.Pipeline`.
      inputs: file globs (any file system Beam supports).
      output_prefix: `DIR/NAME`; shards, rejects and `DIR/NAME-dataset_info.json` go there.
      shards: {"train": n, "val": m} (see `plan_shards`), or a total split between train and
        val in proportion (at least 1 each).
      val_fraction: expected fraction of files in the val split, in [0, 1).
      min_side: files whose shorter side is below this are rejected as "too_small".
      key_root: optional root the paths are keyed relative to (see `image_key`).
      shard_size_mb: the shard size the counts were planned for (recorded in the metadata).
      progress_dir: local folder for progress counts (see the module docstring), or None.
    """
    total = sum(shards.values()) if isinstance(shards, dict) else shards
    _check_args(inputs, total, val_fraction, min_side)
    if isinstance(shards, dict):
        num_shards = {s: int(shards[s]) for s in SPLITS}
        if min(num_shards.values()) < 1:
            raise ValueError(f"every split needs at least one shard, got {num_shards}")
    else:
        val_shards = max(1, round(shards * val_fraction))
        num_shards = {"train": max(1, shards - val_shards), "val": val_shards}
    outputs = (
        pipeline
        | "Globs" >> beam.Create(list(inputs))
        | "Match" >> fileio.MatchAll()
        | "Paths" >> beam.Map(lambda m: m.path)
        # Distinct drops files matched by two globs and breaks fusion, so the expensive decode
        # below is spread over workers instead of running where the (few) globs were expanded.
        | "Distinct" >> beam.Distinct()
        | "Normalize" >> beam.ParDo(NormalizeFn(min_side, val_fraction, key_root, progress_dir))
        .with_outputs("train", "val", "stats", "rejects"))

    shard_files = {}
    for split in SPLITS:
        shard_files[split] = (
            outputs[split]
            | f"Write_{split}" >> beam.io.WriteToTFRecord(
                f"{output_prefix}-{split}", file_name_suffix=".tfrecord",
                num_shards=num_shards[split]))
    _ = (outputs.rejects
         | "WriteRejects" >> beam.io.WriteToText(
             datasets.rejects_path(output_prefix), num_shards=1, shard_name_template=""))
    stats = outputs.stats | "SplitStats" >> beam.CombinePerKey(SplitStatsFn())
    reject_counts = (outputs.rejects
                     | "RejectReason" >> beam.Map(lambda line: json.loads(line)["reason"])
                     | "CountReasons" >> beam.combiners.Count.PerElement())

    name = posixpath.basename(output_prefix)
    base = {
        "name": name,
        "format_version": datasets.FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": list(inputs),
        "min_side": min_side,
        "val_fraction": val_fraction,
        "key_root": key_root,
        "shard_size_mb": shard_size_mb,
        "shard_patterns": {s: f"{name}-{s}-*-of-{n:05d}.tfrecord" for s, n in num_shards.items()},
        "rejects_file": posixpath.basename(datasets.rejects_path(output_prefix)),
        "max_pixels": MAX_PIXELS,
        "max_side": MAX_SIDE,
    }
    _ = (pipeline
         | "InfoTrigger" >> beam.Create([None])
         | "WriteInfo" >> beam.Map(
             _write_info, info_path=datasets.info_path(output_prefix), base=base,
             stats=beam.pvalue.AsDict(stats),
             by_reason=beam.pvalue.AsDict(reject_counts),
             train_files=beam.pvalue.AsList(shard_files["train"]),
             val_files=beam.pvalue.AsList(shard_files["val"])))


def _check_args(inputs: Sequence[str], shards: int | None, val_fraction: float,
                min_side: int) -> None:
    if isinstance(inputs, str):
        raise TypeError(f"inputs must be a list of globs, got the string {inputs!r}")
    if shards is not None and shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")


def _is_local_runner(options) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return name is None or name.lower().removesuffix("runner") in (
        "direct", "swappingdirect", "bundlebased", "fnapi", "prism")


class _ProgressPrinter:
    """A thread printing `format_progress` lines every `every` seconds until stopped."""

    def __init__(self, directory: str, total: int, every: float, log: Callable[[str], None]):
        self.directory, self.total, self.every, self.log = directory, total, every, log
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="make_tfrecords-progress",
                                        daemon=True)

    def _loop(self) -> None:
        last = None
        while not self._stop.wait(self.every):
            done, rejects = read_progress(self.directory)
            if (done, rejects) == last and done >= self.total:
                continue  # every file read: the shards and metadata are being written
            last = (done, rejects)
            line = format_progress(done, self.total, rejects, time.perf_counter() - self.start)
            if done >= self.total:
                line += "; writing shards and metadata"
            self.log(line)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(inputs: Sequence[str], output_prefix: str, *, shards: int | None = None,
        shard_size_mb: float = DEFAULT_SHARD_SIZE_MB, val_fraction: float = 0.05,
        min_side: int = 128, key_root: str | None = None, overwrite: bool = False,
        progress_every: float = 0.0, log: Callable[[str], None] | None = None,
        pipeline_args: Iterable[str] = ()) -> dict[str, Any]:
    """Runs the pipeline to completion and returns the written metadata.

    Args:
      inputs: file globs.
      output_prefix: `DIR/NAME` of the outputs.
      shards: total shards (train + val, split in proportion); default: sized by bytes.
      shard_size_mb: target shard size in MB (2**20 bytes) of input, when `shards` is None.
      val_fraction: fraction of files in the val split (by hash of the path).
      min_side: minimum shorter side.
      key_root: optional root the paths are keyed relative to.
      overwrite: replace an existing dataset at `output_prefix` (its files are removed first);
        without it an existing one is refused.
      progress_every: seconds between progress lines (0: none); local runners only.
      log: where progress and the final summary line go (default: stderr when
        `progress_every` > 0, else nowhere).
      pipeline_args: Beam pipeline options (`--runner`, `--direct_num_workers`, ...).
        DirectRunner by default.

    Returns:
      The content of `PREFIX-dataset_info.json`.

    Raises:
      datasets.DatasetExistsError: `output_prefix` holds a dataset and `overwrite` is False.
      FileNotFoundError: a glob matches no file.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    inputs = list(inputs) if not isinstance(inputs, str) else inputs
    _check_args(inputs, shards, val_fraction, min_side)
    if shards is None and not shard_size_mb > 0:
        raise ValueError(f"shard_size_mb must be > 0, got {shard_size_mb}")
    if log is None and progress_every > 0:
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    if not posixpath.basename(output_prefix.rstrip("/")) or output_prefix.endswith("/"):
        raise datasets.DatasetError(f"--output must be a prefix DIR/NAME (e.g. shards/photos), "
                                    f"got the folder {output_prefix!r}")
    files = match_inputs(inputs)
    plan: int | dict[str, int] = shards if shards is not None else plan_shards(
        files, val_fraction=val_fraction, key_root=key_root, shard_size_mb=shard_size_mb)
    # Refused (or cleared) before anything is written.
    datasets.prepare_output(output_prefix, overwrite)
    out_dir = _output_dir(output_prefix)
    if out_dir and not FileSystems.exists(out_dir):
        FileSystems.mkdirs(out_dir)
    options = PipelineOptions(list(pipeline_args))
    progress_dir = (tempfile.mkdtemp(prefix="glcic_tfr_progress_")
                    if progress_every > 0 and _is_local_runner(options) else None)
    start = time.perf_counter()
    try:
        p = beam.Pipeline(options=options)
        build_pipeline(p, inputs, output_prefix, shards=plan, val_fraction=val_fraction,
                       min_side=min_side, key_root=key_root,
                       shard_size_mb=None if shards is not None else shard_size_mb,
                       progress_dir=progress_dir)
        if progress_dir is None:
            p.run().wait_until_finish()
        else:
            with _ProgressPrinter(progress_dir, len(files), progress_every, log):
                p.run().wait_until_finish()
    finally:
        if progress_dir is not None:
            shutil.rmtree(progress_dir, ignore_errors=True)
    with FileSystems.open(datasets.info_path(output_prefix)) as f:
        info = json.loads(f.read().decode())
    if log is not None:
        elapsed = time.perf_counter() - start
        counts, shards_ = info["counts"], info["num_shards"]
        mb = {s: info["shard_bytes"][s] / 2**20 for s in SPLITS}
        log(f"make_tfrecords: {len(files)} files in {elapsed:.1f} s "
            f"({len(files) / max(elapsed, 1e-9):.1f} images/s): {counts['train']} train, "
            f"{counts['val']} val, {info['num_rejects']} rejected; shards: "
            f"{shards_['train']} train ({mb['train']:.1f} MB), {shards_['val']} val "
            f"({mb['val']:.1f} MB); {datasets.info_path(output_prefix)}")
    return info
