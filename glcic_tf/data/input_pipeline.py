"""The training and evaluation input pipelines (tf.data, graph only).

Both read TFRecord shards in the schema of `glcic_tf.data.schema`, listed and checked by
`glcic_tf.data.shards`, and apply the per-example ops of `glcic_tf.data.augment`.

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

Augmentation is exactly the paper's (`augment.random_resize_crop`). Holes come from
`glcic_tf.data.masks`; with `masks.mask_file_ratio` > 0 a separate stream of holes
(`file_holes.holes_dataset`: the user's mask files at that ratio, generated holes otherwise) is
zipped with the augmented crops.

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
the key and centre-cropped (`glcic_tf.data.file_holes`).

Corrupt records: with `data.skip_corrupt` both pipelines drop records that fail to read, parse
or decode; without it, `shards.checked_iterator` / `shards.explain_data_error` name the bad
shard (the policy is in `glcic_tf.data.shards`).
"""

from __future__ import annotations

import json
import os
import random
from typing import Sequence

import tensorflow as tf

from glcic_tf.config import DataConfig, GLCICConfig
from glcic_tf.data import file_holes
from glcic_tf.data import mask_sets
from glcic_tf.data.augment import (
    add_holes,
    apply_holes,
    center_crop,
    random_resize_crop,
    with_real_local_offset,
)
from glcic_tf.data.schema import decode_example
from glcic_tf.data.shards import list_files

# The keys of every element of `make_dataset` / `make_eval_dataset` (the input contract).
ELEMENT_KEYS = ("image", "mask", "masked", "local_offset", "real_local_offset", "key")

# Shards read at once by the interleave (fewer when there are fewer shards).
_CYCLE_LENGTH = 16
# Range of `tf.strings.to_hash_bucket_fast` for the evaluation holes' per-key seed.
_HASH_BUCKETS = 2**62


# --- options -------------------------------------------------------------------------------------


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
      file_pattern: glob pattern(s) of TFRecord shards (`glcic_tf.data.schema`).
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
        holes = file_holes.holes_dataset(config.masks, data.image_size,
                                         seed=(base_seed, pipeline_id), mask_set=mask_set,
                                         num_parallel_calls=parallel,
                                         deterministic=deterministic)
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
        chosen by (key, seed), centre-cropped, no flip (see `glcic_tf.data.mask_sets`).
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
    indexed = (file_holes.IndexedMasks(mask_sets.open_mask_set(config.masks.mask_files))
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
