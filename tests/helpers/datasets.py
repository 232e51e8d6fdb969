"""Writes small datasets in the current layout (shards + PREFIX-dataset_info.json) without Beam."""

import json
import os

import numpy as np
import tensorflow as tf

from glcic_tf.data import datasets

from helpers.images import example_bytes


def write_dataset(prefix: str, *, train: int = 4, val: int = 2, shards=(2, 1), colour=None,
                  size=(36, 44), seed: int = 0, info_name: str | None = None) -> dict:
    """Writes PREFIX-{train,val}-SSSSS-of-NNNNN.tfrecord and the metadata; returns the info.

    Images are random (or a constant `colour`); keys are `NAME/SPLIT/i`; the metadata holds
    the exact counts, pixel counts and train mean pixel. `info_name` writes the metadata under
    another file name in the same folder (e.g. the legacy "dataset_info.json").
    """
    rng = np.random.default_rng(seed)
    directory, name = os.path.split(prefix)
    os.makedirs(directory or ".", exist_ok=True)
    info = {"name": name, "format_version": datasets.FORMAT_VERSION, "counts": {},
            "num_pixels": {}, "shard_files": {}, "num_shards": {}, "min_side": min(size),
            "rejects_file": name + datasets.REJECTS_SUFFIX}
    sums = {}
    for split, count, num_shards in (("train", train, shards[0]), ("val", val, shards[1])):
        files = [f"{name}-{split}-{s:05d}-of-{num_shards:05d}.tfrecord"
                 for s in range(num_shards)]
        writers = [tf.io.TFRecordWriter(os.path.join(directory, f)) for f in files]
        total = np.zeros(3, np.int64)
        for i in range(count):
            if colour is None:
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            else:
                pixels = np.full((*size, 3), colour, np.uint8)
            total += pixels.reshape(-1, 3).sum(axis=0, dtype=np.int64)
            writers[i % num_shards].write(example_bytes(f"{name}/{split}/{i}", pixels))
        for w in writers:
            w.close()
        info["counts"][split] = count
        info["num_pixels"][split] = count * size[0] * size[1]
        info["shard_files"][split] = files
        info["num_shards"][split] = num_shards
        sums[split] = total
    pixels = info["num_pixels"]["train"]
    info["mean_pixel"] = [float(v) / pixels / 255.0 for v in sums["train"]] if pixels else None
    path = (os.path.join(directory, info_name) if info_name else datasets.info_path(prefix))
    with open(path, "w") as f:
        json.dump(info, f)
    return info


def read_keys(files) -> list[bytes]:
    """The image/key of every record of `files`, in file order."""
    out = []
    for record in tf.data.TFRecordDataset(list(files)):
        example = tf.train.Example.FromString(record.numpy())
        out.append(example.features.feature["image/key"].bytes_list.value[0])
    return out


def write_two_datasets(directory) -> dict:
    """Two datasets in one folder, `urban` (4 train in 2 shards, 2 val) and `bsd` (3 train,
    1 val), of different constant colours (so different means); returns {"dir", "urban", "bsd"}
    (the metadata of each)."""
    urban = write_dataset(str(directory / "urban"), train=4, val=2, shards=(2, 1),
                          colour=(200, 10, 10))
    bsd = write_dataset(str(directory / "bsd"), train=3, val=1, shards=(1, 1),
                        colour=(10, 10, 200))
    return {"dir": directory, "urban": urban, "bsd": bsd}
