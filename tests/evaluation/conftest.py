"""Shared by the evaluation tests: held-out shards, a tiny run directory (width 1/16, 32 px)
scored once, and its SavedModel export. Session-scoped and read-only: each is built the first
time a test asks for it (once for all pytest-xdist workers: `helpers.shared.built_once`)."""

import json
import os

import pytest

from helpers.evaluation import MASKS
from helpers.runs import STEP, make_run_dir, write_shards
from helpers.shared import built_once


@pytest.fixture(scope="session")
def eval_shards(tmp_path_factory):
    """A TFRecord shard of `helpers.runs.IMAGES` smooth synthetic photos with keys."""
    with built_once(tmp_path_factory, "eval_shards") as (folder, build):
        pattern = str(folder / "val-00000-of-00001.tfrecord")
        if build:
            write_shards(pattern)
    return pattern


@pytest.fixture(scope="session")
def evaluated(eval_shards, tmp_path_factory):
    """`helpers.runs.make_run_dir` (seed 0) evaluated on `eval_shards` with MASKS masks per
    image, every method, a contact sheet of 32 px cells. Returns {"pattern", "run_dir",
    "config", "model", "report", "out"}."""
    from glcic_tf.evaluation import evaluate as evaluation
    from glcic_tf.training import runs

    with built_once(tmp_path_factory, "evaluation") as (root, build):
        run_dir = str(root / "run")
        out = str(root / "eval_run")
        if build:
            config, model = make_run_dir(run_dir, seed=0)
            report = evaluation.evaluate(run_dir, eval_shards, out, masks_per_image=MASKS,
                                         batch_size=2, cell_size=32, log=None)
        else:  # another xdist worker wrote them
            config, model, _ = runs.load_completion_network(run_dir)
            with open(os.path.join(out, evaluation.REPORT_NAME)) as f:
                report = json.load(f)
    return {"pattern": eval_shards, "run_dir": run_dir, "config": config, "model": model,
            "report": report, "out": out}


@pytest.fixture(scope="session")
def evaluated_export(evaluated, tmp_path_factory):
    """The network of `evaluated` exported as version 1 of a TF Serving base path (float32,
    step `helpers.runs.STEP`; no in-graph post-processing: evaluation reads the `complete`
    signature, which never post-processes). Returns {"base", "version_dir"}."""
    from glcic_tf.inference import export

    with built_once(tmp_path_factory, "evaluated_export") as (folder, build):
        base = str(folder / "models" / "glcic")
        if build:
            version_dir = export.export_saved_model(evaluated["model"], evaluated["config"],
                                                    base, step=STEP, postprocess="none")
        else:  # another xdist worker wrote it
            version_dir = os.path.join(base, "1")
    return {"base": base, "version_dir": version_dir}
