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
