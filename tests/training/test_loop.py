"""run_training (glcic_tf.training.loop): phases switched at exact steps, checkpoints, a refused run
directory, a non-finite loss, mixed precision end to end; resuming in the middle of phase 2 and
of phase 3 (both optimizers' slots, the right phase, the same end as an uninterrupted run); and
the TensorBoard record a run leaves (glcic_tf.training.callbacks).

One uninterrupted reference run (3 / 4 / 4 steps, a checkpoint every step, a constant batch so
every step sees the same data) is shared; each resume starts from one of its checkpoints in a
fresh run directory, as after a SIGKILL that lost the later ones.
"""

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.training import loop, runs
from glcic_tf.training import trainer as trainer_lib

from helpers.training import dataset_fn, make_batch, tiny_config

SCHEDULE = {"schedule.steps_completion": 3, "schedule.steps_discriminator": 4,
            "schedule.steps_joint": 4, "schedule.checkpoint_every": 1,
            "schedule.keep_checkpoints": 20, "schedule.log_every": 1,
            "schedule.image_every": 2}


def _state(trainer):
    """Every variable a resume must restore: weights, BN statistics, both optimizers' slots."""
    return {"completion": [v.numpy() for v in trainer.completion.weights],
            "discriminator": [v.numpy() for v in trainer.discriminator.weights],
            "optimizer_c": [v.numpy() for v in trainer.c_optimizer.variables],
            "optimizer_d": [v.numpy() for v in trainer.d_optimizer.variables]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    config = tiny_config(**SCHEDULE)
    run = str(tmp_path_factory.mktemp("reference") / "run")
    result = loop.run_training(config, run, train_dataset_fn=dataset_fn(config),
                               preview_batch=make_batch(config, seed=1), verbose=0)
    assert result.finished and result.step == 11
    return {"config": config, "run": run, "final": _state(loop._LAST_TRAINER)}


def _slots(reader, optimizer: str, trainer_optimizer) -> dict:
    """The optimizer's slot values stored in a checkpoint, by variable path (Adadelta:
    accumulated_grad and accumulated_delta_var per trainable variable)."""
    out = {}
    for i, var in enumerate(trainer_optimizer.variables):
        if "accumulated" in var.path:
            out[var.path] = reader.get_tensor(
                f"{optimizer}/_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
    return out


def _rewound_copy(reference, step: int, run_dir: str) -> str:
    """A run directory holding the reference's config and its checkpoints up to `step`."""
    source = runs.checkpoint_dir(reference["run"])
    target = runs.checkpoint_dir(run_dir)
    os.makedirs(target)
    shutil.copy(runs.config_path(reference["run"]), runs.config_path(run_dir))
    kept = []
    for n in range(1, step + 1):
        for path in glob.glob(os.path.join(source, f"ckpt-{n}.*")):
            shutil.copy(path, target)
        kept.append(os.path.join(target, f"ckpt-{n}"))
    tf.compat.v1.train.update_checkpoint_state(target, kept[-1], all_model_checkpoint_paths=kept)
    return kept[-1]


@pytest.mark.parametrize("step, phase", [(5, 2), (9, 3)])
def test_resume_mid_phase_restores_both_optimizers_and_ends_like_an_uninterrupted_run(
        reference, tmp_path, capsys, step, phase):
    config = reference["config"]
    checkpoint = _rewound_copy(reference, step, str(tmp_path / "run"))
    assert trainer_lib.phase_for_step(step, config) == phase
    reader = tf.train.load_checkpoint(checkpoint)
    probe = trainer_lib.build_trainer(config)
    d_slots = _slots(reader, "optimizer_d", probe.d_optimizer)
    c_slots = _slots(reader, "optimizer_c", probe.c_optimizer)
    assert len(d_slots) == 2 * len(probe.discriminator.trainable_variables)
    # D has trained (phase 2 from step 3): its ADADELTA accumulators are stored, and not zero.
    assert all(np.any(v != 0) for v in d_slots.values())
    before = tf.train.load_checkpoint(os.path.join(os.path.dirname(checkpoint),
                                                   f"ckpt-{step - 1}"))
    moved = [k for k, v in _slots(before, "optimizer_d", probe.d_optimizer).items()
             if not np.array_equal(v, d_slots[k])]
    assert len(moved) == len(d_slots)  # every D slot changed in the last step
    c_moved = [k for k, v in _slots(before, "optimizer_c", probe.c_optimizer).items()
               if not np.array_equal(v, c_slots[k])]
    # C is frozen in phase 2 and trains in phase 3.
    assert (len(c_moved) == len(c_slots)) if phase == 3 else c_moved == []

    # Restoring gives exactly the stored slots.
    step_var = tf.Variable(0, dtype=tf.int64)
    status = trainer_lib.make_checkpoint(probe, step_var).restore(checkpoint)
    status.assert_existing_objects_matched()
    assert int(step_var.numpy()) == step
    for optimizer, slots in (("d_optimizer", d_slots), ("c_optimizer", c_slots)):
        restored = {v.path: v.numpy() for v in getattr(probe, optimizer).variables}
        for path, value in slots.items():
            np.testing.assert_array_equal(restored[path], value, err_msg=path)

    capsys.readouterr()
    result = loop.run_training(config, str(tmp_path / "run"),
                               train_dataset_fn=dataset_fn(config), verbose=0)
    out = capsys.readouterr().out
    assert f"resuming from {checkpoint} at step {step} (phase {phase})" in out
    assert result.finished and result.step == 11
    phases = [(s["phase"], s["steps"]) for s in result.phase_summaries]
    assert phases == ([(2, 2), (3, 4)] if phase == 2 else [(3, 2)])
    # The same end as the run that was never interrupted: fresh slots (or a restarted phase)
    # would show here. Tolerance: float32 reductions may be ordered differently across runs.
    final = _state(loop._LAST_TRAINER)
    for part, values in reference["final"].items():
        for got, want in zip(final[part], values):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=part)


def _events(run_dir):
    """{tag: {step: value}} for scalars, {tag: {step: png bytes}} for images."""
    scalars, images = {}, {}
    for path in glob.glob(os.path.join(runs.log_dir(run_dir), "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                tensor = tf.make_ndarray(value.tensor)
                if plugin == "scalars":
                    scalars.setdefault(value.tag, {})[int(event.step)] = float(tensor)
                elif plugin == "images":
                    images.setdefault(value.tag, {})[int(event.step)] = tensor
    return scalars, images


def test_tensorboard_holds_per_phase_losses_speed_phase_and_previews(reference):
    scalars, images = _events(reference["run"])
    config = reference["config"]
    per_phase = {1: ["c_mse"], 2: ["d_loss", "d_acc_real", "d_acc_fake"],
                 3: ["c_mse", "c_gan", "d_loss", "d_acc_real", "d_acc_fake"]}
    steps = {p: [s for s in range(1, 12) if trainer_lib.phase_for_step(s - 1, config) == p]
             for p in (1, 2, 3)}
    assert steps == {1: [1, 2, 3], 2: [4, 5, 6, 7], 3: [8, 9, 10, 11]}
    for p, names in per_phase.items():
        for name in names:
            assert sorted(scalars[f"phase{p}/{name}"]) == steps[p], name
    # The unprefixed tags follow the run across phases; they equal the phase's own.
    assert sorted(scalars["c_mse"]) == steps[1] + steps[3]
    assert sorted(scalars["d_loss"]) == steps[2] + steps[3]
    for s in steps[3]:
        assert scalars["c_mse"][s] == scalars["phase3/c_mse"][s]
    assert set(scalars) == {f"phase{p}/{n}" for p, ns in per_phase.items() for n in ns} | {
        "c_mse", "c_gan", "d_loss", "d_acc_real", "d_acc_fake", "images_per_second", "phase"}
    assert scalars["phase"] == {s: float(p) for p in steps for s in steps[p]}
    assert sorted(scalars["images_per_second"]) == list(range(1, 12))
    assert all(v > 0 for v in scalars["images_per_second"].values())
    for name in ("d_acc_real", "d_acc_fake"):
        assert all(0.0 <= v <= 1.0 for v in scalars[name].values())
    assert all(np.isfinite(v) and v > 0 for v in scalars["c_mse"].values())

    (tag,) = images
    assert tag == "preview/masked|output|completed|truth"
    assert sorted(images[tag]) == [2, 4, 6, 8, 10]
    for summary in images[tag].values():
        width, height, png = summary  # tf.summary.image: [width, height, encoded...]
        grid = tf.io.decode_png(png).numpy()
        s = config.data.image_size
        assert grid.shape == (4 * s, 4 * s, 3) and (int(width), int(height)) == (4 * s, 4 * s)
        assert grid.std() > 5  # a picture, not a blank
    # The same grid, written at the end, is the run's preview.png.
    preview = tf.io.decode_png(tf.io.read_file(os.path.join(reference["run"], "preview.png")))
    assert preview.shape == (4 * s, 4 * s, 3)


def test_run_training_switches_phases_at_exact_steps(tmp_path):
    config = tiny_config(**{"schedule.checkpoint_every": 2})
    result = loop.run_training(config, str(tmp_path), train_dataset_fn=dataset_fn(config),
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
    again = loop.run_training(config, str(tmp_path), train_dataset_fn=dataset_fn(config),
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

    with pytest.raises(trainer_lib.TrainingError, match="non-finite c_mse .* step 3 in phase 1"):
        loop.run_training(config, str(tmp_path), train_dataset_fn=ds, verbose=0)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")


def test_run_dir_with_a_different_config_is_refused(tmp_path):
    config = tiny_config()
    config.save(str(tmp_path / "config.json"))
    with pytest.raises(trainer_lib.TrainingError, match="differs in: schedule.batch_size"):
        loop.run_training(config.override({"schedule.batch_size": 8}), str(tmp_path),
                          train_dataset_fn=dataset_fn(config), verbose=0)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_all_phases_with_float32_weights(tmp_path, precision):
    import keras

    config = tiny_config(**{"precision": precision, "schedule.steps_completion": 1,
                            "schedule.steps_discriminator": 1, "schedule.steps_joint": 1})
    result = loop.run_training(config, str(tmp_path), train_dataset_fn=dataset_fn(config),
                               verbose=0)
    assert result.finished and result.step == 3
    trainer = loop._LAST_TRAINER
    assert trainer.completion.get_layer("conv1").compute_dtype == precision.split("_")[1]
    assert all(w.dtype == "float32" for w in trainer.completion.weights)
    if precision == "mixed_float16":
        assert isinstance(trainer.c_optimizer, keras.optimizers.LossScaleOptimizer)
    for summary in result.phase_summaries:
        assert all(np.isfinite(v) for k, v in summary.items() if k != "phase")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
