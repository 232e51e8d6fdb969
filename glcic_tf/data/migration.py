"""Moving datasets of the old layout (one `DIR/dataset_info.json` per folder) to the current one.

Before, make_tfrecords.py wrote `DIR/dataset_info.json` for every prefix in DIR, so a second
dataset in the same folder replaced the first one's metadata. `migrate(DIR)` (`python
pipelines/migrate_datasets.py DIR`) renames that file to `DIR/NAME-dataset_info.json` in the
current format (`glcic_tf.data.datasets`), and with `recompute=True` rebuilds the metadata of
prefixes that have shards but lost their metadata by reading the shards (`recompute_info`).
"""

from __future__ import annotations

import datetime
import json

import tensorflow as tf

from glcic_tf.data.datasets import (
    FORMAT_VERSION,
    LEGACY_INFO_NAME,
    REJECTS_SUFFIX,
    SPLITS,
    DatasetError,
    info_path,
    join,
    read_json,
    shard_prefixes,
    split_path,
)


def upgrade_info(info: dict, name: str, shard_files: dict[str, list[str]] | None = None) -> dict:
    """Old metadata in the current format: relative names, format version, shard counts."""
    info = dict(info)
    info["format_version"] = FORMAT_VERSION
    info["name"] = name
    if shard_files is not None:
        info["shard_files"] = {s: sorted(split_path(f)[1] for f in shard_files.get(s, []))
                               for s in SPLITS}
    files = info.get("shard_files", {})
    if files:
        info["num_shards"] = {s: len(files.get(s, [])) for s in SPLITS}
        info["shard_patterns"] = {s: f"{name}-{s}-*-of-{len(files.get(s, [])):05d}.tfrecord"
                                  for s in SPLITS}
    info.setdefault("rejects_file", name + REJECTS_SUFFIX)
    return info


def write_info(path: str, info: dict) -> None:
    """Writes metadata through a temporary file renamed into place."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def recompute_info(prefix: str, shard_files: dict[str, list[str]]) -> dict:
    """Metadata of a dataset from its shards alone: counts, exact train mean pixel, sizes.

    Reads and decodes every record (one pass, parallel decode); rejects are not known.
    """
    from glcic_tf.data.schema import decode_example

    def stats(serialized):
        image = decode_example(serialized)["image"]
        shape = tf.shape(image, out_type=tf.int64)
        return (shape[0], shape[1],
                tf.reduce_sum(tf.cast(tf.reshape(image, [-1, 3]), tf.int64), axis=0))

    name = split_path(prefix)[1]
    info = {"name": name, "format_version": FORMAT_VERSION, "recomputed_from_shards": True,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "counts": {}, "num_pixels": {}, "split_mean_pixel": {}, "size_stats": {}}
    for split in SPLITS:
        files = shard_files.get(split, [])
        heights, widths, sums, pixels = [], [], [0, 0, 0], 0
        if files:
            ds = tf.data.TFRecordDataset(files).map(stats, num_parallel_calls=tf.data.AUTOTUNE)
            for h, w, s in ds.as_numpy_iterator():
                heights.append(int(h))
                widths.append(int(w))
                pixels += int(h) * int(w)
                sums = [a + int(b) for a, b in zip(sums, s)]
        n = len(heights)
        info["counts"][split] = n
        info["num_pixels"][split] = pixels
        info["split_mean_pixel"][split] = [v / pixels / 255.0 for v in sums] if pixels else None
        info["size_stats"][split] = {
            key: {"min": min(v) if v else None, "max": max(v) if v else None,
                  "mean": sum(v) / n if n else None}
            for key, v in (("height", heights), ("width", widths))}
    info["mean_pixel"] = info["split_mean_pixel"]["train"]
    return upgrade_info(info, name, shard_files)


def migrate(directory: str, *, recompute: bool = False,
            dry_run: bool = False) -> list[str]:
    """Moves a folder of old-layout datasets to one metadata file per prefix.

    * The old `DIR/dataset_info.json` becomes `DIR/NAME-dataset_info.json` (NAME: its `name`, or
      the folder's only shard prefix), with relative shard names and the current format.
    * With `recompute`, every other prefix that has shards but no metadata (its metadata was
      overwritten by a later dataset in the same folder) gets metadata computed from its shards.

    Returns:
      One line per action taken (or, with `dry_run`, that would be taken).
    """
    directory = directory.rstrip("/")
    if not tf.io.gfile.isdir(directory):
        raise FileNotFoundError(f"{directory} is not a folder")
    prefixes = shard_prefixes(directory)
    actions = []
    legacy = join(directory, LEGACY_INFO_NAME)
    if tf.io.gfile.exists(legacy):
        old = read_json(legacy)
        name = old.get("name")
        if not name:
            if len(prefixes) != 1:
                raise DatasetError(
                    f"{legacy} names no dataset and the folder holds {len(prefixes)} shard "
                    f"prefixes; cannot tell which dataset it belongs to")
            name = split_path(next(iter(prefixes)))[1]
        prefix = join(directory, name)
        target = info_path(prefix)
        if tf.io.gfile.exists(target):
            raise DatasetError(f"{target} exists already; remove {legacy} by hand if it is stale")
        actions.append(f"{legacy} -> {target}")
        if not dry_run:
            write_info(target, upgrade_info(old, name, prefixes.get(prefix)))
            tf.io.gfile.remove(legacy)
    for prefix, files in sorted(prefixes.items()):
        target = info_path(prefix)
        if tf.io.gfile.exists(target) or any(a.endswith(" -> " + target) for a in actions):
            continue
        if not recompute:
            actions.append(f"{prefix}: shards without metadata (run with --recompute to rebuild "
                           f"it from the shards)")
            continue
        actions.append(f"{prefix}: metadata recomputed from {sum(map(len, files.values()))} "
                       f"shard(s) -> {target}")
        if not dry_run:
            write_info(target, recompute_info(prefix, files))
    return actions
