"""glcic_tf.evaluation.loader: a run directory, a SavedModel and a TF Serving base path give the
same scores; anything else is a clear error."""

import pytest

from glcic_tf.evaluation import evaluate as evaluation
from glcic_tf.evaluation import loader
from glcic_tf.evaluation import report as report_lib

from helpers.evaluation import MASKS
from helpers.runs import STEP


@pytest.mark.parametrize("which", ["version_dir", "base"])
def test_saved_model_and_base_path_match_the_run_dir(evaluated, evaluated_export, tmp_path,
                                                     which):
    out = str(tmp_path / which)
    # Only the network's figures are compared: no baselines or post-processing to score.
    report = evaluation.evaluate(evaluated_export[which], evaluated["pattern"], out,
                                 masks_per_image=MASKS, mask_kinds=("rect",), contact_rows=0,
                                 baselines=False, postprocess=False, log=None)
    assert report["model"]["kind"] == ("saved_model" if which == "version_dir" else "base_path")
    assert report["model"]["version"] == 1 and report["model"]["step"] == STEP
    assert report["model"]["precision"] == "float32"
    for metric in report_lib.METRICS:
        want = evaluated["report"]["results"]["ours"]["rect"][metric]["mean"]
        got = report["results"]["ours"]["rect"][metric]["mean"]
        # Same weights; only float rounding (and a rare uint8 rounding flip) differs.
        assert got == pytest.approx(want, rel=1e-3, abs=1e-2), metric


def test_load_model_errors(tmp_path):
    with pytest.raises(loader.EvaluationError, match="directory not found"):
        loader.load_model(str(tmp_path / "missing"))
    with pytest.raises(loader.EvaluationError, match="not a training run directory"):
        loader.load_model(str(tmp_path))
