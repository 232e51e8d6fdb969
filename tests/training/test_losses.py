"""The GAN losses (glcic_tf.training.losses, and as the trainer's step uses them) by value and by
direction: oracles written here in NumPy, not the trainer's own.

Runs of the same `train_step` against each other (1 vs 2 replicas, accumulated vs big batch)
cannot see a flipped label or an ignored alpha; these tests can.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import masks as masks_lib
from glcic_tf.training import inputs, losses
from glcic_tf.training import trainer as trainer_lib

from helpers.training import float64_policy, make_batch, snapshot, tiny_config

LOGITS = np.array([-6.0, -2.0, -0.5, 0.0, 0.3, 1.5, 5.0], np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_discriminator_bce_values():
    p = _sigmoid(LOGITS)
    real = losses.bce_with_logits_per_example(tf.constant(LOGITS[:, None]), 1.0).numpy()
    fake = losses.bce_with_logits_per_example(tf.constant(LOGITS[:, None]), 0.0).numpy()
    np.testing.assert_allclose(real, -np.log(p), rtol=1e-6)
    np.testing.assert_allclose(fake, -np.log(1 - p), rtol=1e-5)
    # D is rewarded for high logits on real images and low ones on completions.
    assert np.all(np.diff(real) < 0) and np.all(np.diff(fake) > 0)


@pytest.mark.parametrize("kind", ["saturating", "non_saturating"])
def test_generator_gan_values_and_direction(kind):
    p = _sigmoid(LOGITS)
    gan = losses.generator_gan_per_example(tf.constant(LOGITS), kind).numpy()
    expected = np.log(1 - p) if kind == "saturating" else -np.log(p)  # Eq. 2 / its usual fix
    np.testing.assert_allclose(gan, expected, rtol=1e-5, atol=1e-7)
    # C minimises it, so it must fall as D is fooled (its logit on the completion rises).
    assert np.all(np.diff(gan) < 0)
    with tf.GradientTape() as tape:
        x = tf.Variable(LOGITS)
        loss = tf.reduce_sum(losses.generator_gan_per_example(x, kind))
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_allclose(grad, -p if kind == "saturating" else -(1 - p), rtol=1e-5)
    with pytest.raises(ValueError, match="generator_gan"):
        losses.generator_gan_per_example(tf.constant(LOGITS), "wasserstein")


def test_reconstruction_values():
    rng = np.random.default_rng(0)
    prediction, target = rng.random((2, 2, 5, 4, 3))
    mask = (rng.random((2, 5, 4, 1)) > 0.5).astype(np.float64)
    diff = (prediction - target) * mask
    mse = losses.reconstruction_per_example(prediction, target, mask, "mse").numpy()
    l1 = losses.reconstruction_per_example(prediction, target, mask, "l1").numpy()
    # Mean over every pixel and channel of the image, as Torch's MSECriterion on masked tensors.
    np.testing.assert_allclose(mse, (diff ** 2).reshape(2, -1).mean(1), rtol=1e-6)
    np.testing.assert_allclose(l1, np.abs(diff).reshape(2, -1).mean(1), rtol=1e-6)
    with pytest.raises(ValueError, match="reconstruction"):
        losses.reconstruction_per_example(prediction, target, mask, "ssim")


def test_masked_mse_counts_only_hole_pixels():
    target = np.zeros((1, 4, 4, 3), np.float32)
    pred = np.ones((1, 4, 4, 3), np.float32)
    mask = np.zeros((1, 4, 4, 1), np.float32)
    mask[0, :2, :2] = 1  # 4 of 16 pixels
    assert losses.masked_mse_per_example(pred, target, mask).numpy()[0] == pytest.approx(0.25)


@pytest.mark.parametrize("discriminator_alpha", [False, True])
def test_discriminator_loss_is_real_as_one_plus_completed_as_zero(discriminator_alpha):
    config = tiny_config(**{"loss.discriminator_alpha": discriminator_alpha, "loss.alpha": 0.25})
    trainer = trainer_lib.build_trainer(config)
    batch = make_batch(config, seed=2)
    completed = tf.constant(np.clip(batch["image"] + 0.2, 0, 1), tf.float32)
    data = {k: tf.constant(v) for k, v in batch.items()}
    per_example = trainer._d_losses(data, completed).numpy()
    real = trainer._d_logits(data["image"], data["real_local_offset"], training=True).numpy()
    fake = trainer._d_logits(completed, data["local_offset"], training=True).numpy()
    expected = (np.log1p(np.exp(-real.astype(np.float64)))
                + np.log1p(np.exp(fake.astype(np.float64)))).reshape(-1)
    if discriminator_alpha:
        expected *= 0.25
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)


def test_phase2_lowers_the_discriminator_loss_on_a_fixed_batch():
    config = tiny_config(**{"model.width": 1 / 8})
    trainer = trainer_lib.build_trainer(
        config, optimizer_fn=lambda lr, c: keras.optimizers.Adam(2e-3))
    trainer.set_phase(2)
    c_before = [w.numpy().copy() for w in trainer.completion.weights]
    ds = inputs.training_features(
        tf.data.Dataset.from_tensors(make_batch(config, seed=4)).repeat())
    history = trainer.fit(ds, epochs=10, steps_per_epoch=1, verbose=0).history
    d_loss = history["d_loss"]
    assert d_loss[-1] < 0.85 * d_loss[0], d_loss  # about 0.78 here
    assert all(b < a for a, b in zip(d_loss, d_loss[2:])), d_loss  # falling throughout
    for a, b in zip(c_before, trainer.completion.weights):  # C is fixed in phase 2
        np.testing.assert_array_equal(a, b.numpy())


def _gan_term(trainer, weights, batch):
    """Mean C-side GAN term on `batch` for the given (C, D) weights, as the step computes it."""
    trainer.completion.set_weights(weights[0])
    trainer.discriminator.set_weights(weights[1])
    data = {k: tf.constant(v) for k, v in batch.items()}
    out = trainer.completion(trainer._inputs(data), training=True)
    completed = masks_lib.composite(out, data["image"], data["mask"])
    logits = trainer._d_logits(completed, data["local_offset"], training=True)
    return float(tf.reduce_mean(losses.generator_gan_per_example(
        logits, trainer.glcic_config.loss.generator_gan)))


def _eager_step(config, init, phase, batch, rate=0.05):
    """One train_step, run eagerly (no tracing: seconds, not tens), with SGD(rate)."""
    trainer = trainer_lib.build_trainer(config,
                                        optimizer_fn=lambda lr, c: keras.optimizers.SGD(rate))
    trainer.completion.set_weights(init[0])
    trainer.discriminator.set_weights(init[1])
    trainer.set_phase(phase)
    trainer.train_step({k: tf.constant(v) for k, v in batch.items()})
    return snapshot(trainer)


def test_phase3_alpha_weighs_the_gan_term_in_the_documented_direction():
    # The paper's saturating term; the non-saturating one differs only in the per-example
    # function, checked by value and gradient above.
    base = tiny_config(**{"loss.alpha": 0.0})
    with float64_policy():
        probe = trainer_lib.build_trainer(base)
        init = snapshot(probe)
        batch = make_batch(base, seed=5, smooth=False)
        mse_only = _eager_step(base, init, 1, batch)
        runs = {alpha: _eager_step(base.override({"loss.alpha": alpha}), init, 3, batch)
                for alpha in (0.0, 0.5, 1.0)}
        # alpha = 0: C's update is phase 1's, the MSE alone, whatever D says. (The networks
        # run in float64; the losses are cast to float32, hence the 1e-8: updates are ~1e-3.)
        for a, b in zip(runs[0.0][0], mse_only[0]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
        # D's step comes first and never sees alpha (discriminator_alpha is off).
        for alpha in (0.5, 1.0):
            for a, b in zip(runs[alpha][1], runs[0.0][1]):
                np.testing.assert_array_equal(a, b)
        # SGD is linear in the gradient: the GAN part of C's update doubles with alpha.
        for w0, w_half, w_one in zip(runs[0.0][0], runs[0.5][0], runs[1.0][0]):
            np.testing.assert_allclose(w_one - w0, 2 * (w_half - w0), rtol=1e-4, atol=1e-8)
        assert max(np.abs(w1 - w0).max() for w0, w1 in zip(runs[0.0][0], runs[1.0][0])) > 1e-6
        # ... and it moves C towards fooling the updated D: a lower GAN term than MSE alone.
        d_after = runs[0.0][1]
        plain = _gan_term(probe, (runs[0.0][0], d_after), batch)
        weighted = _gan_term(probe, (runs[1.0][0], d_after), batch)
    assert weighted < plain, (weighted, plain)
