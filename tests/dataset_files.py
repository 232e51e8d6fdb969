"""Writes small datasets in the current layout (shards + PREFIX-dataset_info.json) without Beam."""

import io
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from glcic_tf import datasets, tfrecords


def example_bytes(key: str, pixels: np.ndarray) -> bytes:
    """One record in the training schema (PNG) for a uint8 [H, W, 3] image."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    image = tfrecords.NormalizedImage(path=key, key=key, encoded=buf.getvalue(), format="png",
                                      pixels=pixels, reencoded=True)
    return tfrecords.to_example_bytes(image)


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
