"""The network's size: rounding like the official tool, Python and TensorFlow alike, the default
maxdim at the training scale, and the warning outside it."""

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.config import get_preset
from glcic_tf.inference import sizing
from glcic_tf.inference.completer import Completer
from glcic_tf.inference.images import CompletionError

from helpers.inference import gradient_photo


def test_network_size_rounds_like_the_official_tool():
    assert sizing.network_size(301, 203) == (300, 204)  # round(x / 4) * 4
    assert sizing.network_size(64, 64) == (64, 64)
    assert sizing.network_size(2, 1) == (4, 4)  # never below 4
    assert sizing.network_size(1000, 600) == (500, 300)  # long side scaled to maxdim
    assert sizing.network_size(600, 1001, maxdim=500) == (300, 500)
    assert sizing.network_size(3000, 30, maxdim=500) == (500, 4)
    with pytest.raises(CompletionError, match="maxdim must be >= 4"):
        sizing.network_size(10, 10, maxdim=2)


def test_network_size_tensorflow_matches_python():
    for h, w, maxdim in [(301, 203, 500), (1000, 600, 500), (2, 1, 500), (999, 501, 500),
                         (37, 51, 40), (6, 10, 500), (1234, 4321, 777)]:
        th, tw = sizing.network_size_tf(tf.constant(h), tf.constant(w), maxdim)
        assert (int(th), int(tw)) == sizing.network_size(h, w, maxdim), (h, w, maxdim)


def test_default_maxdim_follows_the_training_scale(tiny_run, completer):
    assert sizing.default_maxdim(get_preset("paper")) == 500
    assert sizing.default_maxdim(get_preset("photos128")) == 252
    _, config, _ = tiny_run
    assert completer.default_maxdim == sizing.default_maxdim(config) == 124
    image = gradient_photo(150, 300)
    hole = np.zeros((150, 300), bool)
    hole[60:80, 100:130] = True
    # maxdim=None is the model's default: identical to asking for it explicitly.
    np.testing.assert_array_equal(completer.complete(image, hole, postprocess=False),
                                  completer.complete(image, hole, postprocess=False, maxdim=124))


def test_scale_warning_names_the_problem(tiny_run):
    _, config, model = tiny_run  # the tiny preset: 64 px crops of images resized to 64-96 px
    assert sizing.scale_warning(config, 96, 120, (20, 20)) is None
    message = sizing.scale_warning(config, 328, 492, (200, 150), name="photo.png")
    assert message.startswith("photo.png: ") and "328 px" in message and "200 px" in message
    assert "--maxdim 124" in message
    warnings = []
    completer = Completer.from_model(config, model)
    completer.warn = warnings.append
    image = gradient_photo(328, 492)
    hole = np.zeros((328, 492), bool)
    hole[50:250, 100:250] = True
    completer.complete(image, hole, postprocess=False, maxdim=500)
    assert len(warnings) == 1 and "far outside its training scale" in warnings[0]
    completer.complete(image, hole, postprocess=False)  # default maxdim 124: within scale
    assert len(warnings) == 1
