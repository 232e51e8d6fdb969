"""The NumPy Torch layers of glcic_tf.torch7.reference against naive loops written from the
Torch definitions."""

import numpy as np

from glcic_tf.torch7.reference import torch_conv2d, torch_full_conv2d

from helpers.torch7 import naive_conv, naive_full_conv


def test_numpy_torch_layers_match_naive_definitions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 8))
    for k, stride, pad, dil in [(3, 2, 1, 1), (5, 1, 2, 1), (3, 1, 2, 2), (3, 1, 4, 4)]:
        w, b = rng.normal(size=(4, 3, k, k)), rng.normal(size=4)
        np.testing.assert_allclose(
            torch_conv2d(x[None], w, b, stride=stride, pad=pad, dilation=dil)[0],
            naive_conv(x, w, b, stride, pad, dil), atol=1e-10)
    w, b = rng.normal(size=(3, 5, 4, 4)), rng.normal(size=5)
    out = torch_full_conv2d(x[None], w, b, stride=2, pad=1)[0]
    assert out.shape == (5, 12, 16)
    np.testing.assert_allclose(out, naive_full_conv(x, w, b, 2, 1), atol=1e-10)
