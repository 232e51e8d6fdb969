"""Imports the authors' released Torch7 completion network into a glcic_tf run directory.

Iizuka et al. released `completionnet_places2.t7`, `completionnet_places2_freeform.t7` and
`completionnet_celeba.t7` (Torch7 binary serialization, `torch.save`). Each holds a table
`{model = nn.Sequential(...), mean = torch.Tensor(3)}`; the official `inpaint.lua` subtracts `mean`
from the RGB image in [0, 1], sets the hole to 0 and feeds `cat(image, mask)` to `model`. This
module never downloads them: the user does.

`import_torch7` reads the file (`glcic_tf.torch7.reader`), checks its 17 (de)convolutions and 16
batch norms (`glcic_tf.torch7.completionnet`) against
`glcic_tf.networks.models.completion_network` (`padding="torch"`), copies the weights and writes
a run directory that `glcic_tf.training.runs.load_completion_network` (export, completion,
fine-tuning) loads. It then runs `glcic_tf.torch7.reference.reference_forward`, a NumPy forward
pass with Torch's semantics, on a test image and fails if the Keras network disagrees.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from glcic_tf.torch7.completionnet import Layer, TorchCompletionNet, parse_completionnet
from glcic_tf.torch7.reader import loads_t7, read_bytes
from glcic_tf.torch7.reference import reference_forward
from glcic_tf.torch7.values import Torch7Error


def keras_kernel(layer: Layer) -> np.ndarray:
    """Torch weight -> Keras kernel.

    Conv2D: [out, in, kh, kw] -> [kh, kw, in, out]. Conv2DTranspose: [in, out, kh, kw] ->
    [kh, kw, out, in], no spatial flip: TF's conv2d_transpose scatters input pixel (y, x) with
    kernel tap (i, j) to output (y * s - pad + i, x * s - pad + j), exactly as Torch's
    SpatialFullConvolution does (tests/torch7/test_importer.py proves both against NumPy
    references).
    """
    return np.ascontiguousarray(layer.arrays["weight"].transpose(2, 3, 1, 0), np.float32)


def set_completion_weights(completion, net: TorchCompletionNet) -> None:
    """Copies the Torch layers into a `models.completion_network` with the same width.

    Raises:
      Torch7Error: a Keras variable's shape differs from the Torch tensor's.
    """
    for layer in net.layers:
        if layer.kind in ("conv", "deconv"):
            target = completion.get_layer(layer.name)
            pairs = [(target.kernel, keras_kernel(layer)), (target.bias, layer.arrays["bias"])]
        elif layer.kind == "bn":
            target = completion.get_layer(layer.name)
            a = layer.arrays
            pairs = [(target.gamma, a["weight"]), (target.beta, a["bias"]),
                     (target.moving_mean, a["running_mean"]),
                     (target.moving_variance, a["running_var"])]
        else:
            continue
        for variable, value in pairs:
            if tuple(variable.shape) != value.shape:
                raise Torch7Error(f"{layer.name}: Keras variable {variable.path} has shape "
                                  f"{tuple(variable.shape)}, the Torch tensor {value.shape}")
            variable.assign(np.asarray(value, np.float32))


def torch7_config(net: TorchCompletionNet, preset: str = "paper", mean_pixel=None):
    """The GLCICConfig of an imported network: `preset` with padding "torch", the "torch7"
    input convention, the stored mean and the file's batch-norm epsilon and momentum."""
    from glcic_tf.config import ConfigError, get_preset

    mean = net.mean if mean_pixel is None else tuple(float(v) for v in mean_pixel)
    if mean is None:
        raise Torch7Error("the file stores no mean pixel; pass mean_pixel (RGB in [0, 1])")
    try:
        return get_preset(preset).override({
            "name": "torch7-import",
            "model.width": float(net.width),
            "model.padding": "torch",
            "model.batch_norm_epsilon": float(net.eps),
            "model.batch_norm_momentum": 1.0 - float(net.momentum),
            "data.input_convention": "torch7",
            "data.mean_pixel": list(mean),
        })
    except ConfigError as e:
        raise Torch7Error(f"the imported network does not fit preset {preset!r}: {e}") from e


def verify_import(completion, net: TorchCompletionNet, config, *, height: int = 32,
                  width: int = 40, seed: int = 0) -> float:
    """Max |Keras - NumPy Torch reference| on a seeded image with a rectangular hole.

    The Keras input goes through `glcic_tf.data.masks.network_inputs` (the config's input
    convention); the reference gets Torch's `cat((image - mean) * (1 - mask), mask)`.
    """
    from glcic_tf.data import masks

    rng = np.random.default_rng(seed)
    image = rng.random((1, height, width, 3)).astype(np.float32)
    hole = np.zeros((1, height, width, 1), np.float32)
    hole[:, height // 4:height // 4 + height // 2, width // 3:width // 3 + width // 2] = 1.0
    keras_out = np.asarray(completion(masks.network_inputs(image, hole, config.data),
                                      training=False))
    mean = np.asarray(config.data.mean_pixel, np.float32)
    torch_in = np.concatenate([(image - mean) * (1 - hole), hole], -1).transpose(0, 3, 1, 2)
    ref = reference_forward(net, torch_in).transpose(0, 2, 3, 1)
    return float(np.max(np.abs(keras_out - ref)))


IMPORT_INFO_NAME = "torch7_import.json"


def import_torch7(t7_path: str, run_dir: str, *, preset: str = "paper", mean_pixel=None,
                  long_size: int = 8, verify: bool = True, tolerance: float = 1e-3) -> str:
    """Imports a released Torch7 completion network into a glcic_tf run directory.

    Writes `config.json` (the preset with model.padding "torch", data.input_convention
    "torch7", data.mean_pixel = the stored mean, model.width from the file), a checkpoint
    `tf.train.Checkpoint(step=0, completion=C)` under `checkpoints/` and `torch7_import.json`
    (source, sha256, layers, mean, verification). `runs.load_completion_network(run_dir)` then
    returns the network.

    Args:
      t7_path: e.g. completionnet_places2.t7 (the user downloads it; nothing is fetched here).
      run_dir: new run directory (must not already hold a config or checkpoints).
      preset: config preset the imported run starts from.
      mean_pixel: overrides (or supplies, when the file has none) the mean pixel.
      long_size: C long size where the file was written (8, or 4 for Windows files).
      verify: compare the Keras network with `reference_forward` and fail above `tolerance`.
      tolerance: max absolute output difference accepted by `verify`.

    Returns:
      run_dir.

    Raises:
      FileNotFoundError: no such file.
      FileExistsError: run_dir is already a run directory.
      Torch7Error: the file is not a Torch7 file or not the completion network (the message
        names the layer, and the expected and found class or shape).
    """
    import tensorflow as tf

    from glcic_tf.networks import models
    from glcic_tf.training import runs

    for existing in (runs.config_path(run_dir), runs.checkpoint_dir(run_dir)):
        if tf.io.gfile.exists(existing):
            raise FileExistsError(f"{run_dir} already holds {os.path.basename(existing)}; "
                                  "import into a new directory")
    data = read_bytes(t7_path)
    net = parse_completionnet(loads_t7(data, long_size=long_size, source=t7_path), t7_path)
    config = torch7_config(net, preset, mean_pixel)
    completion = models.completion_network(config.model.width, config.model)
    set_completion_weights(completion, net)
    max_diff = None
    if verify:
        max_diff = verify_import(completion, net, config)
        if not max_diff <= tolerance:
            raise Torch7Error(f"{t7_path}: the imported Keras network differs from the Torch "
                              f"reference by {max_diff:.3g} > {tolerance} (max abs output)")

    saved = runs.save_completion_run(run_dir, config, completion, step=0)
    info = {
        "source": os.path.abspath(t7_path) if "://" not in t7_path else t7_path,
        "sha256": hashlib.sha256(data).hexdigest(),
        "checkpoint": saved,
        "mean_pixel": list(config.data.mean_pixel),
        "width": net.width,
        "batch_norm_epsilon": net.eps,
        "parameters": int(net.num_parameters),
        "layers": [{"name": layer.name, "kind": layer.kind,
                    "shape": list(layer.arrays["weight"].shape)}
                   for layer in net.layers if layer.kind in ("conv", "deconv")],
        "max_abs_diff_vs_torch_reference": max_diff,
    }
    with tf.io.gfile.GFile(os.path.join(run_dir, IMPORT_INFO_NAME), "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return run_dir
