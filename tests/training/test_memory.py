"""The training memory check (glcic_tf.training.memory): estimate, decision, and train.py's
refusal."""

import os
import subprocess
import sys
import time

import pytest

from glcic_tf.training import memory
from glcic_tf.config import get_preset

from helpers.scripts import REPO

GIB = memory.GIB


def paper(**overrides):
    return get_preset("paper").override(overrides)


def test_estimate_parts_follow_the_formula():
    config = paper(**{"model.width": 0.5, "data.image_size": 128, "data.resize_min": 128,
                      "data.resize_max": 192, "masks.local_size": 64, "masks.hole_min": 48,
                      "masks.hole_max": 64})
    est = memory.estimate(config, 8)
    params = memory.parameter_count(0.5, 128, 64)
    assert est.state == 4 * memory.PARAMETER_COPIES * params
    assert est.activations == pytest.approx(memory.ACTIVATION_BYTES * 0.5 * 128 ** 2 * 8)
    assert est.runtime == memory.RUNTIME_BYTES
    assert est.total == est.runtime + est.state + est.activations
    assert memory.estimate(config, 8, device="gpu").runtime == 0.0
    mixed = memory.estimate(config.override({"precision": "mixed_bfloat16"}), 8)
    assert mixed.activations == pytest.approx(memory.MIXED_FACTOR * est.activations)
    # Twice the batch, twice the activations; the state does not change.
    assert memory.estimate(config, 16).activations == pytest.approx(2 * est.activations)


def test_parameter_count_is_table_1():
    # The paper's networks: 6,072,131 + 45,063,681 trainable (glcic_tf.networks.models' docstring).
    assert memory.parameter_count(1.0, 256, 128) == 6_072_131 + 45_063_681
    # Against the Keras networks at a small width and odd sizes.
    from glcic_tf.networks import models

    def trainable(model):
        return sum(int(w.shape.num_elements()) for w in model.trainable_weights)

    want = (trainable(models.completion_network(0.25))
            + trainable(models.context_discriminator(72, 40, 0.25)))
    assert memory.parameter_count(0.25, 72, 40) == want


def test_plan_fits_as_configured():
    config = paper(**{"schedule.batch_size": 4})
    plan = memory.plan(config, 1, 64 * GIB)
    assert plan.accumulate == 1 and plan.available == 64 * GIB
    assert "per replica" in plan.message


def test_plan_refuses_with_the_numbers_and_the_flags_that_fit():
    config = paper()  # batch 96 at 256 px, full width
    need = memory.estimate(config, 96).total
    available = 8 * GIB
    assert need > available
    with pytest.raises(memory.DoesNotFit) as info:
        memory.plan(config, 1, available)
    message = str(info.value)
    for text in ("batch 96", "256 px", f"{need / GIB:.1f} GiB", "8.0 GiB is available",
                 "--accumulate ", "--accumulate auto", "--batch-size ", "--no-memory-check"):
        assert text in message, (text, message)
    # The suggested --accumulate N does fit, and the next smaller divisor does not.
    n = int(message.split("--accumulate ")[1].split()[0])
    assert 96 % n == 0
    budget = memory.HEADROOM * available
    assert memory.estimate(config, 96 // n).total <= budget
    smaller = [d for d in range(1, n) if 96 % d == 0]
    assert all(memory.estimate(config, 96 // d).total > budget for d in smaller)
    batch = int(message.split("--batch-size ")[1].split()[0])
    assert batch < 96
    assert memory.estimate(config, batch).total <= budget
    assert memory.estimate(config, batch + 1).total > budget


def test_plan_auto_chooses_the_smallest_accumulation_and_explains_batch_norm():
    config = paper()
    plan = memory.plan(config, 1, 8 * GIB, auto=True)
    assert plan.accumulate > 1 and 96 % plan.accumulate == 0
    assert f"{plan.accumulate} micro-batches of {96 // plan.accumulate}" in plan.message
    assert "batch normalization" in plan.message and "global batch stays 96" in plan.message
    assert plan.estimate.total <= memory.HEADROOM * 8 * GIB
    # Two replicas: each holds half the batch, so less accumulation is needed.
    two = memory.plan(config, 2, 8 * GIB, auto=True)
    assert two.accumulate <= plan.accumulate


def test_plan_refuses_when_not_even_one_image_fits():
    config = paper(**{"schedule.batch_size": 4})
    with pytest.raises(memory.DoesNotFit, match="even one image per step does not fit"):
        memory.plan(config, 1, 1 * GIB, auto=True)


def test_plan_skips_when_memory_is_unknown():
    plan = memory.plan(paper(), 1, None)
    assert plan.accumulate == 1 and plan.available is None and "skipped" in plan.message


def test_train_refuses_a_config_that_cannot_fit_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "pipelines", "train.py"), "--preset", "paper",
         "--data", os.path.join(REPO, "tests", "no-such-dir", "*.tfrecord"),
         "--out", str(out), "--batch-size", "65536"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert proc.returncode == memory.EXIT_DOES_NOT_FIT, proc.stderr[-2000:]
    assert "does not fit" in proc.stderr and "batch 65536" in proc.stderr
    assert not out.exists()  # nothing written but the refusal
    assert elapsed < 120


def test_train_flags_accumulate_and_memory_check():
    from helpers.scripts import load_pipeline

    cli = load_pipeline("train")
    args = cli.parse_args(["--preset", "tiny", "--accumulate", "auto", "--no-memory-check"])
    assert args.accumulate == "auto" and args.memory_check is False
    assert cli.resolve_config(args).schedule.accumulate == 1  # auto is decided at run time
    args = cli.parse_args(["--preset", "tiny", "--batch-size", "8", "--accumulate", "4"])
    assert args.memory_check is True
    assert cli.resolve_config(args).schedule.accumulate == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(SystemExit):
            cli.parse_args(["--accumulate", bad])


def test_train_lib_applies_the_auto_accumulation_and_skips_when_asked(tmp_path, capsys):
    import tensorflow as tf

    from glcic_tf.training import job

    config = paper(**{"schedule.batch_size": 65536})
    strategy = tf.distribute.get_strategy()
    options = job.TrainOptions(config=config, run_dir=str(tmp_path / "run"),
                               accumulate_auto=True)
    chosen = job.plan_memory(config, strategy, options)
    n = chosen.schedule.accumulate
    assert n > 1 and 65536 % n == 0
    assert f"--accumulate auto chose {n} micro-batches" in capsys.readouterr().out
    off = job.TrainOptions(config=config, run_dir=str(tmp_path / "run"),
                           memory_check=False)
    assert job.plan_memory(config, strategy, off) is config
    with pytest.raises(memory.DoesNotFit, match="--accumulate"):
        job.plan_memory(config, strategy, job.TrainOptions(
            config=config, run_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()
