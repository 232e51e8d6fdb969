"""Loads the model to evaluate: a training run directory, a SavedModel or a TF Serving base path.

Whatever its form, the model becomes one `CompleteFn` (image and mask in, the network's
composite out) and the GLCICConfig it was trained with, which gives the evaluation its crop size,
hole parameters and mean pixel value, so `glcic_tf.evaluation.evaluate` scores the three forms
alike. TensorFlow, the exporter and the run-directory code are imported only when a model is
loaded.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np

# complete_fn(image float32 [B, S, S, 3] in [0, 1], mask float32 [B, S, S, 1]) -> composite
CompleteFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class EvaluationError(ValueError):
    """The model or data cannot be evaluated; the message names the path and the problem."""


def load_model(path: str) -> tuple[object, CompleteFn, dict]:
    """Loads a run directory, a SavedModel directory or a TF Serving base path.

    Args:
      path: a training run directory (config.json + checkpoints/, see
        `glcic_tf.training.runs`), a SavedModel written by `glcic_tf.inference.export` (has
        saved_model.pb and assets/config.json), or a base path whose integer subdirectories are
        such SavedModels (the highest is used).

    Returns:
      (config, complete_fn, info): the GLCICConfig the model was trained with; complete_fn(image
      [B, S, S, 3] float32 in [0, 1], mask [B, S, S, 1] 0/1) -> numpy float32 [B, S, S, 3], the
      network's output inside the hole and `image` outside (S a multiple of 4); info = {"kind":
      "run_dir" | "saved_model" | "base_path", "path", "version", "step", "precision",
      "source"}.

    Raises:
      EvaluationError: the path is none of the three, or a SavedModel lacks the `complete`
        signature or its config.
    """
    from glcic_tf.inference import export
    from glcic_tf.training import runs

    if not os.path.isdir(path):
        raise EvaluationError(f"--model {path}: directory not found")
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return _load_saved_model(path, kind="saved_model")
    if runs.is_run_dir(path):
        return _load_run_dir(path)
    versions = [v for v in export.existing_versions(path)
                if os.path.isfile(os.path.join(path, str(v), "saved_model.pb"))]
    if versions:
        return _load_saved_model(os.path.join(path, str(versions[-1])), kind="base_path",
                                 base_path=path)
    raise EvaluationError(
        f"--model {path}: not a training run directory (config.json + checkpoints/), a "
        f"SavedModel (saved_model.pb) or a TF Serving base path (integer version "
        f"subdirectories holding saved_model.pb)")


def _load_run_dir(path: str):
    import tensorflow as tf

    from glcic_tf.inference import ops
    from glcic_tf.training import runs

    try:
        config, model, step = runs.load_completion_network(path)
    except FileNotFoundError as e:
        raise EvaluationError(str(e)) from e
    fn = tf.function(ops.keras_complete_fn(model, config.data), reduce_retracing=True)

    def complete_fn(image, mask):
        return fn(tf.constant(image, tf.float32), tf.constant(mask, tf.float32)).numpy()

    info = {"kind": "run_dir", "path": path, "version": None, "step": step,
            "precision": "float32", "checkpoint": runs.latest_checkpoint(path),
            "source": f"run {path} (step {step})"}
    return config, complete_fn, info


def _load_saved_model(path: str, *, kind: str, base_path: str | None = None):
    import tensorflow as tf

    from glcic_tf.config import GLCICConfig

    config_file = os.path.join(path, "assets", "config.json")
    if not os.path.isfile(config_file):
        raise EvaluationError(f"{path}: SavedModel has no assets/config.json (export it with "
                              f"glcic_tf.inference.export / pipelines/export.py)")
    config = GLCICConfig.load(config_file)
    loaded = tf.saved_model.load(path)
    if "complete" not in loaded.signatures:
        raise EvaluationError(f"{path}: SavedModel has no 'complete' signature (has "
                              f"{sorted(loaded.signatures)})")
    signature = loaded.signatures["complete"]
    export_info = {}
    info_file = os.path.join(path, "assets", "export.json")
    if os.path.isfile(info_file):
        with open(info_file) as f:
            export_info = json.load(f)
    name = os.path.basename(path.rstrip("/"))
    version = int(name) if name.isdigit() else export_info.get("version")

    def complete_fn(image, mask):
        out = signature(image=tf.constant(image, tf.float32), mask=tf.constant(mask, tf.float32))
        return out["completed"].numpy()

    complete_fn.loaded = loaded  # keeps the restored variables alive
    info = {"kind": kind, "path": base_path or path, "saved_model": path, "version": version,
            "step": export_info.get("step"), "precision": export_info.get("precision"),
            "source": export_info.get("source", f"SavedModel {path}")}
    return config, complete_fn, info
