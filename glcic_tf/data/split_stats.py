"""Exact statistics of a dataset split, combined in the Beam pipeline (`glcic_tf.data.tfrecords`).

Per image, `NormalizeFn` emits an `ImageStats` (its size and per-channel pixel sums); per split,
`SplitStatsFn` combines them into the count, the pixel count, the mean pixel (RGB in [0, 1]) and
height / width statistics that `PREFIX-dataset_info.json` records. Sums are Python integers, so
the mean pixel is exact (sum of all decoded pixels / pixel count) for any dataset size.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import apache_beam as beam


@dataclasses.dataclass(frozen=True)
class ImageStats:
    """Per-image numbers combined into the split statistics (small: cheap to shuffle)."""

    height: int
    width: int
    channel_sums: tuple[int, int, int]


class SplitStatsFn(beam.CombineFn):
    """Count, exact per-channel pixel sums and size statistics of a split.

    The accumulator holds Python integers, so the mean pixel is exact for any dataset size.
    """

    def create_accumulator(self) -> dict:
        return {"count": 0, "pixels": 0, "sums": [0, 0, 0], "min_h": None, "max_h": 0,
                "sum_h": 0, "min_w": None, "max_w": 0, "sum_w": 0}

    def add_input(self, acc: dict, s: ImageStats) -> dict:
        acc["count"] += 1
        acc["pixels"] += s.height * s.width
        acc["sums"] = [a + b for a, b in zip(acc["sums"], s.channel_sums)]
        acc["min_h"] = s.height if acc["min_h"] is None else min(acc["min_h"], s.height)
        acc["min_w"] = s.width if acc["min_w"] is None else min(acc["min_w"], s.width)
        acc["max_h"] = max(acc["max_h"], s.height)
        acc["max_w"] = max(acc["max_w"], s.width)
        acc["sum_h"] += s.height
        acc["sum_w"] += s.width
        return acc

    def merge_accumulators(self, accs: Iterable[dict]) -> dict:
        out = self.create_accumulator()
        for a in accs:
            out["count"] += a["count"]
            out["pixels"] += a["pixels"]
            out["sums"] = [x + y for x, y in zip(out["sums"], a["sums"])]
            for k in ("min_h", "min_w"):
                if a[k] is not None:
                    out[k] = a[k] if out[k] is None else min(out[k], a[k])
            for k in ("max_h", "max_w"):
                out[k] = max(out[k], a[k])
            out["sum_h"] += a["sum_h"]
            out["sum_w"] += a["sum_w"]
        return out

    def extract_output(self, acc: dict) -> dict:
        n = acc["count"]
        return {
            "count": n,
            "pixels": acc["pixels"],
            "mean_pixel": ([v / acc["pixels"] / 255.0 for v in acc["sums"]]
                           if acc["pixels"] else None),
            "height": {"min": acc["min_h"], "max": acc["max_h"] if n else None,
                       "mean": acc["sum_h"] / n if n else None},
            "width": {"min": acc["min_w"], "max": acc["max_w"] if n else None,
                      "mean": acc["sum_w"] / n if n else None},
        }
