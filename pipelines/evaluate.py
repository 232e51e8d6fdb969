"""Evaluate a completion model on fixed holes against mean fill, OpenCV Telea and Navier-Stokes.

Usage:
  # A training run (latest checkpoint) on the sample photos' val split (2 images x 4 masks).
  python pipelines/evaluate.py --model runs/demo --out runs/demo/eval

  # An exported SavedModel or a TF Serving base path (highest version), on your own dataset
  # (its val split; --split train|all for the others) or on globs of shards.
  python pipelines/evaluate.py --model runs/demo/export/glcic --data shards/places \
      --masks-per-image 1 --max-images 500 --out eval/v3
  python pipelines/evaluate.py --model models/glcic --data 'shards/places-val-*.tfrecord'

  # CI regression guard: exit status 3 when the mean PSNR of the network's composite on
  # rectangular holes (no post-processing) is below 18 dB.
  python pipelines/evaluate.py --model models/glcic --fail-below 18

Writes OUT/report.json (mean, 95% CI and count per method x mask kind x metric, results per
hole-area bin, the model's config/version/step, data pattern, seeds), OUT/samples.jsonl (every
sample's scores) and OUT/contact_sheet.png (masked input | ours | ours + post-processing | Telea |
ground truth), and prints a short table. Metrics: L1 on the 0-255 scale (whole crop and inside
the hole), PSNR and SSIM (whole crop, max_val 1.0). See glcic_tf/evaluation/evaluate.py.

Exit status: 0 ok, 2 bad arguments / model / data, 3 below --fail-below.
"""

from __future__ import annotations

import argparse
import sys

from glcic_tf import console


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="training run directory, SavedModel directory (saved_model.pb) or TF "
                        "Serving base path (integer version subdirectories; highest is used)")
    p.add_argument("--data", metavar="DATASET|GLOB",
                   help="a dataset (prefix DIR/NAME or DIR/NAME-dataset_info.json; see "
                        "--split) or globs of TFRecord shards, comma-separated for several "
                        "(default: the bundled sample photos)")
    p.add_argument("--split", default="val", choices=["val", "train", "all"],
                   help="the split of a dataset (default val); without --data, of the sample "
                        "photos (val holds 2 images, not seen in training; train was trained "
                        "on)")
    p.add_argument("--out", default="eval", help="output directory (default: ./eval)")
    p.add_argument("--mask-kinds", default=None,
                   help="comma-separated: rect (the paper's), freeform, file (masks from "
                        "--mask-files); each reported separately (default rect,freeform, "
                        "plus file with --mask-files)")
    p.add_argument("--mask-files", help="glob of your own mask images (white = hole) or mask "
                   "TFRecords, scored deterministically as the 'file' kind (each image gets "
                   "a mask picked by its key and the seed, centre-cropped)")
    p.add_argument("--masks-per-image", type=int, default=4,
                   help="holes per image and kind, each from its own seed (default 4)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the holes")
    p.add_argument("--image-size", type=int,
                   help="crop side (default: the model's training crop size); hole sizes "
                        "are scaled with it")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--batch-size", type=int, default=8, help="crops per network call")
    p.add_argument("--postprocess", choices=("opencv", "in-graph", "both", "none"),
                   default="opencv",
                   help="which post-processing to score beside the raw network: opencv "
                        "(ours_post, the paper's with OpenCV), in-graph (ours_post_graph, "
                        "what an in-graph export serves), both (also paired against each "
                        "other) or none (default: opencv)")
    p.add_argument("--no-postprocess", dest="postprocess", action="store_const", const="none",
                   help="the same as --postprocess none")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="do not score mean fill, Telea and Navier-Stokes")
    p.add_argument("--inpaint-radius", type=int, default=5,
                   help="radius of the OpenCV baselines (default 5)")
    p.add_argument("--contact-rows", type=int, default=4,
                   help="images on the contact sheet (0: none)")
    p.add_argument("--cell-size", type=int, default=128, help="contact sheet cell side (px)")
    p.add_argument("--fail-below", type=float, metavar="PSNR",
                   help="exit with status 3 when the mean PSNR (dB) of 'ours' on rect holes, "
                        "without post-processing, is below this")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    if args.mask_kinds is None:
        args.mask_kinds = "rect,freeform" + (",file" if args.mask_files else "")
    kinds = [k.strip() for k in args.mask_kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("rect", "freeform", "file")]
    if not kinds or bad or len(set(kinds)) != len(kinds):
        p.error(f"--mask-kinds: expected distinct values of rect, freeform, file, got "
                f"{args.mask_kinds!r}")
    if "file" in kinds and not args.mask_files:
        p.error("--mask-kinds file needs --mask-files")
    if args.fail_below is not None and "rect" not in kinds:
        p.error("--fail-below reads the rect results: include rect in --mask-kinds")
    args.mask_kinds = kinds
    for name in ("masks_per_image", "batch_size", "cell_size", "inpaint_radius"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_images is not None and args.max_images < 1:
        p.error(f"--max-images must be >= 1, got {args.max_images}")
    if args.contact_rows < 0:
        p.error(f"--contact-rows must be >= 0, got {args.contact_rows}")
    return args


def main(args: argparse.Namespace) -> int:
    from glcic_tf.evaluation import evaluate as evaluation
    from glcic_tf.evaluation import report as report_lib
    from glcic_tf.evaluation.loader import EvaluationError
    from glcic_tf.config import ConfigError
    from glcic_tf.data.shards import CorruptDataError

    data = args.data
    if data is not None and "," in data:
        data = [d for d in data.split(",") if d]
    try:
        if data is None:
            data = evaluation.default_data_pattern(args.split)
        report = evaluation.evaluate(
            args.model, data, args.out, mask_kinds=args.mask_kinds, seed=args.seed,
            masks_per_image=args.masks_per_image, postprocess=args.postprocess,
            baselines=args.baselines, max_images=args.max_images, image_size=args.image_size,
            batch_size=args.batch_size, inpaint_radius=args.inpaint_radius,
            contact_rows=args.contact_rows, cell_size=args.cell_size,
            mask_files=args.mask_files, split=args.split if args.data else "val")
    except (EvaluationError, ConfigError, FileNotFoundError, CorruptDataError) as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    print(report_lib.format_table(report))
    if args.fail_below is not None:
        value = report_lib.guard_value(report)
        if value is None or value < args.fail_below:
            print(f"evaluate.py: REGRESSION: PSNR of ours on rect holes (no post-processing) "
                  f"is {value} dB, below --fail-below {args.fail_below}", file=sys.stderr)
            return 3
        print(f"evaluate.py: PSNR {value:.2f} dB >= --fail-below {args.fail_below}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
