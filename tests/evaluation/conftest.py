"""Shared by the evaluation tests: held-out shards, a tiny run directory (width 1/16, 32 px)
scored once, and its SavedModel export. Session-scoped and read-only: each is built the first
time a test asks for it."""

import pytest

from helpers.evaluation import MASKS
from helpers.runs import STEP, make_run_dir, write_shards


@pytest.fixture(scope="session")
def eval_shards(tmp_path_factory):
    """A TFRecord shard of `helpers.runs.IMAGES` smooth synthetic photos with keys."""
    pattern = str(tmp_path_factory.mktemp("eval_shards") / "val-00000-of-00001.tfrecord")
    write_shards(pattern)
    return pattern


@pytest.fixture(scope="session")
def evaluated(eval_shards, tmp_path_factory):
    """`helpers.runs.make_run_dir` (seed 0) evaluated on `eval_shards` with MASKS masks per
    image, every method, a contact sheet of 32 px cells. Returns {"pattern", "run_dir",
    "config", "model", "report", "out"}."""
    from glcic_tf.evaluation import evaluate as evaluation

    root = tmp_path_factory.mktemp("evaluation")
    run_dir = str(root / "run")
    config, model = make_run_dir(run_dir, seed=0)
    out = str(root / "eval_run")
    report = evaluation.evaluate(run_dir, eval_shards, out, masks_per_image=MASKS, batch_size=2,
                                 cell_size=32, log=None)
    return {"pattern": eval_shards, "run_dir": run_dir, "config": config, "model": model,
            "report": report, "out": out}


@pytest.fixture(scope="session")
def evaluated_export(evaluated, tmp_path_factory):
    """The network of `evaluated` exported as version 1 of a TF Serving base path (float32,
    step `helpers.runs.STEP`; no in-graph post-processing: evaluation reads the `complete`
    signature, which never post-processes). Returns {"base", "version_dir"}."""
    from glcic_tf.inference import export

    base = str(tmp_path_factory.mktemp("evaluated_export") / "models" / "glcic")
    version_dir = export.export_saved_model(evaluated["model"], evaluated["config"], base,
                                            step=STEP, postprocess="none")
    return {"base": base, "version_dir": version_dir}
