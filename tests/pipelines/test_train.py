"""pipelines/train.py as users meet it: flag and config errors, mean-pixel precedence, the Torch7
fine-tune recipe with its export, the default run without --data, warm starts from a run and from
its export, resume precedence over --init-from and its errors, --jit-compile, --validate, and
SIGINT (once, then twice).

In-process (`main(parse_args(argv))`, tiny networks: 32 px, width 1/16, batch 4, one or two
steps a phase) except the signal tests, where the process's own behaviour is the point.
"""

import functools
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf


from glcic_tf.data import masks
from glcic_tf.networks import models
from glcic_tf.training import inputs, loop, runs
from glcic_tf.training import job
from glcic_tf.training import trainer as trainer_lib
from glcic_tf.torch7.importer import import_torch7
from glcic_tf.torch7.synthetic import synthetic_completionnet
from glcic_tf.torch7.writer import save_t7
from glcic_tf.config import DEFAULT_MEAN_PIXEL, GLCICConfig

from helpers.datasets import example_bytes, write_dataset
from helpers.inference import keras_network_from_export
from helpers.scripts import REPO, load_pipeline, wait_until

TRAIN = os.path.join(REPO, "pipelines", "train.py")
TINY = ["--image-size", "32", "--local-size", "16", "--hole-min", "6", "--hole-max", "12",
        "--width", "0.0625", "--batch-size", "4", "--log-every", "1", "--image-every", "1"]
ONE_STEP = ["--steps-completion", "1", "--steps-discriminator", "0", "--steps-joint", "0"]


@pytest.fixture(scope="module")
def cli():
    return load_pipeline("train")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A dataset of random 40x48 photos (train mean about 0.5, far from the default)."""
    prefix = str(tmp_path_factory.mktemp("data") / "shards" / "rnd")
    info = write_dataset(prefix, train=8, val=2, shards=(2, 1), size=(40, 48), seed=3)
    return {"prefix": prefix, "mean": tuple(info["mean_pixel"])}


def _run(cli, argv, capsys):
    capsys.readouterr()
    status = cli.main(cli.parse_args(argv))
    out, err = capsys.readouterr()
    return status, out, err


# --- refused before anything runs ----------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--config", "c.json", "--preset", "tiny"], "give --config or --preset, not both"),
    (["--start-phase", "2"], "--start-phase needs --init-from"),
    (["--accumulate", "0"], "--accumulate must be a positive integer or auto, got '0'"),
    (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
])
def test_conflicting_or_bad_flags_exit_2_with_the_reason(cli, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "30"], "data.image_size must be a positive multiple of 4, got 30"),
    (["--hole-max", "20"], "masks.hole_max (20) is larger than the local patch"),
    (["--mask-kind", "blob"], "masks.kind must be one of ('rect', 'freeform', 'mixed'), "
                              "got 'blob'"),
    (["--config", "{missing}"], "config file not found: {missing}"),
    (["--config", "{unknown_key}"], "unknown config key(s) schedule.batch"),
    (["--config", "{not_json}"], "config is not valid JSON"),
])
def test_config_errors_exit_2_in_one_line_before_anything_is_written(
        cli, dataset, tmp_path, capsys, argv, message):
    files = {"missing": str(tmp_path / "missing.json"),
             "unknown_key": str(tmp_path / "unknown_key.json"),
             "not_json": str(tmp_path / "not_json.json")}
    (tmp_path / "unknown_key.json").write_text(json.dumps({"schedule": {"batch": 3}}))
    (tmp_path / "not_json.json").write_text("{batch: 3")
    argv = [a.format(**files) for a in argv]
    out_dir = tmp_path / "run"
    status, _, err = _run(cli, ["--data", dataset["prefix"], "--out", str(out_dir), *TINY,
                                *argv], capsys)
    assert status == 2
    assert err.startswith("train.py: invalid configuration: ") and len(err.splitlines()) == 1
    assert message.format(**files) in err
    assert not out_dir.exists()


# --- mean pixel precedence -----------------------------------------------------------------------


def test_an_explicit_mean_pixel_wins_over_the_dataset_even_when_it_is_the_default(
        cli, dataset, tmp_path, capsys, monkeypatch):
    seen = []

    def fake_train(options):
        seen.append(options)
        return loop.TrainingResult(options.run_dir, 1, True, None, None, [])

    config_file = tmp_path / "config.json"
    cli.resolve_config(cli.parse_args(["--preset", "tiny"])).save(str(config_file))
    monkeypatch.setattr(job, "train", fake_train)
    base = ["--data", dataset["prefix"], "--out", str(tmp_path / "run"), "--no-memory-check"]
    for extra, explicit in (([], False), (["--preset", "tiny"], False),
                            (["--mean-pixel", *map(str, DEFAULT_MEAN_PIXEL)], True),
                            (["--config", str(config_file)], True)):
        assert _run(cli, base + extra, capsys)[0] == 0
        assert seen[-1].mean_pixel_explicit is explicit, extra

    data = job.resolve_data(job.TrainOptions(seen[-1].config, "unused",
                                             data=dataset["prefix"]))
    config = seen[-1].config
    assert config.data.mean_pixel == DEFAULT_MEAN_PIXEL
    lines = []
    taken = job.dataset_mean_pixel(config, data, lines.append)
    assert taken.data.mean_pixel == pytest.approx(dataset["mean"])
    assert "rnd-dataset_info.json" in lines[-1]
    kept = job.dataset_mean_pixel(config, data, lines.append, explicit=True)
    assert kept.data.mean_pixel == DEFAULT_MEAN_PIXEL
    other = config.with_mean_pixel((0.1, 0.2, 0.3))  # not the default: explicit by value
    assert job.dataset_mean_pixel(other, data).data.mean_pixel == (0.1, 0.2, 0.3)


def test_torch7_fine_tune_recipe_keeps_the_imported_mean_and_exports_at_the_end(
        cli, dataset, tmp_path, capsys, monkeypatch):
    # README's recipe on a width-1/16 stand-in for a released file. This one stores no mean,
    # so the user passes the official one to the importer: it equals DEFAULT_MEAN_PIXEL, and
    # the fine-tune must keep it rather than take the dataset's (about 0.5).
    from glcic_tf.inference import export

    # The in-graph post-processing triples the export's time and is tested in test_export.py;
    # what matters here is that the run's latest weights and config are exported.
    monkeypatch.setattr(export, "export_from_run",
                        functools.partial(export.export_from_run, postprocess="none"))
    path = str(tmp_path / "completionnet.t7")
    save_t7(path, synthetic_completionnet(0.0625, seed=5)["model"])
    imported = import_torch7(path, str(tmp_path / "official"), mean_pixel=DEFAULT_MEAN_PIXEL)
    out = tmp_path / "ft"
    status, stdout, err = _run(cli, [
        "--config", os.path.join(imported, "config.json"), "--init-from", imported,
        "--data", dataset["prefix"], "--start-phase", "2", *TINY, "--steps-completion", "1",
        "--steps-discriminator", "1", "--steps-joint", "0", "--out", str(out)], capsys)
    assert status == 0, stdout[-3000:] + err[-3000:]
    assert f"warm start from {runs.latest_checkpoint(imported)} (completion;" in stdout
    assert "starting in phase 2 at step 1" in stdout and "phase 1/3" not in stdout
    assert "mean pixel value from" not in stdout
    config = GLCICConfig.load(str(out / "config.json"))
    assert config.data.mean_pixel == DEFAULT_MEAN_PIXEL
    assert (config.data.input_convention, config.model.padding) == ("torch7", "torch")

    # The export at the end of training: the run's latest weights, its config, servable.
    version = out / "export" / "glcic" / "1"
    assert f"exported SavedModel {version}" in stdout
    exported = GLCICConfig.load(str(version / "assets" / "config.json"))
    assert exported == config
    _, completion, step = runs.load_completion_network(str(out))
    assert step == 2
    batch = inputs.synthetic_batch(config, 2, seed=4)
    expected = masks.composite(
        completion(masks.network_inputs(batch["image"], batch["mask"], config.data),
                   training=False), batch["image"], batch["mask"])
    got = tf.saved_model.load(str(version)).signatures["complete"](
        image=tf.constant(batch["image"]), mask=tf.constant(batch["mask"]))["completed"]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


# --- the default run: no --data ------------------------------------------------------------------


def test_without_data_the_demo_fine_tunes_the_shipped_model_on_the_sample_photos(
        cli, tmp_path, capsys):
    from glcic_tf.data import sample_data
    from glcic_tf.inference import shipped

    out = tmp_path / "demo"
    status, stdout, err = _run(cli, [
        "--out", str(out), "--image-size", "64", "--local-size", "32", "--hole-min", "16",
        "--hole-max", "28", "--batch-size", "2", *ONE_STEP, "--no-export"], capsys)
    assert status == 0, stdout[-3000:] + err[-3000:]
    assert "this is the DEMO" in stdout
    shipped_dir = shipped.version_dir()
    assert f"warm start from {shipped_dir} (completion;" in stdout
    sample = sample_data.sample_prefix(sample_data.ensure_sample_dataset())
    assert f"mean pixel value from {sample}-dataset_info.json" in stdout
    config = GLCICConfig.load(str(out / "config.json"))
    assert config.name == "demo" and config.model.output == "harmonic_residual"
    with open(f"{sample}-dataset_info.json") as f:
        assert config.data.mean_pixel == pytest.approx(tuple(json.load(f)["mean_pixel"]))
    # One Adam step at the demo's learning rate (1e-4) away from the shipped weights.
    _, completion, step = runs.load_completion_network(str(out))
    assert step == 1
    _, reference = keras_network_from_export(shipped_dir)
    for name in ("conv1", "output_conv"):
        np.testing.assert_allclose(completion.get_layer(name).kernel.numpy(),
                                   reference.get_layer(name).kernel.numpy(), atol=3e-4)
    assert (out / "preview.png").is_file()


# --- --init-from ---------------------------------------------------------------------------------


def _seeded_network(config, seed):
    import keras

    keras.utils.set_random_seed(seed)
    return models.completion_network(config.model.width, config.model)


def test_a_checkpoint_in_out_beats_init_from(cli, dataset, tmp_path, capsys):
    # Zero learning rates: whatever network training starts from comes out unchanged.
    flags = ["--data", dataset["prefix"], *TINY, "--mean-pixel", "0.5", "0.5", "0.5",
             "--steps-completion", "2", "--steps-discriminator", "0", "--steps-joint", "0",
             "--lr-completion", "1e-30", "--no-export"]
    config = cli.resolve_config(cli.parse_args(flags))
    # --out holds a run stopped at step 1 (as after a SIGKILL); --init-from another network.
    resumed = str(tmp_path / "resumed")
    trainer = trainer_lib.build_trainer(config)
    trainer.completion.set_weights(_seeded_network(config, 11).get_weights())
    os.makedirs(resumed)
    config.save(runs.config_path(resumed))
    step = tf.Variable(1, dtype=tf.int64)
    saved = tf.train.CheckpointManager(trainer_lib.make_checkpoint(trainer, step),
                                       runs.checkpoint_dir(resumed), max_to_keep=5).save(1)
    mine = trainer.completion.get_layer("conv1").kernel.numpy()
    source = str(tmp_path / "source")
    theirs = _seeded_network(config, 12)
    runs.save_completion_run(source, config, theirs)

    status, stdout, err = _run(cli, flags + ["--out", resumed, "--init-from", source], capsys)
    assert status == 0, stdout[-3000:] + err[-3000:]
    assert f"resuming from {saved} at step 1 (phase 1)" in stdout
    assert "warm start" not in stdout
    _, completion, step = runs.load_completion_network(resumed)
    assert step == 2
    kernel = completion.get_layer("conv1").kernel.numpy()
    np.testing.assert_allclose(kernel, mine, atol=1e-6)
    assert np.abs(kernel - theirs.get_layer("conv1").kernel.numpy()).max() > 0.01


@pytest.mark.slow  # three tiny runs and an export: ~40 s
def test_init_from_run_dir_and_saved_model_continue_from_those_weights(
        cli, dataset, tmp_path, capsys):
    from glcic_tf.inference import export

    base = ["--data", dataset["prefix"], *TINY, "--log-every", "5", "--image-every", "10",
            "--no-export", "--checkpoint-every", "5"]
    first = str(tmp_path / "first")
    status, stdout, err = _run(cli, base + ["--out", first, "--steps-completion", "3",
                                            "--steps-discriminator", "2", "--steps-joint", "0"],
                               capsys)
    assert status == 0, err[-3000:]
    _, c_first, _ = runs.load_completion_network(first)
    # The in-graph post-processing is export's own business (test_export.py); the warm start
    # reads the SavedModel's variables.
    saved = export.export_from_run(first, str(tmp_path / "export" / "glcic"), postprocess="none")
    for source in (first, saved):
        second = str(tmp_path / ("second-" + os.path.basename(source)))
        # Zero learning rates: the warm-started weights must come through unchanged.
        status, stdout, err = _run(cli, base + [
            "--out", second, "--init-from", source, "--start-phase", "3", "--steps-completion",
            "3", "--steps-discriminator", "2", "--steps-joint", "2", "--lr-completion", "1e-30"],
            capsys)
        assert status == 0, stdout[-2000:] + err[-3000:]
        assert "warm start from" in stdout and "starting in phase 3 at step 5" in stdout
        assert "phase 1/3" not in stdout
        _, c_second, step = runs.load_completion_network(second)
        assert step == 7
        kernel = c_second.get_layer("conv1").kernel.numpy()
        np.testing.assert_allclose(kernel, c_first.get_layer("conv1").kernel.numpy(), atol=1e-6)
    status, _, err = _run(cli, base + ["--out", str(tmp_path / "bad"), "--init-from", first,
                                       "--width", "0.125"], capsys)
    assert status == 1
    assert "is incompatible (model.width: 0.0625 there, 0.125 here" in err


def test_init_from_errors_are_one_line_and_leave_out_untouched(cli, dataset, tmp_path, capsys):
    base = ["--data", dataset["prefix"], *TINY, *ONE_STEP]
    config = cli.resolve_config(cli.parse_args(base))
    no_checkpoint = tmp_path / "no_checkpoint"
    (no_checkpoint / "checkpoints").mkdir(parents=True)
    config.save(str(no_checkpoint / "config.json"))
    wider = config.override({"model.width": 0.125})
    incompatible = runs.save_completion_run(str(tmp_path / "wider"), wider,
                                            _seeded_network(wider, 1))
    incompatible = os.path.dirname(os.path.dirname(incompatible))
    cases = [
        (str(tmp_path / "nowhere"), f"--init-from {tmp_path / 'nowhere'}: neither a training "
                                    "run directory (config.json + checkpoints/) nor a "
                                    "SavedModel / TF Serving base path"),
        (str(no_checkpoint), f"--init-from {no_checkpoint}: no checkpoint"),
        (incompatible, f"--init-from {incompatible} is incompatible (model.width: 0.125 there, "
                       "0.0625 here); train with its config (--config RUN_DIR/config.json"),
    ]
    for source, message in cases:
        out = tmp_path / "out"
        status, _, err = _run(cli, base + ["--out", str(out), "--init-from", source], capsys)
        assert status == 1, err
        assert err.startswith("train.py: ") and len(err.splitlines()) == 1, err
        assert message in err
        # Nothing written: the corrected command is not refused as "a different config".
        assert not out.exists()


# --- --jit-compile -------------------------------------------------------------------------------


def test_jit_compile_trains_with_an_xla_compiled_step(cli, dataset, tmp_path, capsys):
    out = tmp_path / "xla"
    status, stdout, err = _run(cli, ["--data", dataset["prefix"], "--out", str(out), *TINY,
                                     *ONE_STEP, "--jit-compile", "--no-export"], capsys)
    assert status == 0, stdout[-3000:] + err[-3000:]
    assert GLCICConfig.load(str(out / "config.json")).jit_compile is True
    trainer = loop._LAST_TRAINER
    assert trainer.jit_compile is True  # Keras did not fall back to a plain tf.function
    assert runs.load_completion_network(str(out))[2] == 1
    assert cli.resolve_config(cli.parse_args(["--jit-compile", "--no-jit-compile"])).jit_compile \
        is False


# --- --validate ----------------------------------------------------------------------------------


def test_validate_refuses_to_train_on_anomalous_data(cli, tmp_path, capsys):
    prefix = str(tmp_path / "shards" / "odd")
    write_dataset(prefix, train=6, val=0, shards=(1, 1), size=(40, 48), seed=5)
    shard = f"{prefix}-train-00000-of-00001.tfrecord"
    records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(shard)]
    records.append(tf.train.Example.FromString(example_bytes(
        "odd/train/6", np.zeros((40, 48, 3), np.uint8))))
    records[-1].features.feature["image/channels"].int64_list.value[:] = [1]  # a broken record
    with tf.io.TFRecordWriter(shard) as w:
        for r in records:
            w.write(r.SerializeToString())
    out = tmp_path / "run"
    status, stdout, err = _run(cli, ["--data", prefix, "--out", str(out), *TINY, *ONE_STEP,
                                     "--validate", "--no-export"], capsys)
    assert status == 1, stdout[-2000:]
    # (TFDV itself prints a line about IPython when imported.)
    assert "\ntrain.py: data validation found anomalies; refusing to train:\n" in "\n" + err
    assert "image/channels: Out-of-range values" in err
    assert f"(report: {out / 'data_validation' / 'stats.html'})" in err
    assert "Traceback" not in err
    assert not (out / "config.json").exists() and not (out / "checkpoints").exists()


# --- signals: the process's own behaviour --------------------------------------------------------


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return env


def _start(dataset, run, log):
    cmd = [sys.executable, TRAIN, "--data", dataset["prefix"], "--out", run, *TINY,
           "--log-every", "5", "--steps-completion", "100000", "--steps-discriminator", "1",
           "--steps-joint", "1", "--checkpoint-every", "100000", "--no-export"]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT)


def _wait_for(proc, log, marker, seconds=240):
    wait_until(proc, log, lambda: marker in log.read_text(), repr(marker), seconds, poll=0.02)


def _exit_status(proc, log, seconds=120):
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no exit {seconds} s after the signal:\n{log.read_text()[-3000:]}")


def _checkpoints(run):
    return sorted(os.listdir(runs.checkpoint_dir(run))) if os.path.isdir(
        runs.checkpoint_dir(run)) else []


PHASE_1 = "glcic_tf: phase 1/3"
RECEIVED = "glcic_tf: received signal 2; saving a checkpoint after this step"


def test_sigint_saves_after_the_step_and_exits_130(dataset, tmp_path):
    run, log = str(tmp_path / "run"), tmp_path / "train.log"
    proc = _start(dataset, run, log)
    _wait_for(proc, log, PHASE_1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C while the first step is being built
    status = _exit_status(proc, log)
    output = log.read_text()
    assert status == 128 + signal.SIGINT, output[-3000:]
    assert RECEIVED in output
    assert f"saved {run}/checkpoints/ckpt-1 at step 1; re-run the same command to resume" \
        in output
    assert "Traceback" not in output
    assert runs.load_completion_network(run)[2] == 1


def test_a_second_sigint_aborts_at_once_without_saving(dataset, tmp_path):
    run, log = str(tmp_path / "run"), tmp_path / "train.log"
    proc = _start(dataset, run, log)
    _wait_for(proc, log, PHASE_1)
    proc.send_signal(signal.SIGINT)
    # The first signal is handled at once; its save waits for the first step, which takes
    # seconds to build: the second arrives long before.
    _wait_for(proc, log, RECEIVED)
    proc.send_signal(signal.SIGINT)
    status = _exit_status(proc, log, seconds=60)
    output = log.read_text()
    assert status == 128 + signal.SIGINT, output[-3000:]
    assert (f"train.py: interrupted; stopped without saving (checkpoints already in "
            f"{run}/checkpoints are intact: re-run the same command to resume)") in output
    assert "Traceback" not in output and "glcic_tf: saved " not in output
    assert not any(name.startswith("ckpt-") for name in _checkpoints(run)), _checkpoints(run)
