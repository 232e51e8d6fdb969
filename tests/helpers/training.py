"""Tiny-but-real training set-ups shared by the training tests (Table 1 at width 1/16)."""

import contextlib

import keras
import tensorflow as tf

from glcic_tf import config as cfg
from glcic_tf.training import inputs
from glcic_tf.training import trainer as trainer_lib


def tiny_config(**overrides):
    base = {
        "data.image_size": 32, "data.resize_min": 32, "data.resize_max": 40,
        "masks.local_size": 16, "masks.hole_min": 6, "masks.hole_max": 12,
        "model.width": 1 / 16, "model.sync_batch_norm": True,
        "schedule.batch_size": 4, "schedule.steps_completion": 3,
        "schedule.steps_discriminator": 2, "schedule.steps_joint": 3,
        "schedule.checkpoint_every": 100, "schedule.log_every": 1, "schedule.image_every": 2,
    }
    base.update(overrides)
    return cfg.get_preset("tiny").override(base)


def make_batch(config, seed=0, batch_size=None, smooth=True):
    """A batch with the element contract of glcic_tf.data.input_pipeline.make_dataset."""
    return inputs.synthetic_batch(config, batch_size, seed=seed, smooth=smooth)


def dataset_fn(config, seed=0):
    batch = make_batch(config, seed)
    return lambda ctx=None: tf.data.Dataset.from_tensors(batch).repeat()


def snapshot(trainer):
    return ([w.numpy().copy() for w in trainer.completion.weights],
            [w.numpy().copy() for w in trainer.discriminator.weights])


def sgd(learning_rate, config):
    import keras
    return keras.optimizers.SGD(0.5)


def one_step(config, strategy, init, phase, batch, optimizer_fn=sgd):
    trainer = trainer_lib.build_trainer(config, strategy, optimizer_fn=optimizer_fn)
    trainer.completion.set_weights(init[0])
    trainer.discriminator.set_weights(init[1])
    trainer.set_phase(phase)
    ds = inputs.training_features(tf.data.Dataset.from_tensors(batch).repeat())
    trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)
    return snapshot(trainer)


# SGD(0.5) updates are linear in the gradient: a replica that averaged its loss over its own
# batch instead of the global one would be off by 2x. The networks run in float64: in float32,
# synchronised batch norm (E[x^2] - E[x]^2) and the discriminator's few-value statistics amplify
# rounding to 2e-5 .. 1.6e-3 depending on the initial weights, which hides nothing but flakes. In
# float64 the two set-ups agree to 3e-8 (the float32 casts at the loss boundary remain).
ATOL = 1e-6  # updates are 0.1-0.3 in size


@contextlib.contextmanager
def policy(name: str):
    """Keras' global dtype policy `name` inside the block, float32 again after it."""
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def float64_policy():
    return policy("float64")
