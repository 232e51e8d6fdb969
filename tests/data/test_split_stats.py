"""The exact split statistics combined in make_tfrecords' Beam pipeline (SplitStatsFn)."""

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from glcic_tf.data.split_stats import ImageStats, SplitStatsFn

STATS = [ImageStats(40, 48, (40 * 48 * 10, 40 * 48 * 20, 40 * 48 * 30)),
         ImageStats(64, 32, (64 * 32 * 200, 64 * 32 * 100, 0)),
         ImageStats(50, 70, (50 * 70 * 255, 0, 50 * 70 * 128))]


def _combine(fn, stats):
    acc = fn.create_accumulator()
    for s in stats:
        acc = fn.add_input(acc, s)
    return acc


def test_output_is_the_exact_mean_and_size_statistics():
    out = SplitStatsFn().extract_output(_combine(SplitStatsFn(), STATS))
    pixels = np.array([40 * 48, 64 * 32, 50 * 70])
    assert out["count"] == 3 and out["pixels"] == pixels.sum()
    values = np.array([[10, 20, 30], [200, 100, 0], [255, 0, 128]])
    want = (values * pixels[:, None]).sum(0) / pixels.sum() / 255.0  # pixel-weighted, not per image
    np.testing.assert_allclose(out["mean_pixel"], want, rtol=1e-15)
    assert out["height"] == {"min": 40, "max": 64, "mean": (40 + 64 + 50) / 3}
    assert out["width"] == {"min": 32, "max": 70, "mean": (48 + 32 + 70) / 3}


def test_merging_any_split_of_the_inputs_gives_the_same_output():
    fn = SplitStatsFn()
    whole = fn.extract_output(_combine(fn, STATS))
    for parts in ([STATS[:1], STATS[1:]], [STATS[:2], [], STATS[2:]], [[s] for s in STATS]):
        merged = fn.merge_accumulators([_combine(fn, p) for p in parts])
        assert fn.extract_output(merged) == whole


def test_sums_stay_exact_beyond_float64():
    # 10^6 images of 10^4 x 10^4 pixels: sums near 2.5e17, past float64's 2^53 integers.
    fn = SplitStatsFn()
    big = ImageStats(10_000, 10_000, (10**8 * 255, 10**8 * 254, 1))
    acc = fn.create_accumulator()
    for _ in range(3):
        acc = fn.merge_accumulators([acc, fn.add_input(fn.create_accumulator(), big)])
    assert acc["sums"] == [3 * 10**8 * 255, 3 * 10**8 * 254, 3]
    assert all(isinstance(v, int) for v in acc["sums"])


def test_an_empty_split_has_no_mean_or_sizes():
    fn = SplitStatsFn()
    out = fn.extract_output(fn.create_accumulator())
    assert out == {"count": 0, "pixels": 0, "mean_pixel": None,
                   "height": {"min": None, "max": None, "mean": None},
                   "width": {"min": None, "max": None, "mean": None}}
    merged = fn.merge_accumulators([fn.create_accumulator(), _combine(fn, STATS[:1])])
    assert fn.extract_output(merged)["height"] == {"min": 40, "max": 40, "mean": 40.0}


def test_combine_per_key_in_a_beam_pipeline():
    with TestPipeline() as p:
        out = (p | beam.Create([("train", s) for s in STATS] + [("val", STATS[0])])
               | beam.CombinePerKey(SplitStatsFn())
               | beam.MapTuple(lambda split, stats: (split, stats["count"], stats["pixels"])))
        assert_that(out, equal_to([("train", 3, 40 * 48 + 64 * 32 + 50 * 70),
                                   ("val", 1, 40 * 48)]))
