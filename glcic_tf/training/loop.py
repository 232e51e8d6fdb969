"""The training driver: `run_training(config, run_dir, ...)` runs (or resumes) the three phases.

It writes the resolved config into the run directory (refusing one that holds a different run),
restores the latest checkpoint or warm-starts, then runs each remaining phase with `fit()` (or
the multi-worker loop) and the step callback, saves at every phase boundary and returns a
`TrainingResult`. Layout of the run directory: `glcic_tf.training.runs`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import keras
import tensorflow as tf

from glcic_tf.training import runs
from glcic_tf.training.callbacks import StepCallback, StopRequested, preview_grid, write_png
from glcic_tf.training.distribute import is_chief, multiworker_loop
from glcic_tf.training.inputs import training_features
from glcic_tf.training.trainer import (PHASE_NAMES, GLCICTrainer, TrainingError, build_trainer,
                                       make_checkpoint, phase_end, phase_for_step)
from glcic_tf.config import GLCICConfig

_LAST_TRAINER = None  # the trainer of the latest run_training call in this process


@dataclasses.dataclass
class TrainingResult:
    """What `run_training` returns: the global step reached, whether every phase finished, the
    signal that interrupted the run (None: not interrupted), the latest checkpoint and one
    summary dict per phase run (steps, seconds, images per second, final losses)."""

    run_dir: str
    step: int
    finished: bool
    interrupted_by: int | None
    checkpoint: str | None
    phase_summaries: list[dict]


def _check_run_config(run_dir: str, config: GLCICConfig) -> None:
    path = runs.config_path(run_dir)
    if not tf.io.gfile.exists(path):
        return
    saved = GLCICConfig.load(path)
    if saved == config:
        return
    a, b = _flatten(saved.to_dict()), _flatten(config.to_dict())
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    raise TrainingError(
        f"{run_dir} holds a run with a different config (differs in: {', '.join(diff)}). "
        f"Resume with the same flags, or choose a new --out.")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_training(config: GLCICConfig, run_dir: str, *,
                 train_dataset_fn: Callable[[tf.distribute.InputContext | None], tf.data.Dataset],
                 strategy: tf.distribute.Strategy | None = None,
                 preview_batch: dict | None = None,
                 init_fn: Callable[[GLCICTrainer], None] | None = None,
                 start_phase: int | None = None,
                 verbose: int | str = "auto",
                 eval_pattern: str | None = None) -> TrainingResult:
    """Runs (or resumes) the three phases until `config.schedule.total_steps`.

    Resume precedence: (1) the latest checkpoint in `run_dir/checkpoints` (step, phase, both
    networks and both optimizers' slots); else (2) `init_fn(trainer)` (warm start, e.g. from
    `--init-from`); else (3) scratch.

    Args:
      config: the resolved config (written to run_dir/config.json).
      run_dir: output directory (see glcic_tf/training/runs.py).
      train_dataset_fn: returns the training dataset with *global* batches (input_context None),
        or per-replica batches for an InputContext (multi-worker).
      strategy: tf.distribute strategy; default: the current one.
      preview_batch: a fixed batch for TensorBoard images and preview.png.
      init_fn: warm start used only when no checkpoint exists.
      start_phase: with no checkpoint, start at the first step of this phase (1, 2 or 3), e.g.
        3 to fine-tune a warm-started C and D jointly.
      eval_pattern: held-out shards for the learning curve (`schedule.eval_every` > 0,
        `glcic_tf.evaluation.curve`); None: no curve.
    """
    if start_phase not in (None, 1, 2, 3):
        raise ValueError(f"start_phase must be 1, 2 or 3, got {start_phase!r}")
    strategy = strategy or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1 and not config.model.sync_batch_norm:
        config = config.override({"model.sync_batch_norm": True})
    if config.schedule.batch_size % strategy.num_replicas_in_sync:
        raise TrainingError(f"schedule.batch_size ({config.schedule.batch_size}) must be a "
                            f"multiple of the number of replicas ({strategy.num_replicas_in_sync})")
    chief = is_chief(strategy)
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if config.precision != "float32":
        keras.mixed_precision.set_global_policy(config.precision)
    try:
        return _run(config, run_dir, train_dataset_fn, strategy, preview_batch, init_fn,
                    start_phase, verbose, chief, multiworker, eval_pattern)
    finally:
        if config.precision != "float32":
            keras.mixed_precision.set_global_policy("float32")


def _run(config, run_dir, train_dataset_fn, strategy, preview_batch, init_fn, start_phase,
         verbose, chief, multiworker, eval_pattern=None) -> TrainingResult:
    # Non-chief workers write to a scratch directory (MultiWorkerMirroredStrategy needs every
    # worker to take part in saving) that is deleted at the end.
    write_dir = run_dir if chief else os.path.join(
        run_dir, "_tmp_worker", str(getattr(strategy.cluster_resolver, "task_id", 0)))
    if chief:
        tf.io.gfile.makedirs(run_dir)
        _check_run_config(run_dir, config)
        config.save(runs.config_path(run_dir))
    tf.io.gfile.makedirs(write_dir)

    keras.utils.set_random_seed(config.seed)
    trainer = build_trainer(config, strategy)
    global _LAST_TRAINER
    _LAST_TRAINER = trainer  # for inspection in tests and notebooks
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    ckpt = make_checkpoint(trainer, step)
    manager = tf.train.CheckpointManager(ckpt, runs.checkpoint_dir(write_dir),
                                         max_to_keep=config.schedule.keep_checkpoints)
    latest = tf.train.latest_checkpoint(runs.checkpoint_dir(run_dir))
    if latest:
        ckpt.restore(latest).assert_existing_objects_matched()
        print(f"glcic_tf: resuming from {latest} at step {int(step.numpy())} "
              f"(phase {phase_for_step(int(step.numpy()), config)})", flush=True)
    else:
        if init_fn is not None:
            init_fn(trainer)
        if start_phase is not None and start_phase > 1:
            step.assign(phase_end(start_phase - 1, config))
            print(f"glcic_tf: starting in phase {start_phase} at step {int(step.numpy())}",
                  flush=True)

    writer = tf.summary.create_file_writer(os.path.join(runs.log_dir(write_dir), "train"))
    curve = None
    if chief and eval_pattern and config.schedule.eval_every:
        from glcic_tf.evaluation import curve as learning_curve

        scorer = learning_curve.HeldOutScorer(eval_pattern, config, config.schedule.eval_images)
        curve = learning_curve.CurveLog(run_dir, scorer, writer)
        print(f"glcic_tf: learning curve every {config.schedule.eval_every} steps on "
              f"{scorer.num_images} held-out crops of {eval_pattern} -> {curve.path}", flush=True)
    callback = StepCallback(step=step, manager=manager, config=config, writer=writer,
                            preview_batch=preview_batch, curve=curve)
    if curve is not None and not any(p["step"] >= int(step.numpy()) for p in curve.points):
        callback.set_model(trainer)
        callback.log_curve()  # where the curve starts (scratch or warm start)
    summaries: list[dict] = []
    total = config.schedule.total_steps
    with StopRequested() as stop:
        callback.stop = stop
        while int(step.numpy()) < total and stop.signum is None:
            current = int(step.numpy())
            phase = phase_for_step(current, config)
            remaining = phase_end(phase, config) - current
            trainer.set_phase(phase)
            print(f"glcic_tf: phase {phase}/3, {PHASE_NAMES[phase]}: steps {current} -> "
                  f"{phase_end(phase, config)} (batch {config.schedule.batch_size}, "
                  f"{strategy.num_replicas_in_sync} replica(s))", flush=True)
            for m in trainer.metrics:
                m.reset_state()
            t0 = time.perf_counter()
            if multiworker:
                logs = multiworker_loop(trainer, strategy, train_dataset_fn, remaining, callback)
            else:
                history = trainer.fit(training_features(train_dataset_fn(None)), epochs=1,
                                      steps_per_epoch=remaining,
                                      callbacks=[callback], verbose=verbose)
                logs = {k: float(v[-1]) for k, v in history.history.items()}
            done = int(step.numpy()) - current
            seconds = time.perf_counter() - t0
            summary = {"phase": phase, "steps": done, "seconds": round(seconds, 2),
                       "images_per_second": round(done * config.schedule.batch_size
                                                  / max(seconds, 1e-9), 3),
                       **{k: round(v, 6) for k, v in logs.items()}}
            summaries.append(summary)
            print("glcic_tf: phase {phase} summary: ".format(**summary)
                  + ", ".join(f"{k}={v}" for k, v in summary.items() if k != "phase"), flush=True)
            if int(step.numpy()) == phase_end(phase, config):
                callback.save()  # every phase boundary
        interrupted = stop.signum
    if curve is not None and interrupted is None and (
            not curve.points or curve.points[-1]["step"] < int(step.numpy())):
        callback.log_curve()  # where the curve ends
    saved = manager.latest_checkpoint
    if interrupted is not None and saved:
        print(f"glcic_tf: saved {saved} at step {int(step.numpy())}; re-run the same command "
              f"to resume", flush=True)
    writer.flush()
    if chief and preview_batch is not None:
        write_png(os.path.join(run_dir, "preview.png"),
                  preview_grid(trainer.completion, preview_batch, config))
    if not chief:
        tf.io.gfile.rmtree(write_dir)
    return TrainingResult(run_dir=run_dir, step=int(step.numpy()),
                          finished=int(step.numpy()) >= total, interrupted_by=interrupted,
                          checkpoint=saved, phase_summaries=summaries)
