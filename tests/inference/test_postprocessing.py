"""The paper's post-processing: only hole pixels change, each hole blends into its own
surroundings (OpenCV), and the in-graph mode is `poisson.postprocess_image` of the composite."""

import cv2
import numpy as np
import pytest

from glcic_tf.inference import poisson, postprocessing
from glcic_tf.inference.images import CompletionError

from helpers.inference import gradient_photo


@pytest.mark.parametrize("maxdim", [None, 0])
def test_in_graph_postprocess_is_the_poisson_module_on_the_composite(completer, maxdim):
    image = gradient_photo(64, 96, seed=3)
    hole = np.zeros((64, 96), bool)
    hole[8:30, 10:40] = True
    hole[44:64, 60:96] = True  # touches the bottom and right borders
    raw = completer.complete(image, hole, postprocess="none", maxdim=maxdim)
    post = completer.complete(image, hole, postprocess="in-graph", maxdim=maxdim)
    np.testing.assert_array_equal(post[~hole], image[~hole])
    want = poisson.postprocess_image(raw.astype(np.float32) / 255,
                                     hole[..., None].astype(np.float32)).numpy()
    want = np.round(want * 255)
    # maxdim=0 post-processes the 8-bit composite, the other path the float one: 1 level.
    assert np.abs(post.astype(int) - want).max() <= 1
    assert (post[hole] != raw[hole]).any(axis=-1).mean() > 0.3


def test_postprocess_changes_only_hole_pixels_and_blends_each_hole(completer):
    image = gradient_photo(64, 96, seed=2)
    hole = np.zeros((64, 96), bool)
    hole[8:24, 10:30] = True  # interior
    hole[40:56, 50:70] = True  # interior, far from the first
    hole[50:64, 0:12] = True  # touches the left and bottom borders
    raw = completer.complete(image, hole, postprocess=False)
    post = completer.complete(image, hole, postprocess=True)
    np.testing.assert_array_equal(post[~hole], image[~hole])
    count, labels = cv2.connectedComponents(hole.astype(np.uint8))
    assert count - 1 == 3
    for label in range(1, count):
        region = labels == label
        changed = (post[region] != raw[region]).any(axis=-1).mean()
        assert changed > 0.3, (label, changed)


def test_poisson_blending_pulls_each_hole_to_its_own_surroundings():
    # Flat, wrongly coloured completions in three holes (one in a corner) on a smooth
    # background: NORMAL_CLONE keeps the (zero) gradients and takes each hole's colour from its
    # own boundary, so every hole ends close to the background around it.
    image = gradient_photo(72, 96, seed=3)
    hole = np.zeros((72, 96), bool)
    boxes = [(slice(8, 24), slice(10, 30)), (slice(40, 60), slice(60, 84)),
             (slice(0, 14), slice(82, 96))]
    completed = image.copy()
    for (ys, xs), colour in zip(boxes, [(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        hole[ys, xs] = True
        completed[ys, xs] = colour
    out = postprocessing.postprocess(completed, hole)
    np.testing.assert_array_equal(out[~hole], image[~hole])
    for ys, xs in boxes:
        before = np.abs(completed[ys, xs].astype(int) - image[ys, xs]).mean()
        after = np.abs(out[ys, xs].astype(int) - image[ys, xs]).mean()
        assert before > 60 and after < 12, (ys, xs, before, after)


def test_postprocess_handles_a_hole_covering_a_whole_border_row():
    image = gradient_photo(40, 40, seed=4)
    hole = np.zeros((40, 40), bool)
    hole[0:6, :] = True
    completed = image.copy()
    completed[hole] = 250
    out = postprocessing.postprocess(completed, hole)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert np.abs(out[hole].astype(int) - image[hole]).mean() < 25


def test_completer_modes_and_bad_mode():
    assert postprocessing.postprocess_mode(True) == "opencv"
    assert postprocessing.postprocess_mode(False) == "none"
    assert postprocessing.postprocess_mode("in-graph") == "in-graph"
    with pytest.raises(CompletionError, match="postprocess must be one of"):
        postprocessing.postprocess_mode("poisson")
