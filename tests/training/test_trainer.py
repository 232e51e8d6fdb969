"""GLCICTrainer (glcic_tf.training.trainer): the three phases, 1 vs 2 replicas, accumulation, the
local crop; run_training's end-to-end tests are in test_loop.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from glcic_tf import config as cfg
from glcic_tf.training import distribute, inputs
from glcic_tf.training import trainer as trainer_lib

from helpers.training import ATOL, float64_policy, make_batch, one_step, snapshot, tiny_config


@pytest.fixture(scope="module")
def replica_setup():
    config = tiny_config(**{"data.image_size": 64, "data.resize_min": 64, "data.resize_max": 64,
                            "masks.local_size": 32, "masks.hole_min": 12, "masks.hole_max": 24,
                            "schedule.batch_size": 8})
    with float64_policy():
        reference = trainer_lib.build_trainer(config)
    return config, snapshot(reference), make_batch(config, seed=1, smooth=False)


# fit() under MirroredStrategy traces the step in graph mode with a synchronised all-reduce per
# batch norm (TensorFlow walks the graph for each one's gradient): 20-90 s a phase on 2 cores.
@pytest.mark.slow
@pytest.mark.parametrize("phase", [1, 2, 3])
def test_one_device_and_two_replicas_give_the_same_update(replica_setup, phase):
    config, init, batch = replica_setup
    with float64_policy():
        one = one_step(config, tf.distribute.OneDeviceStrategy("/cpu:0"), init, phase, batch)
        two = one_step(config, distribute.mirrored_strategy(["/cpu:0", "/cpu:1"]), init, phase,
                       batch)
    assert one[0][0].dtype == np.float64
    changed = 0
    for a, b, w0 in zip(one[0] + one[1], two[0] + two[1], init[0] + init[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=ATOL)
        changed += not np.array_equal(a, w0)
    assert changed > 0
    # Phase 1 leaves D untouched; phase 2 leaves C untouched (weights and BN statistics).
    if phase == 1:
        for a, w0 in zip(one[1], init[1]):
            np.testing.assert_array_equal(a, w0)
    if phase == 2:
        for a, w0 in zip(one[0], init[0]):
            np.testing.assert_array_equal(a, w0)
    if phase == 3:
        assert any(not np.array_equal(a, w0) for a, w0 in zip(one[0], init[0]))
        assert any(not np.array_equal(a, w0) for a, w0 in zip(one[1], init[1]))


# Every non-default option of the paper-fidelity and CPU-preset fields at once, except
# model.output = "harmonic_residual": its fill is a per-example function without weights or
# gradient (nothing a replica could get wrong), and tracing its pyramid of loops under two
# replicas costs most of a minute.
ALTERNATIVE_OPTIONS = {
    "loss.real_local_patch": "same_as_fake", "loss.generator_gan": "non_saturating",
    "loss.discriminator_alpha": True, "loss.alpha": 0.5, "loss.reconstruction": "l1",
    "model.initializer": "keras", "masks.local_patch": "containing"}


@pytest.mark.slow  # as above: phase 3 traced under two replicas
def test_replica_equivalence_holds_under_the_alternative_options():
    # Phase 3 runs every loss term (reconstruction, both GAN terms, D's real and fake crops).
    phase = 3
    config = tiny_config(**ALTERNATIVE_OPTIONS)
    with float64_policy():
        init = snapshot(trainer_lib.build_trainer(config))
        batch = make_batch(config, seed=1, smooth=False)
        one = one_step(config, tf.distribute.OneDeviceStrategy("/cpu:0"), init, phase, batch)
        two = one_step(config, distribute.mirrored_strategy(["/cpu:0", "/cpu:1"]), init, phase,
                       batch)
    changed = 0
    for a, b, w0 in zip(one[0] + one[1], two[0] + two[1], init[0] + init[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=ATOL)
        changed += not np.array_equal(a, w0)
    assert changed > 0


def test_phase1_mse_falls_when_overfitting_one_batch():
    config = tiny_config(**{"schedule.steps_completion": 40, "model.width": 1 / 8})
    keras.utils.set_random_seed(0)  # Torch7-style initialisation: fix it, so the test is stable
    trainer = trainer_lib.build_trainer(config)
    trainer.set_phase(1)
    batch = make_batch(config, seed=3)
    ds = inputs.training_features(tf.data.Dataset.from_tensors(batch).repeat())
    history = trainer.fit(ds, epochs=16,
                          steps_per_epoch=5, verbose=0)
    mse = history.history["c_mse"]
    # With the paper's ADADELTA (rho 0.9) and Torch7 initialisation the fall is steady but
    # slower than with Keras' glorot init: about 25% in these 80 steps.
    assert mse[-1] < 0.85 * mse[0], mse
    assert all(b < a for a, b in zip(mse[::4], mse[4::4])), mse  # falling throughout


def test_crop_local_matches_slicing():
    rng = np.random.default_rng(0)
    images = rng.random((3, 20, 24, 3), dtype=np.float32)
    offsets = np.array([[0, 0], [4, 7], [12, 16]], np.int32)
    out = trainer_lib.crop_local(images, offsets, 8).numpy()
    for i, (y, x) in enumerate(offsets):
        np.testing.assert_array_equal(out[i], images[i, y:y + 8, x:x + 8])


@pytest.mark.parametrize("step, phase", [(0, 1), (2, 1), (3, 2), (4, 2), (5, 3), (7, 3)])
def test_phase_for_step(step, phase):
    assert trainer_lib.phase_for_step(step, tiny_config()) == phase


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_accumulated_micro_batches_equal_one_big_batch_with_frozen_batch_norm(phase):
    config = tiny_config(**{"model.freeze_batch_norm": True, "schedule.batch_size": 8})
    init = snapshot(trainer_lib.build_trainer(config))
    batch = make_batch(config, seed=5)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    big = one_step(config, strategy, init, phase, batch)
    acc = one_step(config.override({"schedule.accumulate": 4}), strategy, init, phase, batch)
    for a, b, w0 in zip(big[0] + big[1], acc[0] + acc[1], init[0] + init[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert any(not np.array_equal(a, w0) for a, w0 in zip(acc[0] + acc[1], init[0] + init[1]))
    # Frozen batch norm never touches the moving statistics.
    for net, w0s in ((0, init[0]), (1, init[1])):
        trainer = trainer_lib.build_trainer(config)
        network = trainer.completion if net == 0 else trainer.discriminator
        names = [w.path for w in network.weights]
        for name, a, w0 in zip(names, acc[net], w0s):
            if "moving" in name:
                np.testing.assert_array_equal(a, w0)


def test_accumulation_with_live_batch_norm_differs_only_through_statistics():
    config = tiny_config(**{"schedule.batch_size": 8})
    init = snapshot(trainer_lib.build_trainer(config))
    batch = make_batch(config, seed=6)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    big = one_step(config, strategy, init, 1, batch)
    acc = one_step(config.override({"schedule.accumulate": 2}), strategy, init, 1, batch)
    # Batch statistics over 4 instead of 8 examples: close, but not the same update.
    diffs = [np.abs(a - b).max() for a, b in zip(big[0], acc[0])]
    assert max(diffs) > 1e-6


def test_accumulate_must_divide_the_batch():
    with pytest.raises(cfg.ConfigError, match=r"batch_size \(8\) must be a multiple of "
                                              r"schedule.accumulate \(3\)"):
        tiny_config(**{"schedule.batch_size": 8, "schedule.accumulate": 3})
