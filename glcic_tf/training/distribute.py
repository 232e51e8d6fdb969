"""Distribution strategies for training: which one `--strategy` names, and the multi-worker loop.

`make_strategy` picks the strategy (default, one device, MirroredStrategy over local devices,
or MultiWorkerMirroredStrategy from TF_CONFIG); `mirrored_strategy` makes MirroredStrategy work
on CPU devices (ReductionToOneDevice all-reduces); `is_chief` says which worker writes the run.
Keras 3's `fit()` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so there
`multiworker_loop` drives the trainer's own `train_step` through `strategy.run` in a plain loop.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from glcic_tf.training.inputs import training_features


STRATEGIES = ("auto", "one_device", "mirrored", "multiworker")


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """auto: MirroredStrategy over all local GPUs when there are two or more, else the default.

    multiworker: MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable "
                             "(cluster and task); see README 'Training on several machines'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        return mirrored_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if len(gpus) >= 2:
        return mirrored_strategy()
    return tf.distribute.get_strategy()


def mirrored_strategy(devices=None) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy; on CPU-only devices with ReductionToOneDevice all-reduces.

    On CPUs the default cross-device ops are collective ops, and the discriminator's two
    branches (and its real / completed passes) issue synchronized-BN all-reduces concurrently;
    collectives launched in different orders on the two replicas then abort with "Shape mismatch
    in the collective instance". ReductionToOneDevice reduces through merge_call, which pairs the
    replicas' calls in program order. GPUs keep the default (NCCL).
    """
    devices = devices or [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")]
    if all("CPU" in d.upper() for d in devices):
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory (always, except on multi-worker non-chiefs)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (
        task_type == "worker" and task_id == 0
        and "chief" not in (resolver.cluster_spec().as_dict() or {}))


def multiworker_loop(trainer, strategy, train_dataset_fn, steps, callback) -> dict:
    """The same train_step driven by strategy.run (MultiWorkerMirroredStrategy).

    Runs `steps` steps on per-replica batches of `train_dataset_fn(input_context)`, calling
    `callback.on_train_batch_end` after each as `fit()` would; returns the last step's logs.
    """
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: training_features(train_dataset_fn(ctx)))
    iterator = iter(dist)

    @tf.function
    def step_fn(it):
        outputs = strategy.run(trainer.train_step, args=(next(it),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in outputs.items()}

    callback.set_model(trainer)
    logs: dict = {}
    progress = keras.utils.Progbar(steps, stateful_metrics=[m.name for m in trainer.metrics])
    for i in range(steps):
        logs = {k: float(v) for k, v in step_fn(iterator).items()}
        callback.on_train_batch_end(i, logs)
        progress.update(i + 1, values=list(logs.items()))
        if trainer.stop_training:
            break
    return logs
