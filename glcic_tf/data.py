"""TFRecord schema and the training / evaluation input pipelines (tf.data, graph only).

## tf.train.Example schema (written by `pipelines/make_tfrecords.py`)

| feature          | type   | meaning                                                            |
|------------------|--------|--------------------------------------------------------------------|
| `image/encoded`  | bytes  | the image, 8-bit RGB; original bytes kept when already JPEG/PNG RGB |
| `image/format`   | bytes  | `jpeg` or `png`                                                    |
| `image/height`   | int64  | pixel rows                                                         |
| `image/width`    | int64  | pixel columns                                                      |
| `image/channels` | int64  | always 3 after normalisation                                       |
| `image/key`      | bytes  | stable id derived from the source path (also drives the split)     |

Beside the shards, `PREFIX-dataset_info.json` records counts per split, rejects by reason, the
train split's mean pixel value (RGB in [0, 1]), size statistics and the shard files
(`glcic_tf.datasets`: one metadata file per dataset prefix, and how readers find it).

Every reader checks its files first (`list_files` -> `check_shards`): a file that is not a
TFRecord whose first record is a `tf.train.Example` with `image/encoded` (a JSON file caught by
a glob, a folder, TFDV statistics, ...) is an `InvalidShardError` naming the file and what was
expected, before tf.data sees it.

## Training input: `make_dataset`

One function assembles the pipeline in a fixed order (see the numbered comments there): list files
-> shard by file (with an `input_context`) -> shuffle files -> repeat -> interleave the shards
(parallel; `deterministic` from `data.deterministic`) -> shuffle records (`data.shuffle_buffer`)
-> number the records (per-element seeds) -> parse + decode -> augment + holes ->
batch(drop_remainder=True) -> prefetch. Options are set in `_dataset_options`.

Each element is a dict: `image` float32 [B, S, S, 3] in [0, 1] (the ground-truth crop), `mask`
float32 [B, S, S, 1] (1 = hole), `masked` = `masks.fill_holes(image, mask, data.mean_pixel)`,
`local_offset` int32 [B, 2] (y, x of the local discriminator's patch), `real_local_offset`
int32 [B, 2] (the patch the local discriminator sees of the *real* image: that of a random
rectangle of its own, the paper's M_d; used with `loss.real_local_patch == "own_random"`),
`key` string [B].

Augmentation is exactly the paper's: the shorter side is resized to a uniform random size in
[resize_min, resize_max] keeping the aspect ratio, then a random image_size square is cropped
(plus a horizontal flip only when `data.random_flip`). Holes come from `glcic_tf.masks`; with
`masks.mask_file_ratio` > 0 a separate stream of holes (`mask_sets.holes_dataset`: the user's
mask files at that ratio, generated holes otherwise) is zipped with the augmented crops.

Randomness is stateless: every record gets a seed (base seed, record number) so its crop and
holes do not depend on thread timing. With `data.deterministic` (or an explicit `seed`) the base
seed is fixed and the whole stream, order included, is reproducible; otherwise the base seed is
drawn at random per `make_dataset` call.

Sharding. With an `input_context` (`strategy.distribute_datasets_from_function`) the function
shards itself: by file when there are at least as many shards as input pipelines, otherwise by
record (every pipeline reads all files in a fixed order and keeps every n-th record). Without
one, the auto-shard policy (used by `strategy.experimental_distribute_dataset` across workers) is
FILE when the shards are at least as many as the workers in TF_CONFIG, DATA otherwise (and
always DATA with mask files, whose zipped hole stream FILE sharding cannot split); with DATA
every worker must draw the same stream, so set `data.deterministic` or a seed there.

## Evaluation input: `make_eval_dataset`

Deterministic centre crops (shorter side resized to image_size) in file order, with holes that
depend only on the image key and a seed, so two models are scored on identical holes:
generated rectangles or strokes, or (`mask_kind="file"`) a mask of `masks.mask_files` picked by
the key and centre-cropped (`glcic_tf.mask_sets`).

## Corrupt records

Policy: a record that cannot be read (a shard truncated mid-record), parsed (garbage bytes) or
decoded (bytes that are not an image) either stops training with a clear error naming the shard,
or, with `data.skip_corrupt`, is skipped.

* `data.skip_corrupt=False` (default): tf.data's own error does not name the file, so iterate
  through `checked_iterator(dataset, file_pattern)` or catch `tf.errors.InvalidArgumentError` /
  `tf.errors.DataLossError` and raise `explain_data_error(error, file_pattern)`: it scans the
  shards (`find_corrupt_shards`) and raises `CorruptDataError` naming each corrupt shard, how
  many bad records it holds and the first problem.
* `data.skip_corrupt=True`: `ignore_errors(log_warning=True)` right after decoding drops the
  record; tf.data logs one warning per skipped record ("Error raised with error message ..."),
  and `find_corrupt_shards` counts them exactly per shard, offline.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import random
import struct
from typing import Iterator, Sequence

import tensorflow as tf

from glcic_tf import mask_sets, masks
from glcic_tf.config import DataConfig, GLCICConfig, MaskConfig

FEATURE_ENCODED = "image/encoded"
FEATURE_FORMAT = "image/format"
FEATURE_HEIGHT = "image/height"
FEATURE_WIDTH = "image/width"
FEATURE_CHANNELS = "image/channels"
FEATURE_KEY = "image/key"

# The old layout's one metadata file per folder (see `glcic_tf.datasets` for the current one).
DATASET_INFO_NAME = "dataset_info.json"

# The keys of every element of `make_dataset` / `make_eval_dataset` (the input contract).
ELEMENT_KEYS = ("image", "mask", "masked", "local_offset", "real_local_offset", "key")

# Shards read at once by the interleave (fewer when there are fewer shards).
_CYCLE_LENGTH = 16
# Range of `tf.strings.to_hash_bucket_fast` for the evaluation holes' per-key seed.
_HASH_BUCKETS = 2**62
# Bytes a TFRecord adds around each record: length (8), its CRC (4), data CRC (4).
_RECORD_OVERHEAD = 16


def read_dataset_info(path: str) -> dict:
    """The metadata of a dataset: its prefix, its `PREFIX-dataset_info.json`, a folder with one
    dataset, or a legacy `dataset_info.json` (see `glcic_tf.datasets`)."""
    from glcic_tf import datasets

    dataset = datasets.find(path)
    if dataset is None:
        raise FileNotFoundError(f"no dataset metadata for {path} (expected "
                                f"PREFIX{datasets.INFO_SUFFIX}, given as PREFIX or its path)")
    return dataset.info


# --- files ---------------------------------------------------------------------------------------


class InvalidShardError(ValueError):
    """An input file that is not a TFRecord of `tf.train.Example`s in this schema."""


_EXPECTED_SHARD = ("expected TFRecord files of tf.train.Example records with an image/encoded "
                   "bytes feature, as pipelines/make_tfrecords.py writes them")
# A first record larger than this is taken for garbage framing, not an image.
_MAX_RECORD_BYTES = 1 << 31


@functools.lru_cache(maxsize=1)
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data` (pure Python: used on 8-byte length headers)."""
    table = _crc32c_table()
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _looks_like(head: bytes) -> str:
    text = head.lstrip()[:1]
    if text in (b"{", b"["):
        return "it looks like JSON text"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return "it looks like an image file, not a TFRecord of images"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes that are not TFRecord framing"
    return "it looks like text"


def check_shard_file(path: str) -> str | None:
    """None when `path` starts like a shard of this schema, else what it is instead.

    Reads the first record only: its TFRecord length header and CRC, and whether it parses as a
    `tf.train.Example` holding `image/encoded` bytes. An empty file (a TFRecord of no record)
    passes; corrupt records further in are `find_corrupt_shards`'s job.
    """
    if tf.io.gfile.isdir(path):
        return "it is a folder"
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            header = f.read(12)
            if not header:
                return None
            if len(header) < 12:
                return (f"{len(header)} bytes, too short for a TFRecord record header "
                        f"({_looks_like(header)})")
            length, crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != crc or length > _MAX_RECORD_BYTES:
                return f"no TFRecord framing: {_looks_like(header)}"
            payload = f.read(length)
    except (tf.errors.OpError, OSError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if len(payload) < length:
        return f"truncated inside its first record ({len(payload)} of {length} bytes)"
    try:
        example = tf.train.Example.FromString(payload)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        return f"its first record is not a tf.train.Example ({type(e).__name__})"
    feature = example.features.feature.get(FEATURE_ENCODED)
    if feature is None or not feature.bytes_list.value:
        names = ", ".join(sorted(example.features.feature)) or "none"
        return (f"its first record is a tf.train.Example without {FEATURE_ENCODED} bytes "
                f"(features: {names})")
    return None


def check_shards(files: Sequence[str]) -> None:
    """Raises `InvalidShardError` naming every file that is not a shard of this schema.

    Files are checked in parallel threads (one small read each), so remote shards are cheap.
    """
    files = list(files)
    if not files:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        problems = [(f, p) for f, p in zip(files, pool.map(check_shard_file, files)) if p]
    if not problems:
        return
    shown = "; ".join(f"{f}: {p}" for f, p in problems[:3])
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    hint = ""
    if any(f.endswith((".json", ".jsonl")) for f, _ in problems):
        hint = (" (a glob over a dataset prefix also catches its metadata and rejects files: "
                "pass the dataset itself, --data DIR/NAME, or a glob ending in .tfrecord)")
    what = "is not a TFRecord shard" if len(problems) == 1 else (
        f"{len(problems)} files are not TFRecord shards")
    raise InvalidShardError(
        f"{what} of glcic_tf images: {shown}{more}; {_EXPECTED_SHARD}{hint}")


def list_files(file_pattern: str | Sequence[str], check: bool = True) -> list[str]:
    """The sorted, de-duplicated files matching one glob pattern or several.

    Args:
      file_pattern: a glob or a list of them.
      check: also check that each file is a shard of this schema (`check_shards`).

    Raises:
      FileNotFoundError: a pattern matches no file (the message names the pattern).
      InvalidShardError: with `check`, a file is not a TFRecord of this schema (names it).
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    if not patterns:
        raise ValueError("file_pattern is empty: expected a glob pattern such as "
                         "'shards/train-*.tfrecord' or a list of them")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"file patterns must be non-empty strings, got {pattern!r}")
    # Plain paths (e.g. a dataset's shard list) need no listing: checked in parallel threads.
    literal = [p for p in patterns if not any(c in p for c in "*?[")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(literal) or 1)) as pool:
        exists = dict(zip(literal, pool.map(tf.io.gfile.exists, literal)))
    files: set[str] = set()
    for pattern in patterns:
        matched = ([pattern] if exists[pattern] else []) if pattern in exists else (
            tf.io.gfile.glob(pattern))
        if not matched:
            raise FileNotFoundError(f"no TFRecord file matches {pattern!r}")
        files.update(matched)
    files_sorted = sorted(files)
    if check:
        check_shards(files_sorted)
    return files_sorted


def auto_shard_policy(num_files: int, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE when every worker (input pipeline) can get at least one shard, DATA otherwise."""
    if num_files >= num_workers:
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


def _num_workers_from_tf_config() -> int:
    """Workers (chief included) in the TF_CONFIG cluster; 1 without TF_CONFIG."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        return 1
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def _dataset_options(*, deterministic: bool,
                     shard_policy: tf.data.experimental.AutoShardPolicy) -> tf.data.Options:
    """All tf.data options of the input pipelines, in one place.

    Seeds are not an option in tf.data: they go to the shuffles and to the per-record stateless
    random ops (see `make_dataset`).
    """
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = shard_policy
    return options


# --- per-example ops (pure dict -> dict, graph only) ---------------------------------------------


def decode_example(serialized: tf.Tensor) -> dict:
    """Parses one serialized tf.train.Example and decodes its image.

    Returns:
      {"image": uint8 [H, W, 3], "key": string scalar ("" when the record has no key)}.
    """
    features = tf.io.parse_single_example(serialized, {
        FEATURE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        FEATURE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    })
    image = tf.io.decode_image(features[FEATURE_ENCODED], channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    return {"image": image, "key": features[FEATURE_KEY]}


def resize_shorter_side(image: tf.Tensor, size) -> tf.Tensor:
    """Resizes so the shorter side is `size` keeping the aspect ratio; float32 in [0, 1].

    uint8 input is scaled by 1/255; float input is taken to be in [0, 1] already.
    """
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    size = tf.cast(size, tf.float64)
    scale = size / tf.minimum(height, width)
    # max(): round-off must never take the shorter side below `size`.
    new_height = tf.cast(tf.maximum(tf.round(height * scale), size), tf.int32)
    new_width = tf.cast(tf.maximum(tf.round(width * scale), size), tf.int32)
    resized = tf.image.resize(image, tf.stack([new_height, new_width]), antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def random_resize(image: tf.Tensor, resize_min: int, resize_max: int, seed) -> tf.Tensor:
    """Resizes the shorter side to a uniform random size in [resize_min, resize_max]."""
    size = tf.random.stateless_uniform([], seed, minval=resize_min, maxval=resize_max + 1,
                                       dtype=tf.int32)
    return resize_shorter_side(image, size)


def random_resize_crop(example: dict, data: DataConfig, seed) -> dict:
    """The paper's augmentation: random shorter-side resize, random square crop (+ flip).

    Args:
      example: dict with "image" uint8 or float [H, W, 3].
      data: resize range, crop size and flip switch.
      seed: [2] integer seed.

    Returns:
      A copy of `example` whose "image" is float32 [S, S, 3] in [0, 1], S = data.image_size.
    """
    s_size, s_y, s_x, s_flip = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4))
    image = random_resize(example["image"], data.resize_min, data.resize_max, s_size)
    size = data.image_size
    shape = tf.shape(image)
    y = tf.random.stateless_uniform([], s_y, 0, shape[0] - size + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], s_x, 0, shape[1] - size + 1, dtype=tf.int32)
    image = tf.ensure_shape(image[y:y + size, x:x + size], [size, size, 3])
    if data.random_flip:
        flip = tf.random.stateless_uniform([], s_flip) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    return {**example, "image": image}


def center_crop(example: dict, image_size: int) -> dict:
    """Evaluation crop: shorter side resized to `image_size`, then the centre square."""
    image = resize_shorter_side(example["image"], image_size)
    shape = tf.shape(image)
    y = (shape[0] - image_size) // 2
    x = (shape[1] - image_size) // 2
    image = tf.ensure_shape(image[y:y + image_size, x:x + image_size],
                            [image_size, image_size, 3])
    return {**example, "image": image}


def add_holes(example: dict, masks_config: MaskConfig, mean_pixel, seed,
              kind: str | None = None) -> dict:
    """Adds "mask", "masked" and "local_offset" to an example with a square float "image".

    Args:
      example: dict with "image" float32 [S, S, 3] in [0, 1].
      masks_config: hole parameters; `kind` overrides `masks_config.kind`.
      mean_pixel: RGB fill value for hole pixels of "masked".
      seed: [2] integer seed.
    """
    image = example["image"]
    size = image.shape[0]
    if size is None or image.shape[1] != size:
        raise ValueError(f"add_holes needs a square image of static size, got {image.shape}")
    example = with_real_local_offset(example, masks_config, seed)
    return apply_holes(example, masks.sample_holes(size, masks_config, seed, kind), mean_pixel)


def with_real_local_offset(example: dict, masks_config: MaskConfig, seed) -> dict:
    """Adds "real_local_offset": the local patch of a random rectangle hole of the example's
    own (the paper's M_d for real images), drawn from a seed derived from `seed`."""
    size = example["image"].shape[0]
    real_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 0x6D64)
    return {**example, "real_local_offset": masks.sample_rect_holes(
        size, masks_config, real_seed)["local_offset"]}


def apply_holes(example: dict, holes: dict, mean_pixel) -> dict:
    """Adds "mask", "masked" and "local_offset" from given holes (e.g. a zipped hole stream).

    Args:
      example: dict with "image" float32 [S, S, 3] in [0, 1], and "real_local_offset" (else
        the holes' local offset is used for it).
      holes: dict with "mask" float32 [S, S, 1] (1 = hole) and "local_offset" int32 [2].
      mean_pixel: RGB fill value for hole pixels of "masked".
    """
    mask = holes["mask"]
    return {"real_local_offset": holes["local_offset"], **example, "mask": mask,
            "masked": masks.fill_holes(example["image"], mask, mean_pixel),
            "local_offset": holes["local_offset"]}


def add_rect_holes(example: dict, masks_config: MaskConfig, mean_pixel, seed) -> dict:
    """`add_holes` with the paper's rectangles."""
    return add_holes(example, masks_config, mean_pixel, seed, kind="rect")


def add_freeform_holes(example: dict, masks_config: MaskConfig, mean_pixel, seed) -> dict:
    """`add_holes` with free-form strokes inside the local patch."""
    return add_holes(example, masks_config, mean_pixel, seed, kind="freeform")


def _element(example: dict) -> dict:
    """Only the contract's keys, in a fixed order."""
    return {k: example[k] for k in ELEMENT_KEYS}


# --- pipelines -----------------------------------------------------------------------------------


def _resolve_seed(seed: int | None, data: DataConfig, training: bool) -> int:
    if seed is not None:
        return int(seed)
    if data.deterministic or not training:
        return int(data.seed)
    return random.SystemRandom().randrange(2**31)


def make_dataset(file_pattern: str | Sequence[str], config: GLCICConfig, *,
                 training: bool = True, batch_size: int | None = None,
                 input_context: tf.distribute.InputContext | None = None,
                 seed: int | None = None,
                 num_parallel_calls: int | None = None) -> tf.data.Dataset:
    """The training input: augmented crops with holes, batched (see the module docstring).

    Args:
      file_pattern: glob pattern(s) of TFRecord shards in the schema above.
      config: uses `config.data`, `config.masks` and `config.schedule.batch_size`.
      training: repeat forever and shuffle; False makes one pass in file order (still with
        seeded random crops and holes, e.g. for a validation loss).
      batch_size: global batch size (default `config.schedule.batch_size`).
      input_context: from `strategy.distribute_datasets_from_function`; the batch becomes the
        per-replica batch and this pipeline reads only its share of the data.
      seed: base seed (default `data.seed` when `data.deterministic` or not `training`, else
        random).
      num_parallel_calls: interleave / map / batch parallelism (default AUTOTUNE); for
        benchmarks.

    Returns:
      A dataset of dicts (image, mask, masked, local_offset, key), batch dimension static.

    Raises:
      FileNotFoundError: no shard matches, or `masks.mask_files` matches nothing (in use when
        `masks.mask_file_ratio` > 0).
      ValueError: a mask file is not an image or a TFRecord (names it).
    """
    data = config.data
    files = list_files(file_pattern)
    # Masks from files are listed (and checked) now, so that a bad glob fails before training.
    mask_set = (mask_sets.open_mask_set(config.masks.mask_files)
                if config.masks.mask_file_ratio > 0 else None)
    global_batch = config.schedule.batch_size if batch_size is None else int(batch_size)
    if global_batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {global_batch}")
    num_pipelines, pipeline_id = 1, 0
    per_replica_batch = global_batch
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        per_replica_batch = input_context.get_per_replica_batch_size(global_batch)
    base_seed = _resolve_seed(seed, data, training)
    # One pass (training=False) is always in a fixed order.
    deterministic = data.deterministic if training else True
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    by_file = len(files) >= num_pipelines
    if input_context is not None:
        shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # sharded below, by hand
    elif mask_set is not None:
        # FILE auto-sharding cannot shard the zipped hole stream (its sources are counters),
        # so workers share the work by element; distribute_datasets_from_function avoids this.
        shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    else:
        shard_policy = auto_shard_policy(len(files), _num_workers_from_tf_config())

    # 1. List files (sorted, so every pipeline starts from the same order).
    ds = tf.data.Dataset.from_tensor_slices(files)
    # 2. Shard by file: each input pipeline reads its own shards.
    if num_pipelines > 1 and by_file:
        ds = ds.shard(num_pipelines, pipeline_id)
    local_files = -(-len(files) // num_pipelines) if by_file else len(files)
    # 3. Shuffle files (not when sharding by record: every pipeline must read the same stream).
    if training and (by_file or num_pipelines == 1):
        ds = ds.shuffle(len(files), seed=base_seed + pipeline_id, reshuffle_each_iteration=True)
    # 4. Repeat the file list forever (epoch boundaries blur, which is what we want).
    if training:
        ds = ds.repeat()
    # 5. Interleave records of several shards, read in parallel.
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(local_files, _CYCLE_LENGTH),
                       block_length=1, num_parallel_calls=parallel,
                       deterministic=deterministic or (num_pipelines > 1 and not by_file))
    # 6. Shard by record when there are fewer shards than input pipelines.
    if num_pipelines > 1 and not by_file:
        ds = ds.shard(num_pipelines, pipeline_id)
    # 7. Shuffle records (serialized, so the buffer is cheap).
    if training:
        ds = ds.shuffle(data.shuffle_buffer, seed=base_seed + 7919 * (pipeline_id + 1),
                        reshuffle_each_iteration=True)
    # 8. Number the records: record i of pipeline p gets the seed (base, i * P + p).
    ds = ds.enumerate()

    def decode(index, serialized):
        return index, decode_example(serialized)

    def augment(index, example):
        seed_ = tf.stack([tf.constant(base_seed, tf.int64), index * num_pipelines + pipeline_id])
        s_crop, s_holes = tf.unstack(tf.random.experimental.stateless_split(seed_, 2))
        example = random_resize_crop(example, data, s_crop)
        if mask_set is not None:
            # Holes come from the zipped hole stream (step 10b).
            return with_real_local_offset(example, config.masks, s_holes)
        return _element(add_holes(example, config.masks, data.mean_pixel, s_holes))

    # 9. Parse + decode; with skip_corrupt, drop records that fail to read, parse or decode.
    ds = ds.map(decode, num_parallel_calls=parallel, deterministic=deterministic)
    if data.skip_corrupt:
        ds = ds.ignore_errors(log_warning=True)
    # 10. Augment + holes.
    ds = ds.map(augment, num_parallel_calls=parallel, deterministic=deterministic)
    # 10b. With mask files: zip with a separate endless stream of holes (file masks at
    # mask_file_ratio, generated otherwise), seeded by (base seed, pipeline), then apply them.
    if mask_set is not None:
        holes = mask_sets.holes_dataset(config.masks, data.image_size,
                                        seed=(base_seed, pipeline_id), mask_set=mask_set,
                                        num_parallel_calls=parallel, deterministic=deterministic)
        ds = tf.data.Dataset.zip((ds, holes)).map(
            lambda example, holes_: _element(apply_holes(example, holes_, data.mean_pixel)),
            num_parallel_calls=parallel, deterministic=deterministic)
    # 11. Batch (static batch dimension) and prefetch.
    ds = ds.batch(per_replica_batch, drop_remainder=True, num_parallel_calls=parallel,
                  deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_dataset_options(deterministic=deterministic,
                                            shard_policy=shard_policy))


def make_eval_dataset(file_pattern: str | Sequence[str], config: GLCICConfig, *,
                      mask_kind: str = "rect", seed: int = 0,
                      batch_size: int = 1) -> tf.data.Dataset:
    """The evaluation input: centre crops with holes fixed by (image key, seed).

    One pass over the files in sorted order, no shuffle, the last batch may be smaller. The
    holes of an image depend only on its `image/key` and `seed`, never on its position in the
    stream, so two models (or two runs) are scored on identical holes.

    Args:
      file_pattern: glob pattern(s) of TFRecord shards.
      config: uses `config.data` (image_size, mean_pixel, skip_corrupt) and `config.masks`.
      mask_kind: "rect" (the paper's), "freeform", or "file": a mask of `masks.mask_files`
        chosen by (key, seed), centre-cropped, no flip (see `glcic_tf.mask_sets`).
      seed: changes every hole.
      batch_size: examples per batch.

    Raises:
      ValueError: unknown `mask_kind`, or "file" without `masks.mask_files`.
      FileNotFoundError: no shard matches, or `masks.mask_files` matches nothing.
    """
    if mask_kind not in ("rect", "freeform", "file"):
        raise ValueError(f"mask_kind must be 'rect' or 'freeform', got {mask_kind!r} (or "
                         f"'file' for masks from masks.mask_files)")
    if mask_kind == "file" and not config.masks.mask_files.strip():
        raise ValueError("mask_kind='file' needs masks.mask_files: a glob of mask images or "
                         "mask TFRecords (e.g. 'masks/*.png')")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = config.data
    files = list_files(file_pattern)
    indexed = (mask_sets.IndexedMasks(mask_sets.open_mask_set(config.masks.mask_files))
               if mask_kind == "file" else None)

    def prepare(example):
        key_hash = tf.strings.to_hash_bucket_fast(example["key"], _HASH_BUCKETS)
        seed_ = tf.stack([tf.constant(seed, tf.int64), key_hash])
        example = center_crop(example, data.image_size)
        if indexed is not None:
            holes = indexed.eval_holes(data.image_size, config.masks, seed_)
            return _element(apply_holes(example, holes, data.mean_pixel))
        return _element(add_holes(example, config.masks, data.mean_pixel, seed_, mask_kind))

    ds = tf.data.TFRecordDataset(files)  # sequential: a fixed order
    ds = ds.map(decode_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if data.skip_corrupt:
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_dataset_options(
        deterministic=True, shard_policy=auto_shard_policy(len(files),
                                                           _num_workers_from_tf_config())))


# --- corrupt records -----------------------------------------------------------------------------


class CorruptDataError(RuntimeError):
    """A shard holds records that cannot be read, parsed or decoded."""


def _scan_shard(shard: str) -> str | None:
    """None when every record of `shard` reads, parses and decodes; else what is wrong."""
    size = tf.io.gfile.stat(shard).length
    problem = check_shard_file(shard)
    if problem is not None:
        return f"not a TFRecord shard of glcic_tf images: {problem}; {_EXPECTED_SHARD}"

    # Fast pass: the whole shard through tf.data in parallel; most shards stop here.
    def record_bytes(serialized):
        image = decode_example(serialized)["image"]  # raises on a bad record
        # The pixel count is returned so that the decode is not pruned as unused.
        return (tf.cast(tf.strings.length(serialized), tf.int64) + _RECORD_OVERHEAD,
                tf.size(image, out_type=tf.int64))

    try:
        framed, _ = (tf.data.TFRecordDataset(shard)
                     .map(record_bytes, num_parallel_calls=tf.data.AUTOTUNE)
                     .reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
                             lambda total, x: (total[0] + x[0], total[1] + x[1])))
        if int(framed) == size:
            return None
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
        pass

    # Slow pass, record by record, to count and locate the problems.
    bad, first, framed, index = 0, None, 0, 0
    iterator = iter(tf.data.TFRecordDataset(shard))
    while True:
        try:
            serialized = next(iterator)
        except StopIteration:
            break
        except tf.errors.DataLossError as e:
            bad += 1
            first = first or f"record {index} is truncated or its framing is corrupt " \
                             f"({_first_line(e)})"
            framed = size  # the rest of the file cannot be read
            break
        try:
            decode_example(serialized)
        except tf.errors.InvalidArgumentError as e:
            bad += 1
            first = first or f"record {index} does not parse or decode ({_first_line(e)})"
        framed += int(tf.strings.length(serialized)) + _RECORD_OVERHEAD
        index += 1
    if framed != size:
        bad += 1
        first = first or (f"{size - framed} trailing bytes after record {index - 1}: the file "
                          f"is truncated inside a record header")
    if bad == 0:
        return None
    return f"{bad} bad record(s), {index} complete record(s) read; first: {first}"


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0][:300] if message.strip() else type(error).__name__


def find_corrupt_shards(file_pattern: str | Sequence[str]) -> list[tuple[str, str]]:
    """Scans shards one by one: (shard, problem) for each with unreadable records.

    A problem is a record truncated mid-way, bytes that are not a tf.train.Example, an image
    that does not decode, or trailing bytes of a cut-off record header (which tf.data silently
    ignores). Clean shards cost one parallel decode pass; corrupt ones a second, slower pass
    that counts and locates the bad records.
    """
    found = []
    for shard in list_files(file_pattern, check=False):
        problem = _scan_shard(shard)
        if problem is not None:
            found.append((shard, problem))
    return found


def _shown_patterns(file_pattern: str | Sequence[str]) -> str:
    if isinstance(file_pattern, str):
        return file_pattern
    patterns = list(file_pattern)
    shown = ", ".join(patterns[:3])
    return shown + (f", ... ({len(patterns)} patterns)" if len(patterns) > 3 else "")


def explain_data_error(error: Exception, file_pattern: str | Sequence[str]) -> CorruptDataError:
    """A `CorruptDataError` naming the corrupt shard(s) behind a tf.data read/decode error.

    Use where a training loop catches `tf.errors.InvalidArgumentError` or
    `tf.errors.DataLossError` from the input pipeline: `raise explain_data_error(e, pattern)
    from e`. It scans every shard matching `file_pattern`, so it takes about one pass over the
    data.
    """
    shown = _shown_patterns(file_pattern)
    corrupt = find_corrupt_shards(file_pattern)
    if not corrupt:
        return CorruptDataError(
            f"reading {shown} failed ({_first_line(error)}) but no shard holds an unreadable "
            f"record; the error comes from elsewhere in the input pipeline")
    listing = "; ".join(f"{shard}: {problem}" for shard, problem in corrupt)
    return CorruptDataError(
        f"corrupt TFRecord shard(s) in {shown}: {listing}. Re-create these shards, remove them, "
        f"or set data.skip_corrupt=true to skip bad records (tf.data error: "
        f"{_first_line(error)})")


def checked_iterator(dataset: tf.data.Dataset,
                     file_pattern: str | Sequence[str]) -> Iterator[dict]:
    """Iterates `dataset`, turning a corrupt-record error into a `CorruptDataError` naming the
    shard(s)."""
    iterator = iter(dataset)
    while True:
        try:
            element = next(iterator)
        except StopIteration:
            return
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            raise explain_data_error(e, file_pattern) from e
        yield element
