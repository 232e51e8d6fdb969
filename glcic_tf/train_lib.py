"""What `python pipelines/train.py` does, as a library function: data -> training -> export.

`train(options)` resolves the data (the bundled sample photos by default), the mean pixel value
(from `dataset_info.json` beside the shards), the strategy, optional TFDV validation and warm
start, then runs `training.run_training` and, on the chief, exports a SavedModel into
`RUN_DIR/export/glcic/VERSION` and writes `RUN_DIR/preview.png`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import tensorflow as tf

from glcic_tf import data as data_lib
from glcic_tf import runs, training
from glcic_tf.config import DEFAULT_MEAN_PIXEL, GLCICConfig


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    config: GLCICConfig
    run_dir: str
    data: str | None = None  # glob of train shards; None = the sample dataset
    val_data: str | None = None  # glob of val shards (previews, validation)
    strategy: str = "auto"
    validate: bool = False
    export: bool = True
    init_from: str | None = None
    start_phase: int | None = None
    before_after: bool = False  # write RUN_DIR/before_after.png (a held-out photo) at the end
    memory_check: bool = True  # estimate a step's memory first; refuse when it does not fit
    accumulate_auto: bool = False  # choose the smallest gradient accumulation that fits


def _dataset_dir(pattern: str) -> str:
    return os.path.dirname(pattern.split(",")[0])


def resolve_data(options: TrainOptions) -> tuple[str, str | None, dict | None]:
    """Returns (train glob, val glob or None, dataset_info or None)."""
    if options.data is None:
        from glcic_tf import sample_data

        directory = sample_data.ensure_sample_dataset()
        return (sample_data.sample_train_pattern(directory),
                sample_data.sample_val_pattern(directory), data_lib.read_dataset_info(directory))
    info_path = os.path.join(_dataset_dir(options.data), data_lib.DATASET_INFO_NAME)
    info = data_lib.read_dataset_info(info_path) if tf.io.gfile.exists(info_path) else None
    val = options.val_data
    if val is None and info is not None:
        val_pattern = info.get("shard_patterns", {}).get("val")
        if val_pattern and tf.io.gfile.glob(val_pattern):
            val = val_pattern
    return options.data, val, info


def _preview_batch(config: GLCICConfig, pattern: str) -> dict | None:
    try:
        ds = data_lib.make_eval_dataset(pattern, config, batch_size=4)
        return next(iter(ds.take(1)))
    except (StopIteration, FileNotFoundError, tf.errors.OpError):
        return None


def _check_compatible(source: str, theirs: GLCICConfig, ours: GLCICConfig) -> None:
    """Warm start needs the same network structure and input convention."""
    fields = {"model.width": (theirs.model.width, ours.model.width),
              "model.padding": (theirs.model.padding, ours.model.padding),
              "model.output": (theirs.model.output, ours.model.output),
              "data.input_convention": (theirs.data.input_convention,
                                        ours.data.input_convention)}
    bad = [f"{k}: {a!r} there, {b!r} here" for k, (a, b) in fields.items() if a != b]
    if bad:
        raise training.TrainingError(
            f"--init-from {source} is incompatible ({'; '.join(bad)}); train with its config "
            f"(--config RUN_DIR/config.json, or the SavedModel's assets/config.json)")


def warm_start_fn(source: str, config: GLCICConfig):
    """Warm start from a run directory (C, and D when present) or a SavedModel export (C).

    A SavedModel's `variables/` is a checkpoint whose root holds the Keras completion network
    as `completion` (fp32 exports; batch-norm-folded bf16 exports cannot be trained from).
    Optimizer state always starts fresh.
    """
    from glcic_tf import export as export_lib

    def init(trainer: training.GLCICTrainer) -> None:
        if runs.is_run_dir(source):
            _check_compatible(source, GLCICConfig.load(runs.config_path(source)), config)
            path = runs.latest_checkpoint(source)
            if path is None:
                raise training.TrainingError(f"--init-from {source}: no checkpoint")
            names = {name for name, _ in tf.train.list_variables(path)}
            parts = {"completion": trainer.completion}
            if any(n.startswith(("discriminator/", "optimizer_d/")) for n in names):
                parts["discriminator"] = trainer.discriminator
            tf.train.Checkpoint(**parts).restore(path).expect_partial().assert_nontrivial_match()
        else:
            model_dir = source
            if not tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
                try:
                    model_dir = export_lib.latest_version_dir(source)
                except Exception as e:  # noqa: BLE001 - reported below with the path
                    raise training.TrainingError(
                        f"--init-from {source}: neither a training run directory (config.json + "
                        f"checkpoints/) nor a SavedModel / TF Serving base path ({e})") from e
            assets = os.path.join(model_dir, "assets", "config.json")
            _check_compatible(source, GLCICConfig.load(assets), config)
            path = os.path.join(model_dir, "variables", "variables")
            status = tf.train.Checkpoint(completion=trainer.completion).restore(path)
            try:
                status.expect_partial().assert_nontrivial_match()
            except AssertionError as e:
                raise training.TrainingError(
                    f"--init-from {model_dir}: no completion network in its variables (a "
                    f"batch-norm-folded bf16 export?); export in float32 to fine-tune") from e
            path = model_dir
            parts = {"completion": trainer.completion}
        print(f"glcic_tf: warm start from {path} ({', '.join(parts)}; optimizer state "
              f"fresh)", flush=True)

    return init


def plan_memory(config, strategy, options: TrainOptions):
    """The config with the accumulation that fits (see `glcic_tf.memory`); DoesNotFit when the
    step does not fit and `accumulate_auto` is off. Runs before anything is written."""
    from glcic_tf import memory

    if not (options.memory_check or options.accumulate_auto):
        return config
    if options.accumulate_auto and tf.io.gfile.exists(runs.config_path(options.run_dir)):
        # Resuming: keep the accumulation the run started with when it still fits.
        saved = GLCICConfig.load(runs.config_path(options.run_dir))
        config = config.override({"schedule.accumulate": saved.schedule.accumulate})
    available, device = memory.available_per_replica(strategy)
    chosen = memory.plan(config, strategy.num_replicas_in_sync, available, device=device,
                         auto=options.accumulate_auto)
    print(f"glcic_tf: {chosen.message}", flush=True)
    if chosen.accumulate != config.schedule.accumulate:
        config = config.override({"schedule.accumulate": chosen.accumulate})
    return config


def train(options: TrainOptions) -> training.TrainingResult:
    # The memory check comes first: a step that cannot fit is refused before anything is read
    # or written.
    strategy = training.make_strategy(options.strategy)
    config = plan_memory(options.config, strategy, options)
    train_pattern, val_pattern, info = resolve_data(options)
    # The dataset's mean replaces the default one; a mean set explicitly (--mean-pixel, or in a
    # --config such as an imported Torch7 model's, which must keep the mean it was trained with)
    # wins.
    if (info is not None and info.get("mean_pixel") is not None
            and tuple(config.data.mean_pixel) == DEFAULT_MEAN_PIXEL):
        mean = tuple(float(v) for v in info["mean_pixel"])
        if mean != tuple(config.data.mean_pixel):
            config = config.with_mean_pixel(mean)
            print(f"glcic_tf: mean pixel value from dataset_info.json: "
                  f"({', '.join(f'{v:.4f}' for v in mean)})", flush=True)
    files = data_lib.list_files(train_pattern)
    print(f"glcic_tf: training data {train_pattern} ({len(files)} shard(s))", flush=True)

    if options.validate:
        from glcic_tf import validation

        out = os.path.join(options.run_dir, "data_validation")
        result = validation.validate(train_pattern, out, compare_pattern=val_pattern)
        if not result.ok:
            raise training.TrainingError(
                "data validation found anomalies; refusing to train:\n  "
                + "\n  ".join(result.anomalies) + f"\n(report: {result.html_path})")
        print(f"glcic_tf: data validation passed (report: {result.html_path})", flush=True)

    def dataset_fn(ctx=None):
        return data_lib.make_dataset(train_pattern, config, training=True, input_context=ctx)

    preview = _preview_batch(config, val_pattern or train_pattern)
    init_fn = warm_start_fn(options.init_from, config) if options.init_from else None
    t0 = time.perf_counter()
    try:
        result = training.run_training(config, options.run_dir, train_dataset_fn=dataset_fn,
                                       strategy=strategy, preview_batch=preview, init_fn=init_fn,
                                       start_phase=options.start_phase,
                                       eval_pattern=val_pattern)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        raise data_lib.explain_data_error(e, train_pattern) from e
    print(f"glcic_tf: {result.step}/{config.schedule.total_steps} steps in "
          f"{time.perf_counter() - t0:.1f} s; run directory {options.run_dir}", flush=True)
    if result.finished and options.export and training.is_chief(strategy):
        from glcic_tf import export

        version_dir = export.export_from_run(options.run_dir,
                                             os.path.join(options.run_dir, "export", "glcic"))
        print(f"glcic_tf: exported SavedModel {version_dir}", flush=True)
        if options.before_after and val_pattern:
            from glcic_tf import before_after

            path = before_after.write_before_after(version_dir, val_pattern, options.run_dir)
            print(f"glcic_tf: wrote {path} (a held-out photo: with its hole, completed by the "
                  f"network alone, with the paper's post-processing, and the original)",
                  flush=True)
    return result
