"""Train GLCIC: the paper's three phases (completion, discriminator, joint) on TFRecord shards.

Usage:
  # The demo (`make demo`): fine-tunes the shipped network (models/glcic_photos128) for a
  # minute on the sample photos bundled with scikit-image, `demo` preset, all three phases.
  python pipelines/train.py

  # The CPU preset that beats OpenCV on real photos (about an hour on 2 cores); --data is
  # the dataset make_tfrecords.py --output shards/photos wrote: its train split, its val split
  # (previews, learning curve) and its mean pixel value.
  python pipelines/train.py --preset photos128 --data shards/photos --out runs/p128

  # For real: the `paper` preset, every GPU of this machine. Globs of shards work too; the
  # mean pixel then comes from the metadata of the dataset the shards belong to
  # (shards/places-dataset_info.json for shards/places-train-*).
  python pipelines/train.py --data 'shards/places-train-*.tfrecord' --out runs/places2

  # Overrides map 1:1 onto config fields; --config loads a JSON config first.
  python pipelines/train.py --data '...' --batch-size 32 --steps-joint 100000 \
      --precision mixed_float16

  # Several machines: the same command on each, TF_CONFIG set per worker.
  TF_CONFIG='{"cluster": {...}, "task": {"type": "worker", "index": 0}}' \
    python pipelines/train.py --data 'gs://bucket/shards/train-*' --strategy multiworker

Re-running the same command resumes from the last checkpoint in --out, in the right phase.
SIGTERM / SIGINT save a checkpoint and exit (status 128 + signal number); a second signal
while stopping aborts at once without saving (one line, status 130).

Before the first step the memory of one training step per replica is estimated
(glcic_tf/training/memory.py) and compared with what each replica has; a step that would not fit is
refused, before anything is written, with exit status 3 and the flags that would fit
(--accumulate N, keeping the global batch, or --batch-size). --accumulate auto picks the
smallest N that fits; --no-memory-check skips the check. Exit status: 0 done, 1 error, 2 bad
configuration, 3 does not fit, 128 + N stopped by signal N.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from glcic_tf import console

# Flag -> dotted config key. Every flag defaults to None (= keep the preset's value).
OVERRIDES = {
    "image_size": ("data.image_size", int, "training crop side (multiple of 4)"),
    "resize_min": ("data.resize_min", int, "shorter side resized to >= this"),
    "resize_max": ("data.resize_max", int, "shorter side resized to <= this"),
    "local_size": ("masks.local_size", int, "local discriminator patch side"),
    "hole_min": ("masks.hole_min", int, "smallest hole side"),
    "hole_max": ("masks.hole_max", int, "largest hole side"),
    "num_holes": ("masks.num_holes", int, "holes per training image"),
    "mask_kind": ("masks.kind", str, "rect | freeform | mixed"),
    "freeform_ratio": ("masks.freeform_ratio", float, "share of free-form masks with mixed"),
    "mask_files": ("masks.mask_files", str, "glob of your own mask images (white = hole) or "
                   "mask TFRecords, used with --mask-file-ratio > 0 (glcic_tf.data.mask_sets)"),
    "mask_file_ratio": ("masks.mask_file_ratio", float, "share of training examples whose mask "
                        "comes from --mask-files (the rest follow --mask-kind)"),
    "width": ("model.width", float, "channel multiplier (1.0 = the paper)"),
    "batch_size": ("schedule.batch_size", int, "global batch size"),
    "steps_completion": ("schedule.steps_completion", int, "T_C: completion-only steps"),
    "steps_discriminator": ("schedule.steps_discriminator", int, "T_D: discriminator-only steps"),
    "steps_joint": ("schedule.steps_joint", int, "T_train: joint steps"),
    "alpha": ("loss.alpha", float, "weight of the GAN loss"),
    "lr_completion": ("optimizer.learning_rate_completion", float,
                      "learning rate for C (ADADELTA: 1.0)"),
    "lr_discriminator": ("optimizer.learning_rate_discriminator", float,
                         "learning rate for D (ADADELTA: 1.0)"),
    "optimizer": ("optimizer.name", str, "adadelta (the paper) | adam"),
    "reconstruction": ("loss.reconstruction", str, "mse (the paper) | l1"),
    "eval_every": ("schedule.eval_every", int, "learning-curve period (steps; 0 = off): "
                   "held-out hole L1 / PSNR to TensorBoard and eval_curve.jsonl"),
    "eval_images": ("schedule.eval_images", int, "held-out images per learning-curve point"),
    "checkpoint_every": ("schedule.checkpoint_every", int, "checkpoint period (steps)"),
    "keep_checkpoints": ("schedule.keep_checkpoints", int, "checkpoints kept"),
    "log_every": ("schedule.log_every", int, "TensorBoard scalar period (steps)"),
    "image_every": ("schedule.image_every", int, "TensorBoard image period (steps)"),
    "precision": ("precision", str, "float32 | mixed_float16 (GPU) | mixed_bfloat16 (CPU/TPU)"),
    "seed": ("seed", int, "random seed"),
    "shuffle_buffer": ("data.shuffle_buffer", int, "examples in the shuffle buffer"),
}
BOOL_OVERRIDES = {
    "jit_compile": ("jit_compile", "XLA-compile the train step"),
    "random_flip": ("data.random_flip", "random horizontal flips"),
    "skip_corrupt": ("data.skip_corrupt", "skip (and log) corrupt records instead of failing"),
    "deterministic": ("data.deterministic", "deterministic input order"),
    "freeze_batch_norm": ("model.freeze_batch_norm", "batch norm in inference mode while training"),
    "mask_file_invert": ("masks.mask_file_invert", "mask files mark holes in black"),
}


def parse_args(argv=None) -> argparse.Namespace:
    from glcic_tf.config import preset_names

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", metavar="DATASET|GLOB",
                   help="a dataset from make_tfrecords.py (its prefix DIR/NAME or "
                   "DIR/NAME-dataset_info.json: its train split and mean pixel) or globs of "
                   "training TFRecord shards, comma-separated (default: the bundled sample "
                   "photos, built and cached on first use)")
    p.add_argument("--val-data", metavar="DATASET|GLOB",
                   help="validation shards: a dataset (its val split) or globs (default: the "
                   "val split of the dataset the --data shards belong to)")
    p.add_argument("--out", help="run directory: checkpoints, TensorBoard logs, config, "
                   "exports (default runs/demo, or runs/glcic with --data)")
    p.add_argument("--preset", choices=preset_names(),
                   help="named config (default: demo without --data, paper with it)")
    p.add_argument("--config", help="JSON config file (from a run's config.json); flags "
                   "override it")
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "one_device", "mirrored", "multiworker"],
                   help="auto: MirroredStrategy over all local GPUs when there are two or more")
    p.add_argument("--validate", action="store_true",
                   help="run TFDV validation on the data first and refuse to train on anomalies")
    p.add_argument("--no-export", dest="export", action="store_false",
                   help="do not export a SavedModel at the end")
    p.add_argument("--init-from", help="warm start from a run directory (C, and D when "
                   "present; optimizer state fresh); only when --out has no checkpoint")
    p.add_argument("--start-phase", type=int, choices=[1, 2, 3],
                   help="with no checkpoint in --out, start at this phase")
    p.add_argument("--accumulate", metavar="N|auto",
                   help="micro-batches per step (gradient accumulation, schedule.accumulate); "
                        "auto: the smallest N that fits the memory estimate")
    p.add_argument("--no-memory-check", dest="memory_check", action="store_false",
                   help="skip the estimate of a step's memory before training (by default a "
                        "step that would not fit is refused with exit status 3)")
    p.add_argument("--mean-pixel", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="hole fill value in [0, 1] (default: the train mean pixel in the "
                   "dataset's metadata)")
    for flag, (key, typ, help_) in OVERRIDES.items():
        p.add_argument("--" + flag.replace("_", "-"), type=typ, help=f"{help_} ({key})")
    for flag, (key, help_) in BOOL_OVERRIDES.items():
        p.add_argument("--" + flag.replace("_", "-"), action=argparse.BooleanOptionalAction,
                       default=None, help=f"{help_} ({key})")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    if args.config and args.preset:
        p.error("give --config or --preset, not both")
    if args.start_phase and not args.init_from:
        p.error("--start-phase needs --init-from (a fresh network starts in phase 1)")
    if args.accumulate is not None and args.accumulate != "auto" and (
            not args.accumulate.isdigit() or int(args.accumulate) < 1):
        p.error(f"--accumulate must be a positive integer or auto, got {args.accumulate!r}")
    return args


def resolve_config(args: argparse.Namespace):
    from glcic_tf.config import GLCICConfig, get_preset

    if args.config:
        config = GLCICConfig.load(args.config)
    else:
        config = get_preset(args.preset or ("paper" if args.data else "demo"))
    overrides = {key: getattr(args, flag) for flag, (key, _, _) in OVERRIDES.items()
                 if getattr(args, flag) is not None}
    overrides.update({key: getattr(args, flag) for flag, (key, _) in BOOL_OVERRIDES.items()
                      if getattr(args, flag) is not None})
    if args.mean_pixel:
        overrides["data.mean_pixel"] = list(args.mean_pixel)
    if args.accumulate not in (None, "auto"):
        overrides["schedule.accumulate"] = int(args.accumulate)
    # A new crop size keeps the paper's resize range (1x to 1.5x) unless given explicitly.
    if args.image_size is not None:
        overrides.setdefault("data.resize_min", args.image_size)
        overrides.setdefault("data.resize_max", max(args.image_size * 3 // 2,
                                                    overrides["data.resize_min"]))
    return config.override(overrides)


def main(args: argparse.Namespace) -> int:
    from glcic_tf.training import memory
    from glcic_tf.training import runs
    from glcic_tf.training import job
    from glcic_tf.training import trainer as trainer_lib
    from glcic_tf.config import ConfigError
    from glcic_tf.data.shards import CorruptDataError

    try:
        config = resolve_config(args)
    except ConfigError as e:
        print(f"train.py: invalid configuration: {e}", file=sys.stderr)
        return 2
    run_dir = args.out or os.path.join("runs", "glcic" if args.data else config.name)
    init_from = args.init_from
    before_after = False
    if args.data is None and config.name == "demo":
        from glcic_tf.inference import shipped

        try:
            init_from = init_from or shipped.version_dir()
        except FileNotFoundError as e:
            print(f"train.py: {e}", file=sys.stderr)
            return 1
        before_after = True
        print(f"glcic_tf: this is the DEMO: the `demo` preset fine-tunes the shipped network "
              f"({init_from}) for {config.schedule.total_steps} steps on the sample photos "
              f"bundled with scikit-image, through all three phases, then exports it and writes "
              f"{os.path.join(run_dir, 'before_after.png')} (a held-out photo, before and after). "
              f"To train on your own photos: python pipelines/make_tfrecords.py --input "
              f"'photos/**/*.jpg' --output shards/photos --val-fraction 0.1, then python "
              f"pipelines/train.py --preset photos128 --data shards/photos",
              flush=True)
    options = job.TrainOptions(config=config, run_dir=run_dir, data=args.data,
                               val_data=args.val_data, strategy=args.strategy,
                               validate=args.validate, export=args.export,
                               init_from=init_from, start_phase=args.start_phase,
                               before_after=before_after, memory_check=args.memory_check,
                               accumulate_auto=args.accumulate == "auto",
                               mean_pixel_explicit=bool(args.mean_pixel or args.config))
    try:
        result = job.train(options)
    except KeyboardInterrupt:  # a second SIGINT / SIGTERM while stopping, or Ctrl-C before
        print(f"train.py: interrupted; stopped without saving (checkpoints already in "
              f"{runs.checkpoint_dir(run_dir)} are intact: re-run the same command to resume)",
              file=sys.stderr)
        return 128 + signal.SIGINT
    except memory.DoesNotFit as e:
        print(f"train.py: does not fit: {e}", file=sys.stderr)
        return memory.EXIT_DOES_NOT_FIT
    except (trainer_lib.TrainingError, FileNotFoundError, ValueError, CorruptDataError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    if result.interrupted_by is not None:
        return 128 + result.interrupted_by
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
