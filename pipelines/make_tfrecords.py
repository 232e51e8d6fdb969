"""Convert image files into a dataset: train/val TFRecord shards with Apache Beam + metadata.

Every file is decoded once with Pillow, normalised to 8-bit RGB (EXIF rotation applied,
transparency composited over white, 16-bit scaled, CMYK converted) and written as one
`tf.train.Example` (schema: `glcic_tf/data/schema.py`); broken, tiny or absurdly large files go
to `PREFIX-rejects.jsonl` with a reason code. The split is a hash of each file's path, so
re-running gives the same split. Details: `glcic_tf/data/normalize.py` (the rules per file) and
`glcic_tf/data/tfrecords.py` (the pipeline).

Usage:
  # local, DirectRunner (default), 2 worker processes
  python pipelines/make_tfrecords.py --input '/data/places2/train/**/*.jpg' \\
      --output /data/tfrecords/places2 --val-fraction 0.01 \\
      --direct_num_workers 2 --direct_running_mode multi_processing

  # Dataflow (any Beam option after the script's own flags is passed through)
  python pipelines/make_tfrecords.py --input 'gs://bucket/images/*' --output gs://bucket/tfr/ds \\
      --runner DataflowRunner --project P --region europe-west4 \\
      --temp_location gs://bucket/tmp --setup_file ./setup.py

Outputs, the dataset PREFIX: PREFIX-train-00000-of-0000N.tfrecord, PREFIX-val-...,
PREFIX-rejects.jsonl and PREFIX-dataset_info.json (counts, mean pixel, shard files, ...), so
several datasets can share a folder. train.py, validate_data.py and evaluate.py take PREFIX as
--data. Shards hold about --shard-size-mb of input each (default 128). An existing PREFIX is
refused unless --overwrite is given, which removes its old files first. A progress line goes to
stderr every --progress-every seconds (local runners), the summary to stdout as JSON.

Exit status 0 even when some files were rejected (they are counted in the metadata); 2 for bad
arguments, an existing dataset without --overwrite, or when no input file matches.
"""

from __future__ import annotations

import argparse
import json
import sys

from glcic_tf import console


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Parses the script's flags; unknown flags are returned as Beam pipeline options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="GLOB",
                        help="one or more file globs (local or any Beam file system, "
                             "e.g. gs://bucket/dir/*.jpg); quote them so the shell leaves "
                             "them alone")
    parser.add_argument("--output", required=True, metavar="PREFIX",
                        help="output prefix DIR/NAME of the dataset; shards are "
                             "PREFIX-{train,val}-*.tfrecord, metadata PREFIX-dataset_info.json")
    sizing = parser.add_mutually_exclusive_group()
    sizing.add_argument("--shard-size-mb", type=float, default=None,
                        help="shard size in MB of input images: each split gets about "
                             "its bytes / this many shards (at least 1, at most one per image); "
                             "default 128")
    sizing.add_argument("--shards", type=int, default=None,
                        help="total number of shards (train + val) instead of --shard-size-mb")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset at --output (its old shards, rejects "
                             "and metadata are removed first)")
    parser.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between progress lines on stderr (0: none); default 10")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="fraction of files in the val split, chosen by a sha1 hash of "
                             "the path (deterministic); default 0.05")
    parser.add_argument("--min-side", type=int, default=128,
                        help="reject images whose shorter side is below this; default 128")
    parser.add_argument("--key-root", default=None,
                        help="key (and split) files by their path relative to this root, so "
                             "the split survives moving the data; default: the full path")
    console.add_verbose_flag(parser)
    args, beam_args = parser.parse_known_args(argv)
    if args.shards is not None and args.shards < 1:
        parser.error(f"--shards must be >= 1, got {args.shards}")
    if args.shard_size_mb is not None and not args.shard_size_mb > 0:
        parser.error(f"--shard-size-mb must be > 0, got {args.shard_size_mb}")
    if args.progress_every < 0:
        parser.error(f"--progress-every must be >= 0, got {args.progress_every}")
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.min_side < 1:
        parser.error(f"--min-side must be >= 1, got {args.min_side}")
    return args, beam_args


def main(parsed: tuple[argparse.Namespace, list[str]]) -> int:
    args, beam_args = parsed
    from glcic_tf.data import datasets
    from glcic_tf.data import tfrecords

    sizing = ({"shards": args.shards} if args.shards is not None else
              {"shard_size_mb": args.shard_size_mb or tfrecords.DEFAULT_SHARD_SIZE_MB})
    try:
        info = tfrecords.run(args.input, args.output, val_fraction=args.val_fraction,
                             min_side=args.min_side, key_root=args.key_root,
                             overwrite=args.overwrite, progress_every=args.progress_every,
                             pipeline_args=beam_args, **sizing)
    except (FileNotFoundError, datasets.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {"dataset": args.output, "metadata": datasets.info_path(args.output)}
    summary.update({k: info[k] for k in ("counts", "num_rejects", "rejects_by_reason",
                                         "mean_pixel", "num_shards", "shard_bytes")})
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
