"""glcic_tf.evaluation.baselines: the 8-bit convention and the OpenCV inpainters."""

import numpy as np
import pytest

from glcic_tf.evaluation.baselines import inpaint_opencv, to_uint8


def test_to_uint8_rounds_and_clips():
    out = to_uint8(np.array([-0.5, 0.0, 0.2 / 255, 0.7 / 255, 100.4 / 255, 1.0, 1.5]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 0, 1, 100, 255, 255])


def test_inpaint_opencv_changes_only_the_hole():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    hole = np.zeros((24, 32), bool)
    hole[6:14, 8:20] = True
    masked = np.where(hole[..., None], 0, image).astype(np.uint8)
    for method in ("telea", "ns"):
        out = inpaint_opencv(masked, hole, method)
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[~hole], masked[~hole])
        assert out[hole].mean() > 20  # filled from the surroundings (mean ~128), not left at 0
    with pytest.raises(ValueError, match="method must be 'telea' or 'ns', got 'fmm'"):
        inpaint_opencv(masked, hole, "fmm")
