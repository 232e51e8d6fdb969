"""GLCICTrainer: the three phases, replicas, accumulation, mixed precision, run_training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from glcic_tf import config as cfg
from glcic_tf import training
from training_helpers import (ATOL, dataset_fn, float64_policy, make_batch, one_step, snapshot,
                              tiny_config)


@pytest.fixture(scope="module")
def replica_setup():
    config = tiny_config(**{"data.image_size": 64, "data.resize_min": 64, "data.resize_max": 64,
                            "masks.local_size": 32, "masks.hole_min": 12, "masks.hole_max": 24,
                            "schedule.batch_size": 8})
    with float64_policy():
        reference = training.build_trainer(config)
    return config, snapshot(reference), make_batch(config, seed=1, smooth=False)


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_one_device_and_two_replicas_give_the_same_update(replica_setup, phase):
    config, init, batch = replica_setup
    with float64_policy():
        one = one_step(config, tf.distribute.OneDeviceStrategy("/cpu:0"), init, phase, batch)
        two = one_step(config, training.mirrored_strategy(["/cpu:0", "/cpu:1"]), init, phase,
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


def test_replica_equivalence_holds_under_the_alternative_options():
    # Phase 3 runs every loss term (reconstruction, both GAN terms, D's real and fake crops).
    phase = 3
    config = tiny_config(**ALTERNATIVE_OPTIONS)
    with float64_policy():
        init = snapshot(training.build_trainer(config))
        batch = make_batch(config, seed=1, smooth=False)
        one = one_step(config, tf.distribute.OneDeviceStrategy("/cpu:0"), init, phase, batch)
        two = one_step(config, training.mirrored_strategy(["/cpu:0", "/cpu:1"]), init, phase,
                       batch)
    changed = 0
    for a, b, w0 in zip(one[0] + one[1], two[0] + two[1], init[0] + init[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=ATOL)
        changed += not np.array_equal(a, w0)
    assert changed > 0


def test_phase1_mse_falls_when_overfitting_one_batch():
    config = tiny_config(**{"schedule.steps_completion": 40, "model.width": 1 / 8})
    keras.utils.set_random_seed(0)  # Torch7-style initialisation: fix it, so the test is stable
    trainer = training.build_trainer(config)
    trainer.set_phase(1)
    batch = make_batch(config, seed=3)
    ds = training.training_features(tf.data.Dataset.from_tensors(batch).repeat())
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
    out = training.crop_local(images, offsets, 8).numpy()
    for i, (y, x) in enumerate(offsets):
        np.testing.assert_array_equal(out[i], images[i, y:y + 8, x:x + 8])


def test_masked_mse_counts_only_hole_pixels():
    target = np.zeros((1, 4, 4, 3), np.float32)
    pred = np.ones((1, 4, 4, 3), np.float32)
    mask = np.zeros((1, 4, 4, 1), np.float32)
    mask[0, :2, :2] = 1  # 4 of 16 pixels
    assert training.masked_mse_per_example(pred, target, mask).numpy()[0] == pytest.approx(0.25)


@pytest.mark.parametrize("step, phase", [(0, 1), (2, 1), (3, 2), (4, 2), (5, 3), (7, 3)])
def test_phase_for_step(step, phase):
    assert training.phase_for_step(step, tiny_config()) == phase


def test_run_training_switches_phases_at_exact_steps(tmp_path):
    config = tiny_config(**{"schedule.checkpoint_every": 2})
    result = training.run_training(config, str(tmp_path), train_dataset_fn=dataset_fn(config),
                                   preview_batch=make_batch(config, 2), verbose=0)
    assert result.finished and result.step == 8
    assert [(s["phase"], s["steps"]) for s in result.phase_summaries] == [(1, 3), (2, 2), (3, 3)]
    ckpts = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints"))
    steps = sorted(int(p.rsplit("-", 1)[1]) for p in ckpts.all_model_checkpoint_paths)
    # every 2 steps and at the phase boundaries 3, 5 and 8; keep_checkpoints=3 keeps the last 3
    assert steps == [5, 6, 8]
    assert (tmp_path / "preview.png").exists() and (tmp_path / "config.json").exists()
    assert list((tmp_path / "logs" / "train").iterdir())
    # running again is a no-op that resumes at the end
    again = training.run_training(config, str(tmp_path), train_dataset_fn=dataset_fn(config),
                                  verbose=0)
    assert again.step == 8 and again.phase_summaries == []


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    config = tiny_config(**{"schedule.checkpoint_every": 1})
    good = make_batch(config)
    bad = dict(good, image=np.full_like(good["image"], np.nan))
    calls = {"n": 0}

    def ds(ctx=None):
        calls["n"] += 1
        return tf.data.Dataset.from_tensors(good).repeat(2).concatenate(
            tf.data.Dataset.from_tensors(bad).repeat())

    with pytest.raises(training.TrainingError, match="non-finite c_mse .* step 3 in phase 1"):
        training.run_training(config, str(tmp_path), train_dataset_fn=ds, verbose=0)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")


def test_run_dir_with_a_different_config_is_refused(tmp_path):
    config = tiny_config()
    config.save(str(tmp_path / "config.json"))
    with pytest.raises(training.TrainingError, match="differs in: schedule.batch_size"):
        training.run_training(config.override({"schedule.batch_size": 8}), str(tmp_path),
                              train_dataset_fn=dataset_fn(config), verbose=0)


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_accumulated_micro_batches_equal_one_big_batch_with_frozen_batch_norm(phase):
    config = tiny_config(**{"model.freeze_batch_norm": True, "schedule.batch_size": 8})
    init = snapshot(training.build_trainer(config))
    batch = make_batch(config, seed=5)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    big = one_step(config, strategy, init, phase, batch)
    acc = one_step(config.override({"schedule.accumulate": 4}), strategy, init, phase, batch)
    for a, b, w0 in zip(big[0] + big[1], acc[0] + acc[1], init[0] + init[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert any(not np.array_equal(a, w0) for a, w0 in zip(acc[0] + acc[1], init[0] + init[1]))
    # Frozen batch norm never touches the moving statistics.
    for net, w0s in ((0, init[0]), (1, init[1])):
        trainer = training.build_trainer(config)
        network = trainer.completion if net == 0 else trainer.discriminator
        names = [w.path for w in network.weights]
        for name, a, w0 in zip(names, acc[net], w0s):
            if "moving" in name:
                np.testing.assert_array_equal(a, w0)


def test_accumulation_with_live_batch_norm_differs_only_through_statistics():
    config = tiny_config(**{"schedule.batch_size": 8})
    init = snapshot(training.build_trainer(config))
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


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_all_phases_with_float32_weights(tmp_path, precision):
    import keras

    config = tiny_config(**{"precision": precision, "schedule.steps_completion": 1,
                            "schedule.steps_discriminator": 1, "schedule.steps_joint": 1})
    result = training.run_training(config, str(tmp_path), train_dataset_fn=dataset_fn(config),
                                   verbose=0)
    assert result.finished and result.step == 3
    trainer = training._LAST_TRAINER
    assert trainer.completion.get_layer("conv1").compute_dtype == precision.split("_")[1]
    assert all(w.dtype == "float32" for w in trainer.completion.weights)
    if precision == "mixed_float16":
        assert isinstance(trainer.c_optimizer, keras.optimizers.LossScaleOptimizer)
    for summary in result.phase_summaries:
        assert all(np.isfinite(v) for k, v in summary.items() if k != "phase")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
