"""What `python pipelines/train.py` does, as a library function: data -> training -> export.

`train(options)` resolves the data (`glcic_tf.data.selections.select`: a dataset's train and val
splits, or globs of shards; the bundled sample photos by default), the mean pixel value (from the
metadata of the dataset(s) the train shards belong to), the strategy, optional TFDV validation
and warm start, then runs `loop.run_training` and, on the chief, exports a SavedModel into
`RUN_DIR/export/glcic/VERSION` and writes `RUN_DIR/preview.png`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import tensorflow as tf

from glcic_tf.data import input_pipeline
from glcic_tf.data import datasets
from glcic_tf.data import selections, shards
from glcic_tf.training import distribute, loop, runs
from glcic_tf.training import trainer as trainer_lib
from glcic_tf.config import DEFAULT_MEAN_PIXEL, GLCICConfig


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    config: GLCICConfig
    run_dir: str
    data: str | None = None  # a dataset (prefix / metadata) or globs; None = the sample dataset
    val_data: str | None = None  # the same, for val shards (default: the dataset's val split)
    strategy: str = "auto"
    validate: bool = False
    export: bool = True
    init_from: str | None = None
    start_phase: int | None = None
    before_after: bool = False  # write RUN_DIR/before_after.png (a held-out photo) at the end
    memory_check: bool = True  # estimate a step's memory first; refuse when it does not fit
    accumulate_auto: bool = False  # choose the smallest gradient accumulation that fits
    # The config's mean pixel was set explicitly (--mean-pixel, or in --config such as an
    # imported Torch7 model's): keep it even when it equals the default.
    mean_pixel_explicit: bool = False


@dataclasses.dataclass(frozen=True)
class ResolvedData:
    """What `--data` / `--val-data` name: shard files and the metadata they belong to."""

    train: selections.Selection
    val: selections.Selection | None

    @property
    def train_files(self) -> list[str]:
        return list(self.train.files)

    @property
    def val_files(self) -> list[str] | None:
        return list(self.val.files) if self.val is not None else None


def resolve_data(options: TrainOptions, log=print) -> ResolvedData:
    """The train shards (`options.data`: a dataset's train split, or globs; default the sample
    dataset) and the val shards (`options.val_data`, else the val split of the dataset(s) the
    train shards belong to, when it has images and is not among the train shards)."""
    if options.data is None:
        from glcic_tf.data import sample_data

        spec = sample_data.sample_prefix(sample_data.ensure_sample_dataset())
    else:
        spec = options.data
    train = selections.select(spec, "train")
    caught = train.val_files()
    if caught:
        log(f"glcic_tf: warning: --data {spec} includes {len(caught)} val shard(s) (e.g. "
            f"{caught[0]}): the held-out split is trained on; pass the dataset (its prefix) "
            f"or a glob of its -train- shards")
    if options.val_data is not None:
        return ResolvedData(train, selections.select(options.val_data, "val"))
    with_val = [d for d in train.datasets if d.has_split("val")]
    if not with_val or caught:
        return ResolvedData(train, None)
    try:
        val = selections.select([d.info_path if d.legacy or not d.prefix else d.prefix
                                 for d in with_val], "val")
    except FileNotFoundError as e:  # the train split is usable without its val split
        log(f"glcic_tf: warning: no val split: {e}")
        return ResolvedData(train, None)
    return ResolvedData(train, val)


def dataset_mean_pixel(config: GLCICConfig, data: ResolvedData, log=print, *,
                       explicit: bool = False) -> GLCICConfig:
    """The config with the mean pixel of the train shards' dataset(s), unless a mean was set
    explicitly (`explicit`: --mean-pixel, or in a --config such as an imported Torch7 model's,
    which must keep the mean it was trained with, even when that is the default value; a
    config whose mean differs from the default counts as explicit too)."""
    if explicit or tuple(config.data.mean_pixel) != DEFAULT_MEAN_PIXEL:
        return config
    selection = data.train
    mean = selection.mean_pixel
    if mean is None:
        if selection.unowned:
            example = selection.unowned[0]
            log(f"glcic_tf: note: no dataset metadata for {len(selection.unowned)} of "
                f"{len(selection.files)} train shard(s) (e.g. {example}); the mean pixel stays "
                f"({', '.join(f'{v:.4f}' for v in config.data.mean_pixel)}). Pass --mean-pixel, "
                f"or rebuild the metadata: {datasets.MIGRATE_COMMAND} "
                f"{os.path.dirname(example) or '.'} --recompute")
        return config
    if mean != tuple(config.data.mean_pixel):
        config = config.with_mean_pixel(mean)
    log(f"glcic_tf: mean pixel value from {selection.mean_pixel_source()}: "
        f"({', '.join(f'{v:.4f}' for v in mean)})")
    return config


def _preview_batch(config: GLCICConfig, pattern: str) -> dict | None:
    try:
        ds = input_pipeline.make_eval_dataset(pattern, config, batch_size=4)
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
        raise trainer_lib.TrainingError(
            f"--init-from {source} is incompatible ({'; '.join(bad)}); train with its config "
            f"(--config RUN_DIR/config.json, or the SavedModel's assets/config.json)")


def warm_start_fn(source: str, config: GLCICConfig):
    """Warm start from a run directory (C, and D when present) or a SavedModel export (C).

    The source is found and checked against `config` now, so a wrong `--init-from` is refused
    before the run directory is written (else its config.json would make the corrected
    command a "different config"); the returned function restores the weights.
    A SavedModel's `variables/` is a checkpoint whose root holds the Keras completion network
    as `completion` (fp32 exports; batch-norm-folded bf16 exports cannot be trained from).
    Optimizer state always starts fresh.
    """
    from glcic_tf.inference import export as export_lib

    is_run = runs.is_run_dir(source)
    if is_run:
        _check_compatible(source, GLCICConfig.load(runs.config_path(source)), config)
        run_checkpoint = runs.latest_checkpoint(source)
        if run_checkpoint is None:
            raise trainer_lib.TrainingError(f"--init-from {source}: no checkpoint")
    else:
        model_dir = source
        if not tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
            try:
                model_dir = export_lib.latest_version_dir(source)
            except Exception as e:  # noqa: BLE001 - reported below with the path
                raise trainer_lib.TrainingError(
                    f"--init-from {source}: neither a training run directory (config.json + "
                    f"checkpoints/) nor a SavedModel / TF Serving base path ({e})") from e
        assets = os.path.join(model_dir, "assets", "config.json")
        _check_compatible(source, GLCICConfig.load(assets), config)

    def init(trainer: trainer_lib.GLCICTrainer) -> None:
        if is_run:
            path = run_checkpoint
            names = {name for name, _ in tf.train.list_variables(path)}
            parts = {"completion": trainer.completion}
            if any(n.startswith(("discriminator/", "optimizer_d/")) for n in names):
                parts["discriminator"] = trainer.discriminator
            tf.train.Checkpoint(**parts).restore(path).expect_partial().assert_nontrivial_match()
        else:
            path = os.path.join(model_dir, "variables", "variables")
            status = tf.train.Checkpoint(completion=trainer.completion).restore(path)
            try:
                status.expect_partial().assert_nontrivial_match()
            except AssertionError as e:
                raise trainer_lib.TrainingError(
                    f"--init-from {model_dir}: no completion network in its variables (a "
                    f"batch-norm-folded bf16 export?); export in float32 to fine-tune") from e
            path = model_dir
            parts = {"completion": trainer.completion}
        print(f"glcic_tf: warm start from {path} ({', '.join(parts)}; optimizer state "
              f"fresh)", flush=True)

    return init


def plan_memory(config, strategy, options: TrainOptions):
    """The config with the accumulation that fits (see `glcic_tf.training.memory`); DoesNotFit
    when the step does not fit and `accumulate_auto` is off. Runs before anything is written."""
    from glcic_tf.training import memory

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


def train(options: TrainOptions) -> loop.TrainingResult:
    # The memory check comes first: a step that cannot fit is refused before anything is read
    # or written.
    strategy = distribute.make_strategy(options.strategy)
    config = plan_memory(options.config, strategy, options)

    def log(message: str) -> None:
        print(message, flush=True)

    data = resolve_data(options, log)
    config = dataset_mean_pixel(config, data, log, explicit=options.mean_pixel_explicit)
    # Resume precedence (loop.run_training): a checkpoint in the run directory wins over
    # --init-from, whose source is checked only when it will be used, before anything is written.
    init_fn = None
    if options.init_from and runs.latest_checkpoint(options.run_dir) is None:
        init_fn = warm_start_fn(options.init_from, config)
    train_pattern, val_pattern = data.train_files, data.val_files
    shown = ", ".join(d.describe() for d in data.train.named) or data.train.spec
    log(f"glcic_tf: training data {shown} ({len(train_pattern)} shard(s))")
    if val_pattern:
        log(f"glcic_tf: held-out data: {len(val_pattern)} val shard(s) ({data.val.spec})")

    if options.validate:
        from glcic_tf.data import validation

        out = os.path.join(options.run_dir, "data_validation")
        result = validation.validate(train_pattern, out, compare_pattern=val_pattern)
        if not result.ok:
            raise trainer_lib.TrainingError(
                "data validation found anomalies; refusing to train:\n  "
                + "\n  ".join(result.anomalies) + f"\n(report: {result.html_path})")
        print(f"glcic_tf: data validation passed (report: {result.html_path})", flush=True)

    def dataset_fn(ctx=None):
        return input_pipeline.make_dataset(train_pattern, config, training=True, input_context=ctx)

    preview = _preview_batch(config, val_pattern or train_pattern)
    t0 = time.perf_counter()
    try:
        result = loop.run_training(config, options.run_dir, train_dataset_fn=dataset_fn,
                                   strategy=strategy, preview_batch=preview, init_fn=init_fn,
                                   start_phase=options.start_phase,
                                   eval_pattern=val_pattern)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        raise shards.explain_data_error(e, train_pattern) from e
    print(f"glcic_tf: {result.step}/{config.schedule.total_steps} steps in "
          f"{time.perf_counter() - t0:.1f} s; run directory {options.run_dir}", flush=True)
    if result.finished and options.export and distribute.is_chief(strategy):
        from glcic_tf.inference import export

        version_dir = export.export_from_run(options.run_dir,
                                             os.path.join(options.run_dir, "export", "glcic"))
        print(f"glcic_tf: exported SavedModel {version_dir}", flush=True)
        if options.before_after and val_pattern:
            from glcic_tf.inference import before_after

            path = before_after.write_before_after(version_dir, val_pattern, options.run_dir)
            print(f"glcic_tf: wrote {path} (a held-out photo: with its hole, completed by the "
                  f"network alone, with the paper's post-processing, and the original)",
                  flush=True)
    return result
