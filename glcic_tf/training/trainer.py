"""The GAN of the paper's three-phase training (Iizuka et al. 2017, Section 3.3, Algorithm 1).

`GLCICTrainer` is a `keras.Model` that owns the completion network C and the context
discriminator D and overrides `train_step`, so training runs through `fit()` (callbacks, progress
bar and `tf.distribute` for free) on one host, and through `strategy.run` on the same step in a
plain loop for MultiWorkerMirroredStrategy (`glcic_tf.training.distribute`). `build_trainer`
builds it with both optimizers; `make_checkpoint` is the object graph every checkpoint holds.

Phases (global step counts from the config's schedule; `phase_for_step`):
  1. T_C steps: C alone, weighted MSE ||M * (C(x, M) - x)||^2.
  2. T_D steps: D alone, binary cross-entropy of real images vs. completed images (generated pixels
     inside the hole, original outside); the global branch sees the whole image and the local one
     the `local_size` patch around the hole. C runs in inference mode and is left untouched.
  3. T_train - T_C - T_D steps (the paper's T_train is the total): D and C together, in the
     order of the paper's Algorithm 1: a D step on the detached completions, then a C step on
     MSE + alpha * GAN through the updated D, where GAN is Eq. 2's saturating log(1 - D(completed))
     or the non-saturating -log D(completed) (`loss.generator_gan`).
     (Computing both gradients from one forward pass and applying them together raced under
     MirroredStrategy: updates differed from one device by ~1e-2 with SGD, non-deterministically.)

D sees each real image through the local patch of a random mask of its own (Eq. 2's M_d,
`loss.real_local_patch = "own_random"`, the batch's `real_local_offset`) or, as this code did
before, at the completed image's patch ("same_as_fake"). The losses themselves are pure functions
in `glcic_tf.training.losses`; each per-example loss is averaged over the *global* batch, and
batch norm is synchronised across replicas when `model.sync_batch_norm` is set
(`run_training` sets it whenever there is more than one replica).

Gradient accumulation (`schedule.accumulate = N`): each step splits its batch into N
micro-batches, sums their gradients (each per-example loss still divided by the whole global
batch) and applies them once: the update of the big batch, except that batch norm sees
micro-batch statistics unless `model.freeze_batch_norm` is set.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from glcic_tf.data import masks as masks_lib
from glcic_tf.networks import models
from glcic_tf.training.losses import (bce_with_logits_per_example, generator_gan_per_example,
                                      masked_mse_per_example, reconstruction_per_example)
from glcic_tf.config import GLCICConfig

PHASE_NAMES = {1: "completion (T_C): reconstruction loss only",
               2: "discriminator (T_D): D only",
               3: "joint (T_train - T_C - T_D): reconstruction + alpha * GAN"}


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible run directory, ...)."""


# --- the three phases ---------------------------------------------------------------------------

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


def crop_local(images: tf.Tensor, offsets: tf.Tensor, size: int) -> tf.Tensor:
    """Crops a `size` x `size` patch per example at `offsets` [B, 2] = (y, x); differentiable."""
    offsets = tf.cast(offsets, tf.int32)
    grid = tf.range(size, dtype=tf.int32)[tf.newaxis, :]
    ys = offsets[:, 0:1] + grid  # [B, size]
    xs = offsets[:, 1:2] + grid
    rows = tf.gather(images, ys, axis=1, batch_dims=1)  # [B, size, W, C]
    return tf.gather(rows, xs, axis=2, batch_dims=1)  # [B, size, size, C]


# --- the model ------------------------------------------------------------------------------------

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
                             "'real_local_offset' (see "
                             "glcic_tf.data.augment.with_real_local_offset)")
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


# --- building -------------------------------------------------------------------------------------

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
    """The checkpoint object graph every glcic_tf tool reads (see glcic_tf/training/runs.py)."""
    return tf.train.Checkpoint(step=step, completion=trainer.completion,
                               discriminator=trainer.discriminator,
                               optimizer_c=trainer.c_optimizer, optimizer_d=trainer.d_optimizer)
