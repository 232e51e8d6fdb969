"""glcic_tf.evaluation.report: the paired differences of the report and its tables."""

import pytest

from glcic_tf.evaluation import metrics as metrics_lib
from glcic_tf.evaluation import report as report_lib

from helpers.evaluation import MASKS, read_samples
from helpers.runs import IMAGES


def test_paired_differences_are_per_sample_differences_with_intervals(evaluated):
    report, samples = evaluated["report"], read_samples(evaluated["out"])
    for method in ("ours", "ours_post"):
        for baseline in ("telea", "navier_stokes", "mean_fill"):
            for kind in ("rect", "freeform"):
                diffs = [s["scores"][method]["l1_hole"] - s["scores"][baseline]["l1_hole"]
                         for s in samples if s["kind"] == kind]
                got = report["paired"][method][baseline][kind]["l1_hole"]
                want = metrics_lib.mean_ci(diffs)
                assert got["count"] == len(diffs) == IMAGES * MASKS
                for key in ("mean", "ci_low", "ci_high"):
                    assert got[key] == pytest.approx(want[key], abs=1e-5)
                assert got["better"] == (got["ci_high"] < 0)
                assert got["excludes_zero"] == (got["ci_high"] < 0 or got["ci_low"] > 0)
                psnr = report["paired"][method][baseline][kind]["psnr"]
                assert psnr["better"] == (psnr["ci_low"] > 0)
    assert "Paired differences" in report_lib.markdown_table(report)
    assert "ours - Telea" in report_lib.format_table(report)
