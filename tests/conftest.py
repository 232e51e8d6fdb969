"""Test set-up: two logical CPU devices so MirroredStrategy runs without a GPU, and seeded
weights in every test."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SEED = 1234


def pytest_configure(config):
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError as e:  # devices already initialised by an earlier import
        if len(tf.config.list_logical_devices("CPU")) < 2:
            raise pytest.UsageError(
                f"the suite needs two logical CPU devices (MirroredStrategy tests) and TensorFlow "
                f"was initialised before conftest could create them: {e}") from None


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same Python, NumPy and TensorFlow seeds, so initial weights
    (Keras initialisers, Dense layers) are the same in every process and every run."""
    import keras

    keras.utils.set_random_seed(SEED)
    yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run directory of the tiny preset at width 1/16 (`helpers.runs.tiny_export_config`),
    He-normal weights from seed 0, step `helpers.runs.STEP`. Shared by the whole session: read
    it, never write into it. Returns (run_dir, config, model)."""
    from glcic_tf.training import runs

    from helpers.runs import make_run_dir, tiny_export_config
    from helpers.shared import built_once

    with built_once(tmp_path_factory, "tiny_run") as (folder, build):
        run_dir = str(folder / "run")
        if build:
            config, model = make_run_dir(run_dir, seed=0, config=tiny_export_config())
        else:  # another xdist worker wrote it
            config, model, _ = runs.load_completion_network(run_dir)
    return run_dir, config, model


@pytest.fixture(scope="session")
def tiny_exports(tiny_run, tmp_path_factory):
    """`tiny_run` exported once per session to one TF Serving base path: version 1 float32,
    version 2 bfloat16 (both with every signature). Read-only: copy the base path before adding
    versions. Returns {"base", "fp32", "bf16", "run_dir", "config", "model"}."""
    from glcic_tf.inference import export

    from helpers.shared import built_once

    run_dir, config, model = tiny_run
    with built_once(tmp_path_factory, "tiny_exports") as (folder, build):
        base = str(folder / "glcic")
        if build:
            fp32 = export.export_from_run(run_dir, base)
            bf16 = export.export_from_run(run_dir, base, precision="bfloat16")
        else:  # another xdist worker wrote them
            fp32, bf16 = (os.path.join(base, version) for version in ("1", "2"))
    return {"base": base, "fp32": fp32, "bf16": bf16, "run_dir": run_dir, "config": config,
            "model": model}
