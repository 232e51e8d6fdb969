"""Hole generators (glcic_tf.data.masks): the paper's rectangles, free-form strokes, "mixed"."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import masks
from glcic_tf.config import MaskConfig

SIZE = 64
RECT = MaskConfig(local_size=32, hole_min=12, hole_max=24)
FREEFORM = MaskConfig(local_size=32, hole_min=12, hole_max=24, kind="freeform", max_strokes=3,
                      stroke_width_min=2, stroke_width_max=6)
NUM_SEEDS = 64


def seeds(n=NUM_SEEDS, first=0):
    return tf.stack([tf.zeros([n], tf.int64), tf.range(first, first + n, dtype=tf.int64)], 1)


def sample_many(config, kind=None, n=NUM_SEEDS, first=0):
    """Holes for n seeds, drawn inside Dataset.map (graph mode)."""
    ds = tf.data.Dataset.from_tensor_slices(seeds(n, first)).map(
        lambda s: masks.sample_holes(SIZE, config, s, kind)).batch(n)
    return {k: v.numpy() for k, v in ds.get_single_element().items()}


def bounding_box(mask):
    ys, xs = np.nonzero(mask[..., 0])
    return ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def local_patch(mask, offset, size):
    y, x = offset
    inside = np.zeros_like(mask)
    inside[y:y + size, x:x + size] = 1
    return inside


def test_rect_mask_exact_values():
    mask = masks.rect_mask(tf.constant([[1, 2, 3, 4], [5, 0, 1, 1]]), 8).numpy()
    expected = np.zeros((8, 8, 1), np.float32)
    expected[1:4, 2:6] = 1
    expected[5, 0] = 1
    np.testing.assert_array_equal(mask, expected)


def test_rect_holes_sizes_positions_and_local_patch():
    out = sample_many(RECT)
    assert out["mask"].shape == (NUM_SEEDS, SIZE, SIZE, 1)
    assert out["local_offset"].dtype == np.int32
    assert set(np.unique(out["mask"])) <= {0.0, 1.0}
    sizes = []
    for mask, offset in zip(out["mask"], out["local_offset"]):
        y, x, h, w = bounding_box(mask)
        sizes += [h, w]
        assert RECT.hole_min <= h <= RECT.hole_max and RECT.hole_min <= w <= RECT.hole_max
        assert mask.sum() == h * w  # one solid rectangle
        # The local patch lies inside the image and contains the whole hole.
        assert 0 <= offset[0] <= SIZE - RECT.local_size
        assert 0 <= offset[1] <= SIZE - RECT.local_size
        assert (mask * local_patch(mask, offset, RECT.local_size)).sum() == mask.sum()
    # Both ends of the size range are reachable, not only the middle.
    assert min(sizes) <= RECT.hole_min + 2 and max(sizes) >= RECT.hole_max - 2


def test_several_rect_holes_first_one_inside_local_patch():
    config = MaskConfig(local_size=32, hole_min=8, hole_max=12, num_holes=3)
    for i in range(8):
        out = masks.sample_rect_holes(SIZE, config, tf.constant([1, i]))
        boxes, offset = out["boxes"].numpy(), out["local_offset"].numpy()
        assert boxes.shape == (3, 4)
        np.testing.assert_array_equal(out["mask"].numpy(), masks.rect_mask(boxes, SIZE).numpy())
        y, x, h, w = boxes[0]
        assert offset[0] <= y and y + h <= offset[0] + 32
        assert offset[1] <= x and x + w <= offset[1] + 32
        assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= SIZE).all()


def test_freeform_holes_non_empty_and_inside_local_patch():
    out = sample_many(FREEFORM)
    areas = out["mask"].sum(axis=(1, 2, 3))
    assert (areas > 0).all()
    assert len(np.unique(areas)) > NUM_SEEDS // 2  # strokes vary
    for mask, offset in zip(out["mask"], out["local_offset"]):
        assert 0 <= offset.min() and offset.max() <= SIZE - FREEFORM.local_size
        assert (mask * local_patch(mask, offset, FREEFORM.local_size)).sum() == mask.sum()


def test_stroke_mask_single_thin_stroke_is_never_empty():
    config = MaskConfig(local_size=32, hole_min=12, hole_max=24, max_strokes=1,
                        stroke_width_min=1, stroke_width_max=1)
    for i in range(16):
        assert masks.stroke_mask(16, config, tf.constant([2, i])).numpy().sum() >= 1


def test_mixed_follows_freeform_ratio():
    all_rect = sample_many(MaskConfig(local_size=32, hole_min=12, hole_max=24, kind="mixed",
                                      freeform_ratio=0.0), n=16)
    for mask in all_rect["mask"]:
        y, x, h, w = bounding_box(mask)
        assert mask.sum() == h * w
    all_strokes = sample_many(
        dataclasses.replace(FREEFORM, kind="mixed", freeform_ratio=1.0), n=16)
    solid = [m.sum() == np.prod(bounding_box(m)[2:]) for m in all_strokes["mask"]]
    assert not all(solid)
    half = sample_many(MaskConfig(local_size=32, hole_min=12, hole_max=24, kind="mixed",
                                  freeform_ratio=0.5))
    solid = [m.sum() == np.prod(bounding_box(m)[2:]) for m in half["mask"]]
    assert 0 < sum(solid) < NUM_SEEDS


@pytest.mark.parametrize("kind", ["rect", "freeform", "mixed"])
def test_same_seed_same_holes_eagerly_and_in_graph(kind):
    config = dataclasses.replace(FREEFORM, kind=kind)
    graph = sample_many(config, n=4)
    for i in range(4):
        eager = masks.sample_holes(SIZE, config, seeds(4)[i])
        np.testing.assert_array_equal(eager["mask"].numpy(), graph["mask"][i])
        np.testing.assert_array_equal(eager["local_offset"].numpy(), graph["local_offset"][i])
    other = sample_many(config, n=4, first=100)
    assert not np.array_equal(other["mask"], graph["mask"])


def test_bad_kind_and_sizes_raise():
    with pytest.raises(ValueError, match="unknown mask kind 'circle'"):
        masks.sample_holes(SIZE, RECT, tf.constant([0, 0]), "circle")
    with pytest.raises(ValueError, match="local_size=32, image_size=16"):
        masks.sample_holes(16, RECT, tf.constant([0, 0]))
