"""glcic_tf.evaluation.metrics against hand-computed values."""

import math

import numpy as np
import pytest

from glcic_tf.evaluation import metrics


def test_psnr_of_known_mse():
    a = np.zeros((16, 16, 3), np.float32)
    b = np.full((16, 16, 3), 0.1, np.float32)  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert metrics.psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    c = np.full((16, 16, 3), 0.01, np.float32)  # MSE 1e-4 -> 40 dB
    batch = metrics.psnr(np.stack([a, a]), np.stack([b, c]))
    assert batch.shape == (2,)
    np.testing.assert_allclose(batch, [20.0, 40.0], atol=1e-3)


def test_psnr_identical_is_inf():
    a = np.random.default_rng(0).random((12, 12, 3))
    assert math.isinf(metrics.psnr(a, a))


def test_ssim_identical_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32, 3)).astype(np.float32)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert metrics.ssim(a, noisy) < 0.9
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(a[:8, :8], a[:8, :8])


def test_l1_255_whole_and_inside_a_known_hole():
    a = np.zeros((2, 8, 8, 3), np.float32)
    b = np.zeros((2, 8, 8, 3), np.float32)
    mask = np.zeros((2, 8, 8, 1), np.float32)
    mask[0, 2:4, 2:6] = 1  # 8 hole pixels of 64
    mask[1, :4] = 1  # 32 hole pixels
    b[mask[..., 0] > 0] = 0.5  # error 127.5 in the hole, 0 outside
    np.testing.assert_allclose(metrics.l1_255(a, b, mask), [127.5, 127.5])
    np.testing.assert_allclose(metrics.l1_255(a, b), [127.5 * 8 / 64, 127.5 * 32 / 64])
    # One image, mask without channel axis.
    assert metrics.l1_255(a[0], b[0], mask[0, ..., 0]) == pytest.approx(127.5)
    assert isinstance(metrics.l1_255(a[0], b[0]), float)


def test_l1_255_empty_mask_is_nan_and_shapes_are_checked():
    a = np.zeros((8, 8, 3))
    assert math.isnan(metrics.l1_255(a, a, np.zeros((8, 8, 1))))
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.l1_255(a, np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match="mask: expected shape"):
        metrics.l1_255(a, a, np.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="expected an image"):
        metrics.psnr(np.zeros(5), np.zeros(5))


def test_mean_ci_t_interval():
    out = metrics.mean_ci([1.0, 2.0, 3.0, 4.0])
    # std (ddof=1) = 1.290994; t(0.975, 3) = 3.182446; half width = t * std / sqrt(4).
    half = 3.182446 * 1.290994 / 2.0
    assert out["mean"] == pytest.approx(2.5)
    assert out["ci_low"] == pytest.approx(2.5 - half, abs=1e-5)
    assert out["ci_high"] == pytest.approx(2.5 + half, abs=1e-5)
    assert out["count"] == 4 and out["dropped"] == 0


def test_mean_ci_drops_non_finite_and_handles_one_value():
    out = metrics.mean_ci([3.0, float("inf"), float("nan")])
    assert out == {"mean": 3.0, "ci_low": 3.0, "ci_high": 3.0, "std": 0.0, "count": 1,
                   "dropped": 2}
    assert metrics.mean_ci([])["mean"] is None


def test_hole_area_bins():
    assert metrics.hole_area_bin(0.0) == "0-10%"
    assert metrics.hole_area_bin(0.1) == "0-10%"
    assert metrics.hole_area_bin(0.15) == "10-20%"
    assert metrics.hole_area_bin(0.55) == "50-60%"
    assert metrics.hole_area_bin(0.7) == ">=60%"
    assert metrics.hole_area_bins() == ["0-10%", "10-20%", "20-30%", "30-40%", "40-50%",
                                        "50-60%", ">=60%"]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        metrics.hole_area_bin(1.5)


def test_hole_fraction():
    mask = np.zeros((2, 4, 4, 1))
    mask[0, :2] = 1
    np.testing.assert_allclose(metrics.hole_fraction(mask), [0.5, 0.0])
    assert metrics.hole_fraction(mask[0]) == 0.5
    assert metrics.hole_fraction(mask[0, ..., 0]) == 0.5
