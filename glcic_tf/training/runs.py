"""Layout of a training run directory, shared by training, export, evaluation and completion.

RUN_DIR/
  config.json            the resolved GLCICConfig (written at start; mean pixel included)
  checkpoints/           tf.train.CheckpointManager: ckpt-N.index / .data-*, `checkpoint`
  logs/                  TensorBoard event files (train/)
  preview.png            masked input | output | ground truth, written at the end
  export/glcic/VERSION/  SavedModels, when exported into the run
"""

from __future__ import annotations

import os

CONFIG_NAME = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"
LOG_SUBDIR = "logs"


def config_path(run_dir: str) -> str:
    return os.path.join(run_dir, CONFIG_NAME)


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINT_SUBDIR)


def log_dir(run_dir: str) -> str:
    return os.path.join(run_dir, LOG_SUBDIR)


def is_run_dir(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(config_path(path)) and tf.io.gfile.isdir(checkpoint_dir(path))


def latest_checkpoint(run_dir: str) -> str | None:
    import tensorflow as tf

    return tf.train.latest_checkpoint(checkpoint_dir(run_dir))


def save_completion_run(run_dir: str, config, completion, step: int = 0) -> str:
    """Writes a run directory holding only a completion network (imports, tests, tools).

    config.json plus a CheckpointManager checkpoint of `tf.train.Checkpoint(step, completion)`:
    the subset of training's object graph that `load_completion_network` reads.

    Returns:
      The checkpoint path.
    """
    import tensorflow as tf

    tf.io.gfile.makedirs(run_dir)
    config.save(config_path(run_dir))
    ckpt = tf.train.Checkpoint(step=tf.Variable(step, dtype=tf.int64), completion=completion)
    manager = tf.train.CheckpointManager(ckpt, checkpoint_dir(run_dir), max_to_keep=1)
    return manager.save(checkpoint_number=step)


def load_completion_network(run_dir: str, checkpoint: str | None = None):
    """Returns (config, completion network with the run's latest weights, step).

    The checkpoint object graph written by training is
    `tf.train.Checkpoint(completion=C, discriminator=D, optimizer_c=..., optimizer_d=...,
    step=...)`; only `completion` is restored here.

    Raises:
      FileNotFoundError: `run_dir` has no config.json or no checkpoint.
    """
    import tensorflow as tf

    from glcic_tf.networks import models
    from glcic_tf.config import GLCICConfig

    if not tf.io.gfile.exists(config_path(run_dir)):
        raise FileNotFoundError(f"{run_dir}: not a training run directory (no {CONFIG_NAME})")
    config = GLCICConfig.load(config_path(run_dir))
    path = checkpoint or latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {checkpoint_dir(run_dir)}")
    completion = models.completion_network(config.model.width, config.model)
    step = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(completion=completion, step=step)
    ckpt.restore(path).expect_partial().assert_existing_objects_matched()
    return config, completion, int(step.numpy())
