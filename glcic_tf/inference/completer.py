"""Completing images with one trained model, as the authors' `inpaint.lua` does.

`Completer` wraps a model (a Keras network with its config, a training run directory, a
SavedModel or a TF Serving base path) and completes one image with any mask:

1. The mask becomes the hole at full resolution (`images`: `gray(mask) >= 0.2`, white = hole).
2. The image is scaled to the network's size (`sizing`: long side at most `maxdim`, by default
   the model's training scale; sides multiples of 4), completed and composited back at full
   resolution in TensorFlow ops (`ops.complete_full_resolution`, shared with the SavedModel's
   `serving_default`, so the CLI and TF Serving give the same pixels). With `maxdim=0` nothing
   is scaled: the network completes only crops around the holes (`regions`).
3. Post-processing (on by default, Section 4 of the paper; `postprocessing`): OpenCV's fast
   marching and Poisson blending per hole, or the same in TensorFlow ops ("in-graph", what an
   export with in-graph post-processing serves). Only hole pixels change.

Precision: `Completer.from_model(..., precision="bfloat16")` (and bf16 exports) fold batch norm
into the convolutions and compute in bfloat16 except a few float32 layers
(`glcic_tf.networks.folding`).

Usage:
  completer = Completer.from_path("runs/demo")        # run dir, SavedModel or serving base path
  out = completer.complete(load_image("in.png"), load_mask("mask.png"))
  save_image("out.png", out)
  full = completer.complete(load_image("big.jpg"), load_mask("big_mask.png"), maxdim=0)

(`load_image`, `load_mask`, `save_image`: `glcic_tf.inference.images`; folders of files:
`glcic_tf.inference.files.complete_files`.)
"""

from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import numpy as np

from glcic_tf.inference import postprocessing
from glcic_tf.inference.images import HOLE_THRESHOLD, CompletionError, as_hole, as_rgb_uint8
from glcic_tf.inference.ops import CompleteFn, complete_full_resolution, keras_complete_fn
from glcic_tf.inference.ops import to_uint8_tf
from glcic_tf.inference.regions import CONTEXT_MARGIN, DEFAULT_REGION_PIXELS, complete_regions
from glcic_tf.inference.sizing import default_maxdim, network_size, scale_warning
from glcic_tf.networks.folding import fold_batch_norm

PRECISIONS = ("float32", "bfloat16")


class Completer:
    """Completes images with one model: a Keras network, a training run or a SavedModel.

    Build it with `from_model`, `from_run_dir`, `from_saved_model` or `from_path`, then call
    `complete(image, mask)`.
    """

    def __init__(self, config, complete_fn: CompleteFn, *, source: str, step: int | None = None,
                 precision: str | None = None, maxdim: int | None = None):
        """Wraps a batched `complete_fn` (see `keras_complete_fn`); prefer the from_* builders.

        `precision` ("float32", "bfloat16" or None = unknown) is for information only.
        `maxdim`: the default of `complete(maxdim=None)`; None = `default_maxdim(config)`.
        """
        import tensorflow as tf

        self.config = config
        self.default_maxdim = int(maxdim) if maxdim else default_maxdim(config)
        self.warn: Callable[[str], None] = _warn  # scale warnings (see `scale_warning`)
        self.source = source
        self.step = step
        self.precision = precision
        self._complete_fn = complete_fn

        def make_run(in_graph: bool):
            from glcic_tf.inference import poisson

            @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                          tf.TensorSpec([None, None], tf.bool),
                                          tf.TensorSpec([], tf.int32)])
            def run(image, hole, maxdim):
                image_f = tf.cast(image, tf.float32) / 255.0
                hole_f = tf.cast(hole, tf.float32)[..., tf.newaxis]
                out = complete_full_resolution(image_f, hole_f, complete_fn, maxdim)
                if in_graph:  # what an export with in-graph post-processing serves
                    out = poisson.postprocess_image(out, hole_f)
                return to_uint8_tf(out)

            return run

        self._run = make_run(False)
        self._run_in_graph = make_run(True)

        # Region by region (maxdim=0): one trace for any crop size.
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                      tf.TensorSpec([None, None, None, 1], tf.float32)])
        def run_crop(image, hole):
            return tf.cast(complete_fn(image, hole), tf.float32)

        self._run_crop = run_crop

    @classmethod
    def from_model(cls, config, model, *, source: str = "keras model", step: int | None = None,
                   precision: str = "float32", fold: bool = False,
                   float32_layers: Sequence[str] | None = None) -> "Completer":
        """A Keras completion network with the config it was trained with (`config.data`).

        Args:
          precision: "float32", or "bfloat16" (implies `fold`): computes in bf16 except the
            convolutions in `float32_layers`.
          fold: fold batch norm into the convolutions (faster; float rounding differences).
          float32_layers: with bfloat16, the convolutions kept in float32; None =
            `folding.BFLOAT16_FLOAT32_LAYERS` (first conv, conv2 and the last two convs),
            () = all bf16.
        """
        if precision not in PRECISIONS:
            raise CompletionError(f"precision must be float32 or bfloat16, got {precision!r}")
        if fold or precision == "bfloat16":
            model = fold_batch_norm(model, precision, float32_layers=float32_layers)
        return cls(config, keras_complete_fn(model, config.data), source=source, step=step,
                   precision=precision)

    @classmethod
    def from_run_dir(cls, run_dir: str, precision: str = "float32") -> "Completer":
        """The latest checkpoint of a training run directory (see `glcic_tf.training.runs`).

        Args:
          precision: "float32" or "bfloat16" (see `from_model`).
        """
        from glcic_tf.training import runs

        if precision not in PRECISIONS:
            raise CompletionError(f"precision must be float32 or bfloat16, got {precision!r}")
        try:
            config, model, step = runs.load_completion_network(run_dir)
        except FileNotFoundError as e:
            raise CompletionError(str(e)) from e
        return cls.from_model(config, model, source=f"run {run_dir} (step {step})", step=step,
                              precision=precision)

    @classmethod
    def from_saved_model(cls, path: str, precision: str | None = None) -> "Completer":
        """A SavedModel written by `glcic_tf.inference.export` (its `complete` signature).

        Args:
          path: the SavedModel directory.
          precision: None, or the precision the caller expects: a SavedModel computes in the
            precision it was exported with (`assets/export.json`), so a different one raises
            CompletionError (re-export with that precision, or complete from the run dir).
        """
        import tensorflow as tf

        from glcic_tf.config import GLCICConfig

        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise CompletionError(f"{path}: not a SavedModel (no saved_model.pb)")
        loaded = tf.saved_model.load(path)
        if "complete" not in loaded.signatures:
            raise CompletionError(f"{path}: SavedModel has no 'complete' signature "
                                  f"(has {sorted(loaded.signatures)})")
        signature = loaded.signatures["complete"]
        config_file = os.path.join(path, "assets", "config.json")
        config = GLCICConfig.load(config_file) if os.path.isfile(config_file) else None
        if precision is not None and precision not in PRECISIONS:
            raise CompletionError(f"precision must be float32 or bfloat16, got {precision!r}")
        info = {}
        info_file = os.path.join(path, "assets", "export.json")
        if os.path.isfile(info_file):
            with open(info_file) as f:
                info = json.load(f)
        exported = info.get("precision")
        if precision is not None and precision != exported:
            raise CompletionError(
                f"{path}: this SavedModel computes in {exported or 'an unknown precision'} "
                f"(its assets/export.json), not {precision}; the precision of a SavedModel is "
                f"fixed at export: omit --precision, export with --precision {precision}, or "
                f"complete from the training run directory")

        def fn(image, hole):
            return signature(image=image, mask=hole)["completed"]

        completer = cls(config, fn, source=f"SavedModel {path}", step=info.get("step"),
                        precision=exported, maxdim=info.get("maxdim"))
        completer._loaded = loaded  # keep the restored variables alive
        return completer

    @classmethod
    def from_path(cls, path: str, precision: str | None = None) -> "Completer":
        """A run dir, a SavedModel dir, or a TF Serving base path (its highest version).

        Args:
          path: the model directory.
          precision: "float32" or "bfloat16" for a run dir (None = float32); for a SavedModel
            None or the precision it was exported with (see `from_saved_model`).
        """
        from glcic_tf.training import runs

        if precision is not None and precision not in PRECISIONS:
            raise CompletionError(f"precision must be float32 or bfloat16, got {precision!r}")
        if not os.path.isdir(path):
            raise CompletionError(f"{path}: model directory not found")
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return cls.from_saved_model(path, precision)
        if runs.is_run_dir(path):
            return cls.from_run_dir(path, precision or "float32")
        versions = [int(n) for n in os.listdir(path) if n.isdigit()
                    and os.path.isfile(os.path.join(path, n, "saved_model.pb"))]
        if versions:
            return cls.from_saved_model(os.path.join(path, str(max(versions))), precision)
        raise CompletionError(
            f"{path}: not a training run dir (config.json + checkpoints/), a SavedModel "
            f"(saved_model.pb) or a TF Serving base path (integer version subdirectories)")

    def complete(self, image: np.ndarray, mask: np.ndarray, *, postprocess: bool | str = True,
                 maxdim: int | None = None, name: str = "image", mask_name: str = "mask",
                 context_margin: int = CONTEXT_MARGIN,
                 max_region_pixels: int = DEFAULT_REGION_PIXELS) -> np.ndarray:
        """Completes the holes of one image.

        Args:
          image: uint8 [H, W, 3] RGB (gray [H, W] and RGBA are accepted).
          mask: [H, W] bool, or float in [0, 1] / uint8 with >= 0.2 (of 1 / 255) = hole.
          postprocess: "opencv" (or True): fast marching + Poisson blending per hole with
            OpenCV (the paper's post-processing); "in-graph": the same in TensorFlow ops, as
            a SavedModel exported with it serves (`glcic_tf.inference.poisson`); "none" (or
            False).
          maxdim: the long side is scaled down to this for the network when larger; 0 = no
            scaling: full resolution, completing only crops around the holes
            (`complete_regions`), with memory bounded by `max_region_pixels`. None: the
            model's default (`self.default_maxdim`: the export's, else `default_maxdim`).
          name, mask_name: how errors refer to the image and the mask (e.g. file paths).
          context_margin, max_region_pixels: with maxdim=0, the context kept on each side of
            the holes and the most pixels of one network pass (see `plan_regions`).

        Returns:
          uint8 [H, W, 3]: the completed image, equal to `image` outside the hole.

        Raises:
          CompletionError: bad shapes or dtypes, mask size differs from the image, empty mask.
        """
        mode = postprocessing.postprocess_mode(postprocess)
        image = as_rgb_uint8(image, name)
        hole = as_hole(mask, mask_name)
        if hole.shape != image.shape[:2]:
            raise CompletionError(
                f"{mask_name}: mask size {hole.shape[1]}x{hole.shape[0]} (WxH) differs from "
                f"image size {image.shape[1]}x{image.shape[0]} of {name}")
        if not hole.any():
            raise CompletionError(f"{mask_name}: empty mask (no pixel >= {HOLE_THRESHOLD}); "
                                  "white marks the hole")
        if maxdim is None:
            maxdim = self.default_maxdim
        if maxdim != 0 and maxdim < 4:
            raise CompletionError(f"maxdim must be >= 4, or 0 for full resolution, got {maxdim}")
        net_h, net_w = (image.shape[:2] if maxdim == 0
                        else network_size(image.shape[0], image.shape[1], maxdim))
        ys, xs = np.nonzero(hole)
        scale = net_h / image.shape[0]
        box = (int(round((ys.max() - ys.min() + 1) * scale)),
               int(round((xs.max() - xs.min() + 1) * scale)))
        message = scale_warning(self.config, net_h, net_w, box, name)
        if message:
            self.warn(message)
        if maxdim == 0:
            out = complete_regions(image, hole, self._run_crop, margin=context_margin,
                                   max_pixels=max_region_pixels,
                                   postprocess=mode == "opencv")
            if mode == "in-graph":
                out = np.where(hole[..., None], postprocessing.postprocess_in_graph(out, hole),
                               image)
            return out
        run = self._run_in_graph if mode == "in-graph" else self._run
        out = run(image, hole, np.int32(maxdim)).numpy()
        out = np.where(hole[..., None], out, image)
        if mode == "opencv":
            out = postprocessing.postprocess(out, hole)
        return out


def _warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
