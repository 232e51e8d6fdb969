"""Images to TFRecords: the Apache Beam pipeline behind `pipelines/make_tfrecords.py`.

Every input file is read once through `apache_beam.io.filesystems.FileSystems` (local paths,
`gs://`, `s3://`, ... whatever Beam supports) and normalised once with Pillow
(`glcic_tf.data.normalize`: the rules and the reject reasons). A file either becomes one
`tf.train.Example` (`glcic_tf.data.schema`) or one line in the rejects file with a stable reason
code; the pipeline never fails on a bad file.

Outputs of `build_pipeline` / `run` for an output prefix `DIR/NAME`:

* `DIR/NAME-train-SSSSS-of-NNNNN.tfrecord` and `DIR/NAME-val-SSSSS-of-MMMMM.tfrecord`,
* `DIR/NAME-rejects.jsonl`: one `{"path": ..., "reason": ...}` per rejected file,
* `DIR/NAME-dataset_info.json` (`glcic_tf.data.datasets`): counts per split, rejects by reason, the
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
(`input_pipeline.make_dataset` reads up to 16 at once) and Beam's parallel writes alike.

Progress: with `progress_every` > 0, one line per period (`glcic_tf.data.tfrecords_progress`);
Beam counters (namespace "glcic_tf") count written examples per split and rejects per reason.

The split is a pure function of the path: `key = sha1(path)[:16]` (`normalize.image_key`; the path
taken relative to `key_root` when one is given, so a dataset keeps its split when moved between
file systems) and an example goes to `val` iff `int(key, 16) < val_fraction * 2**64`. Re-running
gives the same split, and adding files never moves existing ones between splits.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import posixpath
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

import apache_beam as beam
import numpy as np
from PIL import ImageFile
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from glcic_tf.data import datasets
from glcic_tf.data.normalize import MAX_PIXELS, MAX_SIDE, Reject, image_key, normalize_image_bytes
from glcic_tf.data.schema import to_example_bytes
from glcic_tf.data.split_stats import ImageStats, SplitStatsFn
from glcic_tf.data.tfrecords_progress import ProgressFile, ProgressPrinter, is_local_runner

# Default shard size (MB = 2**20 bytes of input): tf.data's guide and TFDS aim at 100-200 MB.
DEFAULT_SHARD_SIZE_MB = 128.0

SPLITS = ("train", "val")


def split_of(key: str, val_fraction: float) -> str:
    """The split of `key`: "val" iff int(key, 16) < val_fraction * 2**64, else "train"."""
    return "val" if int(key, 16) < val_fraction * 2.0**64 else "train"


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
            self._progress = ProgressFile(self.progress_dir)

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
                    if progress_every > 0 and is_local_runner(options) else None)
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
            with ProgressPrinter(progress_dir, len(files), progress_every, log):
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
