"""Completing files: errors that name the file and the problem, and the official tool's random
holes, seeded and scaled to the model."""

import os

import cv2
import numpy as np
import pytest

from glcic_tf.config import get_preset
from glcic_tf.inference import files
from glcic_tf.inference.completer import Completer
from glcic_tf.inference.images import CompletionError

from helpers.inference import gradient_photo, save_png


def test_errors_name_the_file_and_the_problem(tmp_path, completer):
    image_path = save_png(tmp_path / "photo.png", gradient_photo(32, 40))
    empty = save_png(tmp_path / "empty.png", np.zeros((32, 40), np.uint8))
    small = save_png(tmp_path / "small.png", np.full((30, 40), 255, np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    out = str(tmp_path / "out.png")
    with pytest.raises(CompletionError, match=r"empty\.png: empty mask"):
        files.complete_files(completer, image_path, empty, out)
    with pytest.raises(CompletionError, match=r"small\.png: mask size 40x30 \(WxH\) differs "
                                              r"from image size 40x32 of .*photo\.png"):
        files.complete_files(completer, image_path, small, out)
    with pytest.raises(CompletionError, match=r"broken\.png: cannot read image"):
        files.complete_files(completer, str(broken), empty, out)
    with pytest.raises(CompletionError, match=r"missing\.png: mask file not found"):
        files.complete_files(completer, image_path, str(tmp_path / "missing.png"), out)
    with pytest.raises(CompletionError, match="empty mask"):
        completer.complete(gradient_photo(8, 8), np.zeros((8, 8)))
    with pytest.raises(CompletionError, match="differs from image size"):
        completer.complete(gradient_photo(8, 8), np.ones((8, 9)))
    assert not os.path.exists(out)
    with pytest.raises(CompletionError, match="not a training run dir"):
        Completer.from_path(str(tmp_path))


def test_random_holes_follow_the_official_tool_and_are_seeded():
    a = files.random_holes(300, 400, np.random.default_rng(5))
    b = files.random_holes(300, 400, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    for seed in range(20):
        hole = files.random_holes(300, 400, np.random.default_rng(seed))
        assert 32 * 32 <= hole.sum() <= 4 * 128 * 128
        _, _, stats, _ = cv2.connectedComponentsWithStats(hole.astype(np.uint8))
        assert 1 <= len(stats) - 1 <= 4  # rectangles may overlap
        assert stats[1:, 2].min() >= 32 and stats[1:, 3].min() >= 32
    tiny = files.random_holes(20, 24, np.random.default_rng(0))
    assert tiny.shape == (20, 24) and tiny.any() and not tiny.all()


def test_random_holes_scale_with_the_model():
    class Fake:
        config = get_preset("photos128")
        default_maxdim = 252

    assert files._random_hole_size(Fake, (200, 250), None) == (16, 64)
    assert files._random_hole_size(Fake, (400, 504), None) == (32, 128)  # 2x the scale
    Fake.config = None
    assert files._random_hole_size(Fake, (400, 504), None) == files.RANDOM_HOLE_SIZE
