"""Export a training run as the repository's shipped model, score it, and write its model card.

Usage (how models/glcic_photos128 was made, after training with the photos128 preset):
  python pipelines/ship_model.py --run runs/photos128 --data 'shards/photos-val-*' \
      --out models/glcic_photos128 --train-command "python pipelines/train.py --preset \
      photos128 --data 'shards/photos-train-*' --out runs/photos128"

Writes OUT/VERSION/ (a float32 SavedModel with in-graph post-processing, `maxdim` from the
config's training scale),
OUT/eval/ (evaluate.py's report.json and samples.jsonl; no contact sheet of the held-out
photos), OUT/MODEL_CARD.md
(also copied to VERSION/assets/model_card.md) and OUT/eval_curve.jsonl (the run's learning
curve). The evaluation scores both post-processings (OpenCV and in-graph) and pairs them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys

from glcic_tf import console


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--data", required=True, help="glob of held-out TFRecord shards")
    p.add_argument("--out", required=True, help="TF Serving base path to write")
    p.add_argument("--masks-per-image", type=int, default=8,
                   help="holes per held-out photo and kind (default 8)")
    p.add_argument("--train-command", action="append", default=[],
                   help="the commands that made the data and the run (for the model card)")
    p.add_argument("--data-note", default="", help="a paragraph on the data (model card)")
    p.add_argument("--machine", default=None, help="machine description (model card)")
    console.add_verbose_flag(p)
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    from glcic_tf.evaluation import curve as learning_curve
    from glcic_tf.evaluation import evaluate as evaluation
    from glcic_tf.evaluation.report import format_table
    from glcic_tf.inference import export
    from glcic_tf.training import runs
    from glcic_tf.inference import shipped
    from glcic_tf.config import GLCICConfig

    if not runs.is_run_dir(args.run):
        print(f"ship_model.py: {args.run}: not a training run directory", file=sys.stderr)
        return 2
    config = GLCICConfig.load(runs.config_path(args.run))
    version_dir = export.export_from_run(args.run, args.out,
                                         source=f"`{config.name}` training run (MODEL_CARD.md)")
    # No contact sheet: it would put crops of the held-out photos into the repository (the
    # photos are not ours to ship); docs/results.md shows one of scikit-image's sample photos.
    report = evaluation.evaluate(version_dir, args.data, os.path.join(args.out, "eval"),
                                 masks_per_image=args.masks_per_image, postprocess="both",
                                 contact_rows=0)
    curve_file = os.path.join(args.run, learning_curve.CURVE_NAME)
    curve = learning_curve.read_curve(curve_file)
    if curve:
        shutil.copyfile(curve_file, os.path.join(args.out, learning_curve.CURVE_NAME))
    machine = args.machine or f"{platform.processor() or platform.machine()}, " \
                              f"{os.cpu_count()} cores"
    with open(os.path.join(version_dir, "assets", "export.json")) as f:
        maxdim = json.load(f)["maxdim"]
    card = shipped.model_card(config=config, report=report, curve=curve, maxdim=maxdim,
                              speed=shipped.training_speed(args.run),
                              commands=args.train_command, data_note=args.data_note,
                              machine=machine)
    for path in (os.path.join(args.out, "MODEL_CARD.md"),
                 os.path.join(version_dir, "assets", "model_card.md")):
        with open(path, "w") as f:
            f.write(card)
    print(format_table(report))
    print(f"ship_model.py: wrote {version_dir} and {os.path.join(args.out, 'MODEL_CARD.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
