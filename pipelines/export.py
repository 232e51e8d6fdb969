r"""Export the completion network as a SavedModel for TensorFlow Serving.

Writes BASE/glcic/VERSION/ (saved_model.pb, variables/, assets/ with config.json and
model_card.md) atomically; VERSION defaults to one more than the highest existing version, and an
existing version is never overwritten. Signatures: `serving_default` (encoded image + mask bytes
-> PNG bytes), `serving_float` (the same on float32 tensors), both post-processed in the graph
unless `--postprocess none`, and `complete` (the network alone: float32 image + mask -> float32
composite); see glcic_tf/inference/export.py.

Usage:
  python pipelines/export.py --checkpoint runs/demo --out models/glcic
  python pipelines/export.py --checkpoint runs/paper --out models/glcic --version 3 \
      --precision bfloat16
  python pipelines/export.py --out /tmp/models/glcic          # UNTRAINED weights (paper preset)
"""

from __future__ import annotations

import argparse
import os
import sys

from glcic_tf import console


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Usage:"):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", metavar="RUN_DIR",
                        help="training run directory (config.json + checkpoints/); its latest "
                             "checkpoint is exported. Without it, freshly initialised (untrained) "
                             "weights of --preset are exported, with a warning.")
    parser.add_argument("--out", required=True, metavar="BASE/glcic",
                        help="TF Serving base path; the version is written as a subdirectory")
    parser.add_argument("--version", type=int, default=None,
                        help="integer version (default: 1 + the highest existing version)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="compute precision inside the graph; signatures stay float32/bytes "
                             "(default: float32)")
    parser.add_argument("--preset", default="paper",
                        help="preset of the untrained export (only without --checkpoint; "
                             "default: paper)")
    parser.add_argument("--fold-batch-norm", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="fold batch norm into the convolutions (default; faster, ~1e-5 "
                             "rounding differences; float32 exports keep the Keras variables "
                             "either way); --no-fold-batch-norm exports the network as it is")
    parser.add_argument("--maxdim", type=int, default=None,
                        help="serving_default scales the long side down to this (default: 500 "
                             "for the paper's 256 px crops, scaled with the training crop "
                             "size: 252 for 128 px)")
    parser.add_argument("--postprocess", choices=("in-graph", "none"), default="in-graph",
                        help="the paper's post-processing (hole border fill + Poisson blending) "
                             "inside serving_default and serving_float, in stock TensorFlow "
                             "ops; none = the raw composite (default: in-graph)")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.version is not None and args.version < 1:
        parser.error(f"--version must be a positive integer, got {args.version}")
    if args.maxdim is not None and args.maxdim < 4:
        parser.error(f"--maxdim must be >= 4, got {args.maxdim}")
    if args.checkpoint is not None and not os.path.isdir(args.checkpoint):
        parser.error(f"--checkpoint {args.checkpoint}: no such directory")
    return args


def main(args: argparse.Namespace) -> int:
    from glcic_tf.inference import export
    from glcic_tf.config import ConfigError

    kwargs = dict(version=args.version, precision=args.precision, maxdim=args.maxdim,
                  fold_batch_norm=args.fold_batch_norm, postprocess=args.postprocess)
    try:
        if args.checkpoint:
            path = export.export_from_run(args.checkpoint, args.out, **kwargs)
        else:
            print(f"WARNING: no --checkpoint given: exporting FRESHLY INITIALISED, UNTRAINED "
                  f"weights of the {args.preset!r} preset. Its completions are noise; use it "
                  f"only to test serving.", file=sys.stderr)
            path = export.export_untrained(args.preset, args.out, **kwargs)
    except (export.ExportError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported {args.precision} SavedModel to {path} (post-processing: "
          f"{args.postprocess})")
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
