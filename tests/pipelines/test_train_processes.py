"""pipelines/train.py end to end: files written, SIGKILL resume, SIGTERM, multi-worker."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import schema
from glcic_tf.training import trainer as trainer_lib
from glcic_tf.config import GLCICConfig

from helpers.scripts import REPO, wait_until

TRAIN = os.path.join(REPO, "pipelines", "train.py")
TINY_FLAGS = ["--image-size", "32", "--local-size", "16", "--hole-min", "6", "--hole-max", "12",
              "--width", "0.0625", "--batch-size", "4", "--log-every", "5",
              "--image-every", "10", "--no-export"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two tiny TFRecord shards in the glcic_tf schema plus dataset_info.json."""
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    for s in range(2):
        with tf.io.TFRecordWriter(str(d / f"tiny-train-{s:05d}-of-00002.tfrecord")) as w:
            for i in range(6):
                h, wd = rng.integers(40, 64, size=2)
                img = (rng.random((h, wd, 3)) * 255).astype(np.uint8)
                feats = {
                    schema.FEATURE_ENCODED: [tf.io.encode_png(img).numpy()],
                    schema.FEATURE_FORMAT: [b"png"],
                    schema.FEATURE_KEY: [b"k%d-%d" % (s, i)],
                }
                ex = tf.train.Example(features=tf.train.Features(feature={
                    **{k: tf.train.Feature(bytes_list=tf.train.BytesList(value=v))
                       for k, v in feats.items()},
                    schema.FEATURE_HEIGHT: tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[int(h)])),
                    schema.FEATURE_WIDTH: tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[int(wd)])),
                    schema.FEATURE_CHANNELS: tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[3])),
                }))
                w.write(ex.SerializeToString())
    (d / "dataset_info.json").write_text(json.dumps({"mean_pixel": [0.25, 0.5, 0.75]}))
    return str(d / "tiny-train-*.tfrecord")


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return env


def _steps(run_dir):
    state = tf.train.get_checkpoint_state(os.path.join(run_dir, "checkpoints"))
    if state is None:
        return []
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)


def _logged_step(run_dir) -> int:
    """The highest step in the run's TensorBoard train events so far (-1: none yet)."""
    best = -1
    for path in glob.glob(os.path.join(run_dir, "logs", "train", "events.out.tfevents.*")):
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                best = max(best, int(event.step))
        except tf.errors.DataLossError:  # a record being written
            pass
    return best


@pytest.mark.slow  # two processes, the second trains the rest of the run: ~40 s
def test_sigkill_mid_phase_resumes_in_the_right_phase_and_finishes(shards, tmp_path):
    run = str(tmp_path / "run")
    # Phase 1 is long enough (60 steps, a checkpoint every 5) that the kill, issued within a
    # poll (50 ms) of the first checkpoint past step 10, lands far from the phase boundary on
    # any machine; the resumed run trains the rest of it.
    cmd = [sys.executable, TRAIN, "--data", shards, "--out", run, *TINY_FLAGS,
           "--steps-completion", "60", "--steps-discriminator", "10", "--steps-joint", "10",
           "--checkpoint-every", "5"]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    wait_until(proc, log, lambda: any(10 <= s < 60 for s in _steps(run)),
               "a checkpoint past step 10")
    proc.kill()  # SIGKILL: no chance to save
    proc.wait(30)
    killed_at = _steps(run)[-1]
    assert 10 <= killed_at < 60, _steps(run)  # mid phase 1

    # The restored weights equal the checkpoint's, in phase 1 at the checkpoint's step.
    config = GLCICConfig.load(os.path.join(run, "config.json"))
    assert config.data.mean_pixel == (0.25, 0.5, 0.75)  # from dataset_info.json
    latest = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    trainer = trainer_lib.build_trainer(config)
    step = tf.Variable(0, dtype=tf.int64)
    trainer_lib.make_checkpoint(trainer, step).restore(latest).assert_existing_objects_matched()
    reader = tf.train.load_checkpoint(latest)
    # tf.train.Checkpoint stores each variable under its shortest path: trainable ones under
    # the optimizer that tracks them, in trainable_variables order.
    for net, opt in ((trainer.completion, "optimizer_c"), (trainer.discriminator, "optimizer_d")):
        for i, var in enumerate(net.trainable_variables):
            stored = reader.get_tensor(f"{opt}/_trainable_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
            np.testing.assert_array_equal(var.numpy(), stored)
    fresh = trainer_lib.build_trainer(config)
    assert not np.array_equal(fresh.completion.get_layer("conv1").kernel.numpy(),
                              trainer.completion.get_layer("conv1").kernel.numpy())
    assert int(step.numpy()) == killed_at
    assert trainer_lib.phase_for_step(killed_at, config) == 1

    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"resuming from {latest} at step {killed_at} (phase 1)" in out.stdout
    assert _steps(run)[-1] == 80
    assert "phase 2 summary: steps=10" in out.stdout and "phase 3 summary: steps=10" in out.stdout
    assert os.path.exists(os.path.join(run, "preview.png"))
    assert tf.io.gfile.glob(os.path.join(run, "logs", "train", "events.out.tfevents.*"))


def test_sigterm_saves_and_exits(shards, tmp_path):
    run = str(tmp_path / "run")
    cmd = [sys.executable, TRAIN, "--data", shards, "--out", run, *TINY_FLAGS,
           "--steps-completion", "100000", "--steps-discriminator", "1", "--steps-joint", "1",
           "--checkpoint-every", "100000"]
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    # Signal once steps are running: the first TensorBoard scalars (--log-every 5) are written.
    wait_until(proc, log, lambda: _logged_step(run) >= 5, "a logged step", poll=0.1)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no exit 120 s after SIGTERM:\n{log.read_text()[-3000:]}")
    output = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    steps = _steps(run)
    assert len(steps) == 1 and 0 < steps[0] < 100000, output[-3000:]
    assert "re-run the same command to resume" in output


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: all bound at once (so no two are the same), then released for
    the workers' gRPC servers, which bind them themselves (TF_CONFIG names them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


WORKER = r"""
import json, os, sys
import numpy as np
from glcic_tf.data import input_pipeline
from glcic_tf.training import distribute
from glcic_tf.training import loop
from glcic_tf.config import get_preset
strategy = distribute.make_strategy("multiworker")
shards, run_dir, out = sys.argv[1:4]
config = get_preset("tiny").override({
    "data.image_size": 32, "data.resize_min": 32, "data.resize_max": 40,
    "masks.local_size": 16, "masks.hole_min": 6, "masks.hole_max": 12, "model.width": 0.0625,
    "schedule.batch_size": 4, "schedule.steps_completion": 2, "schedule.steps_discriminator": 1,
    "schedule.steps_joint": 2, "schedule.checkpoint_every": 2, "data.deterministic": True})
fn = lambda ctx=None: input_pipeline.make_dataset(shards, config, input_context=ctx, seed=1)
result = loop.run_training(config, run_dir, train_dataset_fn=fn, strategy=strategy, verbose=0)
trainer_weights = None
np.savez(out, step=result.step, chief=distribute.is_chief(strategy))
"""


@pytest.mark.slow  # two worker processes tracing every phase under collectives: ~45 s
def test_multiworker_two_local_workers_train_identically_and_only_chief_writes(shards, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace(
        "trainer_weights = None",
        "import glcic_tf.training.loop as T\n"
        "w = [v.numpy() for v in T._LAST_TRAINER.completion.weights + "
        "T._LAST_TRAINER.discriminator.weights]\n"
        "np.savez(out + '.weights.npz', *w)"))
    procs = []
    for i in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, str(script), shards, str(tmp_path / f"run{i}"),
             str(tmp_path / f"out{i}.npz")], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-worker training timed out")
    for p, o in zip(procs, outputs):
        assert p.returncode == 0, o[-4000:]
    w0 = np.load(tmp_path / "out0.npz.weights.npz")
    w1 = np.load(tmp_path / "out1.npz.weights.npz")
    assert len(w0.files) == len(w1.files) > 0
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k])
    assert int(np.load(tmp_path / "out0.npz")["step"]) == 5
    # Only the chief (worker 0) wrote checkpoints, config and logs; worker 1's scratch is gone.
    assert _steps(str(tmp_path / "run0"))[-1] == 5
    assert os.path.exists(tmp_path / "run0" / "config.json")
    leftover = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "run1") for f in fs]
    assert leftover == [], leftover


def test_corrupt_shard_is_a_one_line_error_naming_the_file(shards, tmp_path, capsys):
    from helpers.scripts import load_pipeline

    first = sorted(glob.glob(shards))[0]
    bad = tmp_path / "bad-train-00000-of-00001.tfrecord"
    with open(first, "rb") as f:
        content = f.read()
    bad.write_bytes(content[:len(content) // 2])  # truncated mid-record
    cli = load_pipeline("train")
    status = cli.main(cli.parse_args(["--data", str(bad), "--out", str(tmp_path / "run"),
                                      *TINY_FLAGS, "--steps-completion", "2",
                                      "--steps-discriminator", "1", "--steps-joint", "1"]))
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("train.py: ") and "bad-train-00000-of-00001.tfrecord" in err
    assert "Traceback" not in err


@pytest.fixture()
def two_datasets(tmp_path):
    """Two datasets in one folder with different constant colours (different means)."""
    from helpers.datasets import write_dataset

    d = tmp_path / "shards"
    red = write_dataset(str(d / "urban"), train=4, val=2, shards=(2, 1), colour=(200, 10, 10),
                        size=(40, 48))
    blue = write_dataset(str(d / "sun"), train=3, val=1, colour=(10, 10, 200), size=(40, 48))
    return {"dir": d, "urban": red, "sun": blue}


def test_resolve_data_prefix_and_glob_take_their_own_dataset(two_datasets):
    from glcic_tf.training import job
    from glcic_tf.config import get_preset

    d = two_datasets["dir"]
    config = get_preset("tiny")
    lines = []
    for spec in (str(d / "urban"), str(d / "urban-train-*"), str(d / "urban-dataset_info.json")):
        options = job.TrainOptions(config=config, run_dir="unused", data=spec)
        resolved = job.resolve_data(options, lines.append)
        assert [os.path.basename(f) for f in resolved.train_files] == [
            "urban-train-00000-of-00002.tfrecord", "urban-train-00001-of-00002.tfrecord"]
        assert [os.path.basename(f) for f in resolved.val_files] == [
            "urban-val-00000-of-00001.tfrecord"]
        mean = job.dataset_mean_pixel(config, resolved, lines.append).data.mean_pixel
        assert mean == pytest.approx(tuple(two_datasets["urban"]["mean_pixel"]))
    assert "urban-dataset_info.json" in lines[-1]
    # A glob that also catches the val split: trained on, with a warning, and no val split.
    options = job.TrainOptions(config=config, run_dir="unused",
                               data=str(d / "urban-*.tfrecord"))
    resolved = job.resolve_data(options, lines.append)
    assert len(resolved.train_files) == 3 and resolved.val_files is None
    assert "includes 1 val shard(s)" in lines[-1]
    # --val-data: a dataset gives its val split.
    options = job.TrainOptions(config=config, run_dir="unused", data=str(d / "urban"),
                               val_data=str(d / "sun"))
    assert [os.path.basename(f) for f in job.resolve_data(options).val_files] == [
        "sun-val-00000-of-00001.tfrecord"]


def test_train_cli_with_a_dataset_prefix(two_datasets, tmp_path, capsys):
    from helpers.scripts import load_pipeline

    cli = load_pipeline("train")
    run = tmp_path / "run"
    # Phase 1 alone: what is under test is which dataset the prefix selects (the phases are
    # test_loop.py's business).
    status = cli.main(cli.parse_args(["--data", str(two_datasets["dir"] / "sun"), "--out",
                                      str(run), *TINY_FLAGS, "--steps-completion", "2",
                                      "--steps-discriminator", "0", "--steps-joint", "0"]))
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    config = GLCICConfig.load(str(run / "config.json"))
    assert config.data.mean_pixel == pytest.approx(tuple(two_datasets["sun"]["mean_pixel"]))
    assert "sun-dataset_info.json (3 train, 1 val) (2 shard(s))" in out
    assert "held-out data: 1 val shard(s)" in out


def test_train_cli_glob_catching_json_is_a_one_line_error(two_datasets, tmp_path, capsys):
    from helpers.scripts import load_pipeline

    cli = load_pipeline("train")
    status = cli.main(cli.parse_args(["--data", str(two_datasets["dir"] / "urban*"), "--out",
                                      str(tmp_path / "run"), *TINY_FLAGS]))
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("train.py: ") and len(err.strip().splitlines()) == 1
    assert "urban-dataset_info.json: no TFRecord framing" in err
    assert not (tmp_path / "run").exists()
