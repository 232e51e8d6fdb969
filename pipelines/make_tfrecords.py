"""Convert image files into train/val TFRecord shards with Apache Beam (+ dataset_info.json).

Every file is decoded once with Pillow, normalised to 8-bit RGB (EXIF rotation applied,
transparency composited over white, 16-bit scaled, CMYK converted) and written as one
`tf.train.Example` (schema: `glcic_tf/data.py`); broken, tiny or absurdly large files go to
`PREFIX-rejects.jsonl` with a reason code. The split is a hash of each file's path, so
re-running gives the same split. Details: `glcic_tf/tfrecords.py`.

Usage:
  # local, DirectRunner (default), 2 worker processes
  python pipelines/make_tfrecords.py --input '/data/places2/train/**/*.jpg' \\
      --output /data/tfrecords/places2 --val-fraction 0.01 \\
      --direct_num_workers 2 --direct_running_mode multi_processing

  # Dataflow (any Beam option after the script's own flags is passed through)
  python pipelines/make_tfrecords.py --input 'gs://bucket/images/*' --output gs://bucket/tfr/ds \\
      --runner DataflowRunner --project P --region europe-west4 \\
      --temp_location gs://bucket/tmp --setup_file ./setup.py

Outputs: PREFIX-train-00000-of-0000N.tfrecord, PREFIX-val-..., PREFIX-rejects.jsonl and
dataset_info.json in PREFIX's directory. Exit status 0 even when some files were rejected
(they are counted in dataset_info.json); 2 for bad arguments or when no input file matches.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Parses the script's flags; unknown flags are returned as Beam pipeline options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="GLOB",
                        help="one or more file globs (local or any Beam file system, "
                             "e.g. gs://bucket/dir/*.jpg); quote them so the shell leaves "
                             "them alone")
    parser.add_argument("--output", required=True, metavar="PREFIX",
                        help="output prefix DIR/NAME; shards are PREFIX-{train,val}-*.tfrecord")
    parser.add_argument("--shards", type=int, default=None,
                        help="total number of shards (train + val); default: about one per "
                             "1000 images or per 200 MB of input, at least 1")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="fraction of files in the val split, chosen by a sha1 hash of "
                             "the path (deterministic); default 0.05")
    parser.add_argument("--min-side", type=int, default=128,
                        help="reject images whose shorter side is below this; default 128")
    parser.add_argument("--key-root", default=None,
                        help="key (and split) files by their path relative to this root, so "
                             "the split survives moving the data; default: the full path")
    args, beam_args = parser.parse_known_args(argv)
    if args.shards is not None and args.shards < 1:
        parser.error(f"--shards must be >= 1, got {args.shards}")
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.min_side < 1:
        parser.error(f"--min-side must be >= 1, got {args.min_side}")
    return args, beam_args


def main(parsed: tuple[argparse.Namespace, list[str]]) -> int:
    args, beam_args = parsed
    from glcic_tf import tfrecords

    try:
        info = tfrecords.run(args.input, args.output, shards=args.shards,
                             val_fraction=args.val_fraction, min_side=args.min_side,
                             key_root=args.key_root, pipeline_args=beam_args)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: info[k] for k in ("counts", "num_rejects", "rejects_by_reason", "mean_pixel",
                                    "shard_patterns")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
