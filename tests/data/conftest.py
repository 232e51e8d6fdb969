"""Fixtures shared by the data tests: mask folders and a shard of random photos."""

import numpy as np
import pytest

from helpers.data import write_mask_folder, write_square_folder
from helpers.images import write_shard


@pytest.fixture(scope="session")
def mask_folder(tmp_path_factory):
    """Masks of several sizes and modes: (root, {name: bool hole map})."""
    return write_mask_folder(tmp_path_factory.mktemp("masks"))


@pytest.fixture(scope="session")
def square_folder(tmp_path_factory):
    """Masks of exactly the training size: their crops are one of 8 flips/rotations."""
    return write_square_folder(tmp_path_factory.mktemp("square"))


@pytest.fixture(scope="session")
def shard(tmp_path_factory):
    """8 random 72x80 PNGs keyed img0..img7."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (72, 80, 3), dtype=np.uint8) for _ in range(8)]
    return write_shard(tmp_path_factory.mktemp("shards") / "train-0.tfrecord", images)
