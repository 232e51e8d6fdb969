"""The paper's three-phase GAN training (Iizuka et al. 2017, Section 3.3 and Algorithm 1).

`GLCICTrainer` is a `keras.Model` that owns the completion network C and the context
discriminator D and overrides `train_step`, so training runs through `fit()` (callbacks, progress
bar and `tf.distribute` for free) on one host, and through `strategy.run` on the same step in a
plain loop for MultiWorkerMirroredStrategy (Keras 3 `fit()` fails under it: keras-team/keras#20585).

Phases (global step counts from the config's schedule):
  1. T_C steps: C alone, weighted MSE ||M * (C(x, M) - x)||^2.
  2. T_D steps: D alone, binary cross-entropy of real images vs. completed images (generated pixels
     inside the hole, original outside); the global branch sees the whole image and the local one
     the `local_size` patch around the hole. C runs in inference mode and is left untouched.
  3. T_train - T_C - T_D steps (the paper's T_train is the total): D and C together, in the
     order of the paper's Algorithm 1: a D step on the detached completions, then a C step on
     MSE + alpha * GAN through the updated D, where GAN is Eq. 2's saturating log(1 - D(completed))
     or the non-saturating -log D(completed) (`loss.generator_gan`).

D sees each real image through the local patch of a random mask of its own (Eq. 2's M_d,
`loss.real_local_patch = "own_random"`, the batch's `real_local_offset`) or, as this code did
before, at the completed image's patch ("same_as_fake"). C's reconstruction term is the MSE or
(`loss.reconstruction = "l1"`) the mean absolute error in the hole.
     (Computing both gradients from one forward pass and applying them together raced under
     MirroredStrategy: updates differed from one device by ~1e-2 with SGD, non-deterministically.)

Gradient accumulation (`schedule.accumulate = N`): each step splits its batch into N
micro-batches, sums their gradients (each per-example loss still divided by the whole global
batch) and applies them once: the update of the big batch, except that batch norm sees
micro-batch statistics unless `model.freeze_batch_norm` is set.

Losses: the MSE of an example is the mean over its pixels and channels of the masked squared error
(what Torch's MSECriterion on masked tensors gives, and what alpha = 0.0004 was tuned against);
every per-example loss is then averaged over the *global* batch with `tf.nn.compute_average_loss`,
so N replicas sum their gradients (Keras' `apply_gradients` all-reduces once) into exactly the
single-device update. Batch norm is synchronised across replicas when `model.sync_batch_norm` is
set (`run_training` sets it whenever there is more than one replica).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from glcic_tf import masks as masks_lib
from glcic_tf import models, runs
from glcic_tf.config import GLCICConfig

PHASE_NAMES = {1: "completion (T_C): reconstruction loss only",
               2: "discriminator (T_D): D only",
               3: "joint (T_train - T_C - T_D): reconstruction + alpha * GAN"}


_LAST_TRAINER = None  # the trainer of the latest run_training call in this process


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible run directory, ...)."""


# --- pure loss functions ------------------------------------------------------------------------

def masked_mse_per_example(prediction: tf.Tensor, target: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """||M * (C(x, M) - x)||^2 per example, as the mean over pixels and channels: shape [B]."""
    prediction = tf.cast(prediction, tf.float32)
    diff = (prediction - tf.cast(target, tf.float32)) * tf.cast(mask, tf.float32)
    return tf.reduce_mean(tf.square(diff), axis=[1, 2, 3])


def masked_l1_per_example(prediction: tf.Tensor, target: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """|M * (C(x, M) - x)| per example, as the mean over pixels and channels: shape [B]."""
    prediction = tf.cast(prediction, tf.float32)
    diff = (prediction - tf.cast(target, tf.float32)) * tf.cast(mask, tf.float32)
    return tf.reduce_mean(tf.abs(diff), axis=[1, 2, 3])


def reconstruction_per_example(prediction, target, mask, kind: str) -> tf.Tensor:
    """C's reconstruction term (`loss.reconstruction`): "mse" (the paper) or "l1"; shape [B]."""
    if kind == "mse":
        return masked_mse_per_example(prediction, target, mask)
    if kind == "l1":
        return masked_l1_per_example(prediction, target, mask)
    raise ValueError(f"unknown loss.reconstruction {kind!r}")


def generator_gan_per_example(fake_logits: tf.Tensor, kind: str) -> tf.Tensor:
    """C's GAN term from D's logits on completed images (`loss.generator_gan`); shape [B].

    "saturating": log(1 - D(C(x))) as Eq. 2 writes it (C minimises it; its gradient vanishes
    where D is confident); "non_saturating": -log D(C(x)).
    """
    if kind == "saturating":
        return -bce_with_logits_per_example(fake_logits, 0.0)  # log(1 - sigmoid(logits))
    if kind == "non_saturating":
        return bce_with_logits_per_example(fake_logits, 1.0)
    raise ValueError(f"unknown loss.generator_gan {kind!r}")


def bce_with_logits_per_example(logits: tf.Tensor, label: float) -> tf.Tensor:
    """Binary cross-entropy of D's logits against a constant label: shape [B]."""
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label),
                                                   logits=logits)


def crop_local(images: tf.Tensor, offsets: tf.Tensor, size: int) -> tf.Tensor:
    """Crops a `size` x `size` patch per example at `offsets` [B, 2] = (y, x); differentiable."""
    offsets = tf.cast(offsets, tf.int32)
    grid = tf.range(size, dtype=tf.int32)[tf.newaxis, :]
    ys = offsets[:, 0:1] + grid  # [B, size]
    xs = offsets[:, 1:2] + grid
    rows = tf.gather(images, ys, axis=1, batch_dims=1)  # [B, size, W, C]
    return tf.gather(rows, xs, axis=2, batch_dims=1)  # [B, size, size, C]


def phase_for_step(step: int, config: GLCICConfig) -> int:
    """Phase (1, 2 or 3) that global step `step` (0-based, steps done so far) belongs to."""
    s = config.schedule
    if step < s.steps_completion:
        return 1
    if step < s.steps_completion + s.steps_discriminator:
        return 2
    return 3


def phase_end(phase: int, config: GLCICConfig) -> int:
    """Global step count at which `phase` ends."""
    s = config.schedule
    return {1: s.steps_completion,
            2: s.steps_completion + s.steps_discriminator,
            3: s.total_steps}[phase]


# --- the model ----------------------------------------------------------------------------------

class GLCICTrainer(keras.Model):
    """C and D with a phase-dependent `train_step`.

    Set `phase` (1, 2, 3) before `fit()`; `set_phase` drops the compiled train function so each
    phase is traced exactly once.
    """

    def __init__(self, completion: keras.Model, discriminator: keras.Model, config: GLCICConfig,
                 **kwargs):
        super().__init__(name="glcic_trainer", **kwargs)
        self.completion = completion
        self.discriminator = discriminator
        self.discriminator_logits = models.discriminator_logits(discriminator)
        self.glcic_config = config
        self.phase = 1
        self.c_mse_tracker = keras.metrics.Mean(name="c_mse")
        self.c_gan_tracker = keras.metrics.Mean(name="c_gan")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.d_real_acc = keras.metrics.Mean(name="d_acc_real")
        self.d_fake_acc = keras.metrics.Mean(name="d_acc_fake")

    def call(self, inputs, training=False):
        """C's raw output for a batch dict with `image` (ground truth) and `mask`."""
        return self.completion(self._inputs(inputs), training=training)

    def compile(self, c_optimizer, d_optimizer, **kwargs):
        super().compile(optimizer=c_optimizer, **kwargs)
        self.c_optimizer = c_optimizer
        self.d_optimizer = d_optimizer

    @property
    def metrics(self):
        return {1: [self.c_mse_tracker],
                2: [self.d_loss_tracker, self.d_real_acc, self.d_fake_acc],
                3: [self.c_mse_tracker, self.c_gan_tracker, self.d_loss_tracker,
                    self.d_real_acc, self.d_fake_acc]}[self.phase]

    def set_phase(self, phase: int) -> None:
        if phase not in (1, 2, 3):
            raise ValueError(f"phase must be 1, 2 or 3, got {phase!r}")
        self.phase = phase
        self.train_function = None  # retrace once for the new phase

    # The pieces of a step ----------------------------------------------------------------------

    @property
    def _bn_training(self) -> bool:
        return not self.glcic_config.model.freeze_batch_norm

    def _inputs(self, data):
        return masks_lib.network_inputs(data["image"], data["mask"], self.glcic_config.data)

    def _d_logits(self, images, offsets, training):
        local = crop_local(images, offsets, self.glcic_config.masks.local_size)
        return self.discriminator_logits({"global_image": images, "local_image": local},
                                         training=training)

    def _scaled(self, optimizer, loss):
        # LossScaleOptimizer (mixed_float16) scales the loss; others return it unchanged.
        return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss

    def _micro_batches(self, data):
        """Splits a (per-replica) batch into `schedule.accumulate` equal micro-batches."""
        n = self.glcic_config.schedule.accumulate
        if n == 1:
            return [data]
        size = data["image"].shape[0]
        if size is None or size % n:
            raise ValueError(f"per-replica batch {size} is not divisible by schedule.accumulate "
                             f"({n}); use a static batch (drop_remainder=True) that divides")
        m = size // n
        return [{k: v[i * m:(i + 1) * m] for k, v in data.items()} for i in range(n)]

    def _global_batch(self, data) -> int:
        """Examples in the whole step: per-replica batch times replicas (not the micro-batch)."""
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        return data["image"].shape[0] * replicas

    @staticmethod
    def _accumulate(total, grads):
        return list(grads) if total is None else [a + b for a, b in zip(total, grads)]

    def _real_offsets(self, data):
        if self.glcic_config.loss.real_local_patch == "same_as_fake":
            return data["local_offset"]
        if "real_local_offset" not in data:
            raise ValueError("loss.real_local_patch is 'own_random' but the batch has no "
                             "'real_local_offset' (see glcic_tf.data.with_real_local_offset)")
        return data["real_local_offset"]

    def _d_losses(self, data, completed):
        real_logits = self._d_logits(data["image"], self._real_offsets(data),
                                     training=self._bn_training)
        fake_logits = self._d_logits(completed, data["local_offset"], training=self._bn_training)
        per_example = (bce_with_logits_per_example(real_logits, 1.0)
                       + bce_with_logits_per_example(fake_logits, 0.0))
        if self.glcic_config.loss.discriminator_alpha:
            per_example = self.glcic_config.loss.alpha * per_example
        self.d_real_acc.update_state(tf.cast(tf.reshape(real_logits, [-1]) > 0, tf.float32))
        self.d_fake_acc.update_state(tf.cast(tf.reshape(fake_logits, [-1]) < 0, tf.float32))
        return per_example

    def _reconstruction(self, out, data):
        return reconstruction_per_example(out, data["image"], data["mask"],
                                          self.glcic_config.loss.reconstruction)

    def _d_step(self, micro, global_batch, completed_fn):
        """Accumulates D's gradients over the micro-batches, then applies them once."""
        d_vars = self.discriminator.trainable_variables
        total = None
        for part in micro:
            completed = tf.stop_gradient(completed_fn(part))
            with tf.GradientTape() as tape:
                per_example = self._d_losses(part, completed)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                scaled = self._scaled(self.d_optimizer, loss)
            total = self._accumulate(total, tape.gradient(scaled, d_vars))
            self.d_loss_tracker.update_state(tf.reduce_mean(per_example))
        self.d_optimizer.apply_gradients(zip(total, d_vars))

    def _c_step(self, micro, global_batch, alpha):
        """Accumulates C's gradients of MSE (+ alpha * GAN through D), then applies them once."""
        c_vars = self.completion.trainable_variables
        total = None
        for part in micro:
            with tf.GradientTape() as tape:
                out = self.completion(self._inputs(part), training=self._bn_training)
                mse = masked_mse_per_example(out, part["image"], part["mask"])
                per_example = self._reconstruction(out, part)
                if alpha is not None:
                    completed = masks_lib.composite(out, part["image"], part["mask"])
                    fake_logits = self._d_logits(completed, part["local_offset"],
                                                 training=self._bn_training)
                    gan = generator_gan_per_example(fake_logits,
                                                    self.glcic_config.loss.generator_gan)
                    per_example = per_example + alpha * gan
                    self.c_gan_tracker.update_state(tf.reduce_mean(gan))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                scaled = self._scaled(self.c_optimizer, loss)
            total = self._accumulate(total, tape.gradient(scaled, c_vars))
            self.c_mse_tracker.update_state(tf.reduce_mean(mse))
        self.c_optimizer.apply_gradients(zip(total, c_vars))

    def train_step(self, data):
        micro = self._micro_batches(data)
        global_batch = self._global_batch(data)
        if self.phase == 1:
            self._c_step(micro, global_batch, alpha=None)
        elif self.phase == 2:
            # C is fixed: inference mode, so its batch-norm statistics stay untouched too.
            self._d_step(micro, global_batch, lambda part: masks_lib.composite(
                self.completion(self._inputs(part), training=False), part["image"],
                part["mask"]))
        elif len(micro) == 1:
            # Algorithm 1's order: a D step on the detached completion, then a C step on
            # MSE + alpha * GAN through the updated D, from one C forward pass.
            alpha = self.glcic_config.loss.alpha
            c_vars = self.completion.trainable_variables
            with tf.GradientTape() as tape:
                out = self.completion(self._inputs(data), training=self._bn_training)
                completed = masks_lib.composite(out, data["image"], data["mask"])
                with tape.stop_recording():
                    self._d_step(micro, global_batch, lambda part: completed)
                fake_logits = self._d_logits(completed, data["local_offset"],
                                             training=self._bn_training)
                mse = masked_mse_per_example(out, data["image"], data["mask"])
                gan = generator_gan_per_example(fake_logits, self.glcic_config.loss.generator_gan)
                loss = tf.nn.compute_average_loss(self._reconstruction(out, data) + alpha * gan,
                                                  global_batch_size=global_batch)
                scaled = self._scaled(self.c_optimizer, loss)
            self.c_optimizer.apply_gradients(zip(tape.gradient(scaled, c_vars), c_vars))
            self.c_mse_tracker.update_state(tf.reduce_mean(mse))
            self.c_gan_tracker.update_state(tf.reduce_mean(gan))
        else:
            # Accumulating: every micro-batch's C graph cannot stay alive until D is updated,
            # so C runs forward twice per micro-batch (for D's inputs, then under C's tape).
            self._d_step(micro, global_batch, lambda part: masks_lib.composite(
                self.completion(self._inputs(part), training=self._bn_training),
                part["image"], part["mask"]))
            self._c_step(micro, global_batch, alpha=self.glcic_config.loss.alpha)
        return {m.name: m.result() for m in self.metrics}


def synthetic_batch(config: GLCICConfig, batch_size: int | None = None, seed: int = 0,
                    smooth: bool = True) -> dict:
    """A batch with the element contract of `glcic_tf.data.make_dataset`, from NumPy.

    For benchmarks and tests that must not depend on decoding. `smooth`: random colour waves
    (hole contents predictable from the context); else uniform noise, whose well-spread
    activations keep batch-norm variances well conditioned. One rectangle hole per image inside
    the local patch.
    """
    rng = np.random.default_rng(seed)
    b = batch_size or config.schedule.batch_size
    s, ls = config.data.image_size, config.masks.local_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    freq = rng.uniform(1, 4, size=(b, 1, 1, 3, 2)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(b, 1, 1, 3)).astype(np.float32)
    image = 0.5 + 0.4 * np.sin(2 * np.pi * (freq[..., 0] * yy[None, :, :, None]
                                            + freq[..., 1] * xx[None, :, :, None]) + phase)
    image = image.astype(np.float32)
    if not smooth:
        image = rng.random((b, s, s, 3), dtype=np.float32)
    mask = np.zeros((b, s, s, 1), np.float32)
    offsets = np.zeros((b, 2), np.int32)
    real_offsets = np.zeros((b, 2), np.int32)
    for i in range(b):
        hh, hw = rng.integers(config.masks.hole_min, config.masks.hole_max + 1, size=2)
        y, x = rng.integers(0, s - hh + 1), rng.integers(0, s - hw + 1)
        mask[i, y:y + hh, x:x + hw] = 1
        # Centred on the hole, clipped to the image (masks.centred_start).
        offsets[i] = (min(max((2 * y + hh - ls) // 2, 0), s - ls),
                      min(max((2 * x + hw - ls) // 2, 0), s - ls))
        real_offsets[i] = rng.integers(0, s - ls + 1, size=2)
    masked = image * (1 - mask) + np.asarray(config.data.mean_pixel, np.float32) * mask
    return {"image": image, "mask": mask, "masked": masked.astype(np.float32),
            "local_offset": offsets, "real_local_offset": real_offsets,
            "key": np.array([b"synthetic-%d" % i for i in range(b)])}


TRAIN_FEATURES = ("image", "mask", "local_offset", "real_local_offset")


def training_features(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Keeps the fields train_step reads (string keys cannot be distributed across replicas)."""
    return dataset.map(lambda d: {k: d[k] for k in TRAIN_FEATURES},
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_optimizer(learning_rate: float, config: GLCICConfig, role: str = "completion"):
    """`optimizer.name` ("adadelta", the paper's, or "adam") for C (`role` "completion") or D
    ("discriminator"), wrapped for loss scaling under mixed_float16."""
    o = config.optimizer
    if o.name == "adam":
        opt = keras.optimizers.Adam(
            learning_rate=learning_rate, beta_2=o.beta_2,
            beta_1=o.beta_1 if role == "completion" else o.beta_1_discriminator)
    else:
        opt = keras.optimizers.Adadelta(learning_rate=learning_rate, rho=o.rho, epsilon=o.epsilon)
    if config.precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def build_trainer(config: GLCICConfig, strategy: tf.distribute.Strategy | None = None, *,
                  optimizer_fn: Callable[[float, GLCICConfig], Any] = None,
                  batch_norm: str = "fused") -> GLCICTrainer:
    """Builds C, D, both optimizers (slots created now) and the compiled trainer.

    `optimizer_fn(learning_rate, config)` defaults to `make_optimizer` (Adadelta); tests pass
    plain SGD, whose update is linear in the gradient and so exposes any loss-scaling error
    that Adadelta's nearly scale-invariant first step would hide. `batch_norm` ("fused" or
    "keras", see `models.BATCH_NORM_LAYERS`) is for A/B benchmarks and equivalence tests.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        c, d = models.build_models(config.model, config.data.image_size, config.masks.local_size,
                                   batch_norm=batch_norm)
        trainer = GLCICTrainer(c, d, config)
        if optimizer_fn is None:
            c_opt = make_optimizer(config.optimizer.learning_rate_completion, config, "completion")
            d_opt = make_optimizer(config.optimizer.learning_rate_discriminator, config,
                                   "discriminator")
        else:
            c_opt = optimizer_fn(config.optimizer.learning_rate_completion, config)
            d_opt = optimizer_fn(config.optimizer.learning_rate_discriminator, config)
        # Slots created lazily inside the distributed step fail under MirroredStrategy
        # ("You must feed a value for placeholder"): build them here, in the scope.
        c_opt.build(c.trainable_variables)
        d_opt.build(d.trainable_variables)
        trainer.compile(c_opt, d_opt, jit_compile=config.jit_compile)
    return trainer


def make_checkpoint(trainer: GLCICTrainer, step: tf.Variable) -> tf.train.Checkpoint:
    """The checkpoint object graph every glcic_tf tool reads (see glcic_tf/runs.py)."""
    return tf.train.Checkpoint(step=step, completion=trainer.completion,
                               discriminator=trainer.discriminator,
                               optimizer_c=trainer.c_optimizer, optimizer_d=trainer.d_optimizer)


# --- strategies ---------------------------------------------------------------------------------

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
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (
        task_type == "worker" and task_id == 0
        and "chief" not in (resolver.cluster_spec().as_dict() or {}))


# --- callbacks ----------------------------------------------------------------------------------

class _StopRequested:
    """Turns SIGTERM / SIGINT into a flag the training loop checks after each step."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nglcic_tf: received signal {signum}; saving a checkpoint after this step ...",
              flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class StepCallback(keras.callbacks.Callback):
    """Counts global steps, checks losses, checkpoints, logs TensorBoard scalars and images."""

    def __init__(self, *, step: tf.Variable, manager: tf.train.CheckpointManager | None,
                 config: GLCICConfig, writer=None, preview_batch=None, stop=None, curve=None):
        super().__init__()
        self.curve = curve  # eval_curve.CurveLog, or None
        self._clock = time.perf_counter()
        self._eval_seconds = 0.0
        self.step = step
        self.manager = manager
        self.config = config
        self.writer = writer
        self.preview_batch = preview_batch
        self.stop = stop
        self._t = time.perf_counter()
        self._images = 0

    def log_curve(self) -> dict:
        """Scores the held-out crops now (`eval_curve`); its time is not training time."""
        t0 = time.perf_counter()
        minutes = (t0 - self._clock - self._eval_seconds) / 60.0
        step = int(self.step.numpy())
        point = self.curve.log(self.model.completion, step=step,
                               phase=phase_for_step(max(step - 1, 0), self.config),
                               minutes=minutes)
        print(f"\nglcic_tf: step {step}: held-out hole L1 {point['hole_l1']:.2f}, PSNR "
              f"{point['psnr']:.2f} dB (Telea {point['baselines']['telea']['hole_l1']:.2f}, "
              f"{point['baselines']['telea']['psnr']:.2f} dB) after {point['minutes']:.1f} min",
              flush=True)
        self._eval_seconds += time.perf_counter() - t0
        return point

    def save(self) -> str | None:
        if self.manager is None:
            return None
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        for name, value in logs.items():
            v = float(np.asarray(value))
            if not math.isfinite(v):
                self.model.stop_training = True
                raise TrainingError(
                    f"non-finite {name} = {v} at global step {int(self.step.numpy()) + 1} in "
                    f"phase {self.model.phase}; stopping without saving. The last good checkpoint "
                    f"is {self.manager.latest_checkpoint if self.manager else None}. Lower the "
                    f"learning rate or check the data.")
        self.step.assign_add(1)
        self._images += self.config.schedule.batch_size
        step = int(self.step.numpy())
        sched = self.config.schedule
        if self.writer is not None and step % sched.log_every == 0:
            elapsed = time.perf_counter() - self._t
            with self.writer.as_default(step=step):
                for name, value in logs.items():
                    tf.summary.scalar(f"phase{self.model.phase}/{name}", float(value))
                    tf.summary.scalar(name, float(value))
                tf.summary.scalar("images_per_second", self._images / max(elapsed, 1e-9))
                tf.summary.scalar("phase", self.model.phase)
            self._t, self._images = time.perf_counter(), 0
        if self.writer is not None and self.preview_batch is not None and (
                step % sched.image_every == 0):
            grid = preview_grid(self.model.completion, self.preview_batch, self.config)
            with self.writer.as_default(step=step):
                tf.summary.image("preview/masked|output|completed|truth", grid[tf.newaxis],
                                 max_outputs=1)
        if self.curve is not None and sched.eval_every and step % sched.eval_every == 0:
            self.log_curve()
        if step % sched.checkpoint_every == 0:
            self.save()
        if self.stop is not None and self.stop.signum is not None:
            self.save()
            self.model.stop_training = True


def preview_grid(completion: keras.Model, batch: dict, config: GLCICConfig,
                 max_rows: int = 4) -> tf.Tensor:
    """Rows of (masked input | raw output | completed | ground truth), float32 in [0, 1]."""
    image = batch["image"][:max_rows]
    mask = batch["mask"][:max_rows]
    out = completion(masks_lib.network_inputs(image, mask, config.data), training=False)
    completed = masks_lib.composite(out, image, mask)
    masked = masks_lib.fill_holes(image, mask, config.data.mean_pixel)
    row = tf.concat([masked, tf.cast(out, tf.float32), completed, image], axis=2)  # [N,H,4W,3]
    return tf.reshape(row, [-1, tf.shape(row)[2], 3])


def write_png(path: str, image: tf.Tensor) -> None:
    data = tf.io.encode_png(tf.image.convert_image_dtype(tf.clip_by_value(image, 0.0, 1.0),
                                                         tf.uint8, saturate=True))
    tf.io.write_file(path, data)


# --- the driver ---------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainingResult:
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
      run_dir: output directory (see glcic_tf/runs.py).
      train_dataset_fn: returns the training dataset with *global* batches (input_context None),
        or per-replica batches for an InputContext (multi-worker).
      strategy: tf.distribute strategy; default: the current one.
      preview_batch: a fixed batch for TensorBoard images and preview.png.
      init_fn: warm start used only when no checkpoint exists.
      start_phase: with no checkpoint, start at the first step of this phase (1, 2 or 3), e.g.
        3 to fine-tune a warm-started C and D jointly.
      eval_pattern: held-out shards for the learning curve (`schedule.eval_every` > 0,
        `glcic_tf.eval_curve`); None: no curve.
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
        from glcic_tf import eval_curve

        scorer = eval_curve.HeldOutScorer(eval_pattern, config, config.schedule.eval_images)
        curve = eval_curve.CurveLog(run_dir, scorer, writer)
        print(f"glcic_tf: learning curve every {config.schedule.eval_every} steps on "
              f"{scorer.num_images} held-out crops of {eval_pattern} -> {curve.path}", flush=True)
    callback = StepCallback(step=step, manager=manager, config=config, writer=writer,
                            preview_batch=preview_batch, curve=curve)
    if curve is not None and not any(p["step"] >= int(step.numpy()) for p in curve.points):
        callback.set_model(trainer)
        callback.log_curve()  # where the curve starts (scratch or warm start)
    summaries: list[dict] = []
    total = config.schedule.total_steps
    with _StopRequested() as stop:
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
                logs = _custom_loop(trainer, strategy, train_dataset_fn, remaining, callback)
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


def _custom_loop(trainer, strategy, train_dataset_fn, steps, callback) -> dict:
    """The same train_step driven by strategy.run (MultiWorkerMirroredStrategy)."""
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
