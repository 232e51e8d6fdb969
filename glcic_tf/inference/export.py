"""SavedModel export of the completion network for TensorFlow Serving.

Layout (what TF Serving's file system source expects): `BASE/glcic/VERSION/` with
`saved_model.pb`, `variables/` and `assets/`, VERSION a positive integer (default: one more than
the highest existing version). A version is written into a hidden temporary folder beside it and
renamed into place, so TF Serving never sees a half-written version; an existing version is never
overwritten.

Signatures (`glcic_tf.inference.signatures`): `serving_default` (encoded images in, PNG out, any
size), `serving_float` (the same on float tensors) and `complete` (the network alone). They scale
the long side down to `maxdim`: by default 500 for the paper's 256 px crops, as the 2018 release
of the official `inpaint.lua` (its 2020 version uses 600), scaled with the training crop for
other presets (`sizing.default_maxdim`).

Post-processing (`postprocess`, recorded in `export.json` and the model card): "in-graph"
(default) runs the paper's post-processing in stock TensorFlow ops (`glcic_tf.inference.poisson`:
a ring fill of the hole's border in place of Telea's fast marching, then Poisson blending of the
completion into it, on the holes' bounding box), so TF Serving and `tf.saved_model.load` users
get the picture `pipelines/complete.py --postprocess in-graph` gives; "none" serves the raw
composite, as exports before it did.

`assets/` holds `config.json` (the resolved GLCICConfig, mean pixel value included),
`mean_pixel.json`, `export.json` (precision, maxdim, trained steps) and `model_card.md`.

With precision "bfloat16" the network computes in bf16 inside the graph (float32 output); the
signatures stay float32 / bytes. The convolutions in `folding.BFLOAT16_FLOAT32_LAYERS`
(conv1, conv2, conv10, output_conv: 9% of the FLOPs) stay in float32 by default, which keeps
the PSNR against float32 above 40 dB at 512x512 for a small share of the time
(docs/inference.md has the measurements); `float32_layers=()` gives an all-bf16 network. By
default batch norm is folded into the convolutions (`folding.FoldedNetwork`: bf16 kernels and
biases, float32 ones for the float32 layers, no float32 round trips around batch norm); with
`fold_batch_norm=False` the network is rebuilt under Keras' "mixed_bfloat16" policy instead
(bf16 compute, float32 variables; the float32 layers, with their batch norm and ReLU, get the
"float32" policy) and the trained weights are copied over. `export.json` records
`float32_layers` and every convolution's compute dtype (`layer_dtypes`). A float32 export also
folds batch norm by default, inside the graph: every call scales the Keras model's kernels and
biases by its batch norms' inference-mode affine maps (a few million multiplies against the
convolutions' billions), so the saved variables are the Keras model's, `train.py --init-from`
reads them as before, and the convolutions run with bias and ReLU fused (0.82 -> 0.90 of the
matmul peak at 512x512, docs/training_speed.md); outputs differ from the Keras model's by float
rounding (~1e-5). `fold_batch_norm=False` exports the Keras model as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Sequence

from glcic_tf.inference.images import HOLE_THRESHOLD
from glcic_tf.inference.signatures import (SIGNATURE_BYTES, SIGNATURE_FLOAT, SIGNATURE_NETWORK,
                                           build_module)
from glcic_tf.inference.sizing import default_maxdim
from glcic_tf.networks.folding import FoldedNetwork, default_float32_layers
from glcic_tf.networks.folding import fold_batch_norm as fold_batch_norm_fn

MODEL_NAME = "glcic"
EXPORT_PRECISIONS = ("float32", "bfloat16")
POSTPROCESS_MODES = ("in-graph", "none")


class ExportError(ValueError):
    """An export cannot be written (bad version, existing version, bad arguments)."""


# --- versions -------------------------------------------------------------------------------------

def existing_versions(base_path: str) -> list[int]:
    """Integer version subdirectories of a TF Serving base path, ascending."""
    if not os.path.isdir(base_path):
        return []
    return sorted(int(n) for n in os.listdir(base_path)
                  if n.isdigit() and os.path.isdir(os.path.join(base_path, n)))


def next_version(base_path: str) -> int:
    """1 + the highest existing integer version under `base_path` (1 when there is none)."""
    versions = existing_versions(base_path)
    return (versions[-1] + 1) if versions else 1


def latest_version_dir(base_path: str) -> str:
    """The highest integer version directory under `base_path`.

    Raises:
      FileNotFoundError: there is no version.
    """
    versions = existing_versions(base_path)
    if not versions:
        raise FileNotFoundError(f"{base_path}: no integer version subdirectory")
    return os.path.join(base_path, str(versions[-1]))


# --- the network ----------------------------------------------------------------------------------

def _bfloat16_copy(model, config, float32_layers: Sequence[str] = ()):
    """The same network computing in bfloat16 (float32 variables), trained weights copied.

    The convolutions named in `float32_layers` (with their padding, batch norm and ReLU) get
    the "float32" policy, so they compute in float32 as in `folding.FoldedNetwork`.
    """
    import keras

    from glcic_tf.networks import models

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        copy = models.completion_network(config.model.width, config.model, name=model.name)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    names = {layer.name for layer in copy.layers}
    unknown = sorted(set(float32_layers) - names)
    if unknown:
        raise ExportError(f"float32_layers: {unknown} are not layers of {copy.name}")
    for name in float32_layers:
        for suffix in ("_pad", "", "_bn", "_relu"):
            if name + suffix in names:
                copy.get_layer(name + suffix).dtype_policy = "float32"
    copy.set_weights(model.get_weights())
    return copy


def model_card(config, *, step: int | None, precision: str, maxdim: int, source: str,
               postprocess: str = "in-graph") -> str:
    """A short model card (Markdown) stored in the export's assets."""
    trained = (f"{step:,} training steps" if step else
               "none: freshly initialised weights, NOT TRAINED (outputs are noise)")
    mean = ", ".join(f"{v:.4f}" for v in config.data.mean_pixel)
    post = ("in the graph (`glcic_tf.inference.poisson`: ring fill of the hole's border, then "
            "Poisson blending, stock TensorFlow ops)" if postprocess == "in-graph" else
            "none (the raw composite; `pipelines/complete.py` post-processes)")
    return f"""# GLCIC completion network ({config.name} preset)

**What**: the completion network of *Globally and Locally Consistent Image Completion*
(Iizuka, Simo-Serra, Ishikawa, SIGGRAPH 2017), implemented in glcic_tf. It fills holes in
images: white in the mask (>= {HOLE_THRESHOLD}) is the hole.

- Source: {source}
- Trained steps: {trained}
- Preset: `{config.name}`; width {config.model.width}; training crops {config.data.image_size} px,
  holes {config.masks.hole_min}-{config.masks.hole_max} px ({config.masks.kind})
- Input convention: `{config.data.input_convention}`, mean pixel (RGB, [0, 1]): {mean}
- Precision: {precision} (signature inputs and outputs are float32 / bytes)
- maxdim: {maxdim} (serving_default scales the long side down to this)
- Post-processing (`serving_default`, `serving_float`): {post}

## Signatures

- `serving_default`: `image_bytes`, `mask_bytes` (tf.string [None], PNG/JPEG/BMP/GIF) ->
  `completed_bytes` (tf.string [None], PNG, same size as the image). Any sizes; per-element
  masks must match their image's size (else INVALID_ARGUMENT). Post-processed as above.
- `serving_float`: the same on float32 tensors: `image` ([None, None, None, 3], [0, 1]),
  `mask` ([None, None, None, 1], >= {HOLE_THRESHOLD} = hole) -> `completed`.
- `complete`: the network alone, never post-processed: `image`, `mask` as above ->
  `completed` (float32 [None, None, None, 3]); H and W multiples of 4; no resizing.

## Intended use

Research and demos of image completion (object removal, restoration of small regions) on
natural images similar to the training data.

## Limitations

- Trained on {config.data.image_size} px crops with holes of {config.masks.hole_min}-
  {config.masks.hole_max} px; much larger holes, or images far from the training data (faces,
  text, drawings), complete poorly.
- Images are completed at most {maxdim} px on the long side and upsampled back, so fine
  texture inside large-image holes is blurry.
- The in-graph post-processing replaces OpenCV's fast marching (Telea) by a ring fill of the
  hole's border; its Poisson blend is OpenCV's (`docs/postprocess.md` compares the two).
- Completions are plausible guesses, not recovered content: do not use them as evidence.
"""


def export_saved_model(completion_model, config, base_path: str, *, version: int | None = None,
                       precision: str = "float32", step: int | None = None,
                       maxdim: int | None = None, source: str = "keras model",
                       fold_batch_norm: bool | None = None,
                       float32_layers: Sequence[str] | None = None,
                       postprocess: str = "in-graph") -> str:
    """Writes `base_path/VERSION/` (a SavedModel with the three signatures) atomically.

    Args:
      completion_model: the completion network (float32 Keras model).
      config: the GLCICConfig it was trained with (input convention, mean pixel, width).
      base_path: TF Serving base path, e.g. `models/glcic` (created if needed; local disk).
      version: positive integer; default 1 + the highest existing version.
      precision: "float32" or "bfloat16" (bf16 compute inside the graph).
      step: training steps of the weights (for the model card; None = untrained).
      maxdim: long side the serving signature scales images down to (None:
        `sizing.default_maxdim(config)`, the official 500 px scaled with the crop size).
      source: where the weights come from (for the model card).
      fold_batch_norm: fold batch norm into the convolutions (default True). float32 folds
        inside the graph from the Keras variables (saved as a Keras export's are, so the
        export can be trained from); bfloat16 folds into bf16 kernels and biases.
      float32_layers: with bfloat16, the convolutions that compute in float32; None =
        `folding.BFLOAT16_FLOAT32_LAYERS`, () = all bf16. Recorded in `export.json`.
      postprocess: "in-graph" (the paper's post-processing inside `serving_default` and
        `serving_float`) or "none". Recorded in `export.json`.

    Returns:
      The version directory written.

    Raises:
      ExportError: bad precision / version / maxdim, or the version already exists.
    """
    import tensorflow as tf

    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    if postprocess not in POSTPROCESS_MODES:
        raise ExportError(f"postprocess must be one of {POSTPROCESS_MODES}, got {postprocess!r}")
    if maxdim is None:
        maxdim = default_maxdim(config)
    if not isinstance(maxdim, int) or maxdim < 4:
        raise ExportError(f"maxdim must be an integer >= 4, got {maxdim!r}")
    if version is None:
        version = next_version(base_path)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be a positive integer, got {version!r}")
    final = os.path.join(base_path, str(version))
    if os.path.exists(final):
        raise ExportError(f"{final} already exists: refusing to overwrite version {version} "
                          f"(existing versions: {existing_versions(base_path)}; omit --version "
                          f"to write version {next_version(base_path)})")
    os.makedirs(base_path, exist_ok=True)

    if fold_batch_norm is None:
        fold_batch_norm = True
    if float32_layers is None:
        float32_layers = default_float32_layers(precision)
    float32_layers = tuple(float32_layers) if precision == "bfloat16" else ()
    if fold_batch_norm:
        try:
            # float32 folds live (from the Keras variables, which are what is saved, so the
            # export stays trainable from); bfloat16 folds into bf16 copies.
            model = fold_batch_norm_fn(completion_model, precision,
                                       float32_layers=float32_layers,
                                       live=precision == "float32")
        except ValueError as e:
            raise ExportError(str(e)) from e
    elif precision == "bfloat16":
        model = _bfloat16_copy(completion_model, config, float32_layers)
    else:
        model = completion_model
    if isinstance(model, FoldedNetwork):
        layer_dtypes = dict(model.layer_dtypes)
    else:
        layer_dtypes = {layer.name: layer.compute_dtype for layer in model.layers
                        if type(layer).__name__ in ("Conv2D", "Conv2DTranspose")}
    module = build_module(model, config, maxdim, postprocess)
    # A hidden sibling: TF Serving only loads all-digit directory names.
    staging = os.path.join(base_path, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    asset_src = tempfile.mkdtemp(prefix="glcic-assets-")
    try:
        files = {
            "config.json": config.to_json() + "\n",
            "mean_pixel.json": json.dumps({"mean_pixel": list(config.data.mean_pixel),
                                           "input_convention": config.data.input_convention},
                                          indent=2) + "\n",
            "export.json": json.dumps({"precision": precision, "maxdim": maxdim, "step": step,
                                       "fold_batch_norm": bool(fold_batch_norm),
                                       "float32_layers": list(float32_layers),
                                       "layer_dtypes": layer_dtypes,
                                       "preset": config.name, "version": version,
                                       "source": source, "postprocess": postprocess,
                                       "signatures": [SIGNATURE_BYTES, SIGNATURE_FLOAT,
                                                      SIGNATURE_NETWORK]},
                                      indent=2) + "\n",
            "model_card.md": model_card(config, step=step, precision=precision + (
                f" ({', '.join(float32_layers)} in float32)" if float32_layers else ""),
                                        maxdim=maxdim,
                                        source=source, postprocess=postprocess),
        }
        assets = []
        for name, text in files.items():
            path = os.path.join(asset_src, name)
            with open(path, "w") as f:
                f.write(text)
            assets.append(tf.saved_model.Asset(path))
        module.assets = assets
        signatures = {
            SIGNATURE_BYTES: module.serving_default.get_concrete_function(),
            SIGNATURE_FLOAT: module.serving_float.get_concrete_function(),
            SIGNATURE_NETWORK: module.complete.get_concrete_function(),
        }
        tf.saved_model.save(module, staging, signatures=signatures)
        if os.path.exists(final):  # another writer won the race
            raise ExportError(f"{final} appeared while exporting: refusing to overwrite")
        os.rename(staging, final)
    finally:
        shutil.rmtree(asset_src, ignore_errors=True)
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return final


def export_from_run(run_dir: str, base_path: str, **kwargs) -> str:
    """Exports the latest checkpoint of a training run; kwargs as `export_saved_model`."""
    from glcic_tf.training import runs

    config, model, step = runs.load_completion_network(run_dir)
    kwargs.setdefault("source", f"run {os.path.abspath(run_dir)}, step {step}")
    return export_saved_model(model, config, base_path, step=step, **kwargs)


def export_untrained(preset: str, base_path: str, **kwargs) -> str:
    """Exports freshly initialised weights of a preset (to test serving without training)."""
    from glcic_tf.config import get_preset
    from glcic_tf.networks import models

    config = get_preset(preset)
    model = models.completion_network(config.model.width, config.model)
    kwargs.setdefault("source", f"untrained {preset} preset (random initialisation)")
    return export_saved_model(model, config, base_path, step=None, **kwargs)
