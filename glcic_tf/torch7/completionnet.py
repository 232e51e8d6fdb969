"""The completion network as a .t7 file stores it: checks every layer and extracts the weights.

`parse_completionnet` takes what `glcic_tf.torch7.reader.load_t7` returned (the released files'
table `{model = nn.Sequential(...), mean = torch.Tensor(3)}`, or the model alone) and checks it,
layer by layer, against the paper's Table 1 as `glcic_tf.networks.models.COMPLETION_LAYERS`
describes it: 17 (de)convolutions, each but the last followed by SpatialBatchNormalization and
ReLU, then a Sigmoid; class (nn, cudnn and cunn alike), kernel, stride, padding, dilation, weight
and bias shapes, one batch-norm epsilon. Every mismatch raises `Torch7Error` naming the layer and
what was expected and found. The result, a `TorchCompletionNet`, keeps Torch's layouts; the
importer (`glcic_tf.torch7.importer`) maps them onto Keras.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from glcic_tf.torch7.values import Table, Torch7Error, TorchObject

CONV_KINDS = ("SpatialConvolution", "SpatialConvolutionMM", "SpatialDilatedConvolution")
DECONV_KINDS = ("SpatialFullConvolution",)
BN_KINDS = ("SpatialBatchNormalization",)
CONTAINER_KINDS = ("Sequential", "gModule")
SKIPPED_KINDS = ("Identity",)
ACTIVATION_KINDS = ("ReLU", "Sigmoid")


def leaf_modules(model: Any, source: str = "model") -> list[TorchObject]:
    """The model's layers in execution order (Sequential / gModule containers flattened)."""
    if not isinstance(model, TorchObject):
        raise Torch7Error(f"{source}: expected a Torch nn module, found {type(model).__name__}")
    if model.kind in CONTAINER_KINDS:
        children = model.get("modules")
        if not isinstance(children, Table):
            raise Torch7Error(f"{source}: {model.class_name} has no 'modules' list")
        out = []
        for child in children.list():
            out += leaf_modules(child, source)
        return out
    if model.get("modules") is not None:
        raise Torch7Error(f"{source}: unsupported container {model.class_name}; the completion "
                          "network is a plain sequence (nn.Sequential)")
    return [model]


def _int(m: TorchObject, key: str, default: int | None = None) -> int | None:
    value = m.get(key, default)
    return None if value is None else int(value)


def _array(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise Torch7Error(f"{name} is a {type(value).__name__}, expected a tensor")
    return np.asarray(value, np.float64)


@dataclasses.dataclass
class Layer:
    """One imported layer, with Torch's layout (conv weight [out, in, kh, kw], full conv
    weight [in, out, kh, kw]) and Torch's hyperparameters."""

    kind: str  # "conv", "deconv", "bn", "relu", "sigmoid"
    name: str  # the Keras layer name (conv1 ... output_conv, conv1_bn ...)
    arrays: dict[str, np.ndarray]
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    eps: float = 0.0
    momentum: float = 0.1


@dataclasses.dataclass
class TorchCompletionNet:
    """The completion network read from a .t7 file: layers in order, the mean, BN settings."""

    layers: list[Layer]
    mean: tuple[float, float, float] | None
    width: float
    eps: float
    momentum: float

    @property
    def num_parameters(self) -> int:
        keys = ("weight", "bias")
        return sum(a.size for layer in self.layers for k, a in layer.arrays.items() if k in keys)


def parse_completionnet(root: Any, source: str = "model") -> TorchCompletionNet:
    """Checks a loaded .t7 object against the paper's completion network and extracts it.

    Args:
      root: what `load_t7` returned: `{model=..., mean=...}` or the model alone.
      source: file name for error messages.

    Raises:
      Torch7Error: a layer is missing, extra, of the wrong class, shape or hyperparameters.
    """
    from glcic_tf.networks import models

    mean = None
    model = root
    if isinstance(root, Table):
        if "model" not in root:
            raise Torch7Error(f"{source}: the file holds a table without a 'model' entry "
                              f"(keys: {sorted(str(k) for k in root)})")
        model = root["model"]
        if root.get("mean") is not None:
            m = _array(root["mean"], f"{source}: mean")
            if m is None or m.size != 3:
                raise Torch7Error(f"{source}: mean must have 3 values (RGB), found shape "
                                  f"{None if m is None else m.shape}")
            mean = tuple(float(v) for v in m.reshape(3))
    leaves = [m for m in leaf_modules(model, source) if m.kind not in SKIPPED_KINDS]
    known = CONV_KINDS + DECONV_KINDS + BN_KINDS + ACTIVATION_KINDS
    for i, m in enumerate(leaves):
        if m.kind not in known:
            raise Torch7Error(f"{source}: module #{i + 1} is {m.class_name}, which is not part of "
                              f"the GLCIC completion network (expected one of {list(known)})")
    convs = [m for m in leaves if m.kind in CONV_KINDS + DECONV_KINDS]
    bns = [m for m in leaves if m.kind in BN_KINDS]
    expected = models.COMPLETION_LAYERS
    if len(convs) != len(expected) or len(bns) != len(expected) - 1:
        raise Torch7Error(
            f"{source}: found {len(convs)} convolution layers and {len(bns)} batch-norm layers, "
            f"expected {len(expected)} and {len(expected) - 1} (Table 1 of the paper); classes "
            f"in order: {[m.kind for m in leaves]}")
    first_out = _int(convs[0], "nOutputPlane") or 0
    width = first_out / expected[0][5]
    if not (0 < width <= 4.0) or models.scaled(expected[0][5], width) != first_out:
        raise Torch7Error(f"{source}: layer 1 (conv1) has {first_out} output channels; "
                          f"expected a multiple of the paper's {expected[0][5]}")

    layers: list[Layer] = []
    cin = 4
    for i, (m, spec) in enumerate(zip(convs, expected)):
        layers.append(_conv_layer(m, spec, i, cin, width, source))
        cin = layers[-1].arrays["weight"].shape[0 if spec[1] == "conv" else 1]

    eps = momentum = None
    bn_layers = []
    for j, m in enumerate(bns):
        name = f"{expected[j][0]}_bn"
        channels = layers[j].arrays["bias"].size
        where = f"{source}: batch-norm layer {j + 1} ({name}, {m.class_name})"
        arrays = {}
        for key in ("weight", "bias", "running_mean", "running_var"):
            arrays[key] = _array(m.get(key), f"{where}: {key}")
        if arrays["running_var"] is None and m.get("running_std") is not None:
            # nn before BN version 2 stored 1 / sqrt(var + eps).
            std = _array(m.get("running_std"), f"{where}: running_std")
            arrays["running_var"] = 1.0 / np.square(std) - float(m.get("eps", 1e-5))
        if arrays["weight"] is None:  # affine = false
            arrays["weight"] = np.ones(channels)
        if arrays["bias"] is None:
            arrays["bias"] = np.zeros(channels)
        for key, value in arrays.items():
            if value is None:
                raise Torch7Error(f"{where}: missing {key}")
            if value.shape != (channels,):
                raise Torch7Error(f"{where}: {key} has shape {list(value.shape)}, expected "
                                  f"[{channels}] (the output channels of {layers[j].name})")
        this_eps = float(m.get("eps", 1e-5))
        if eps is not None and this_eps != eps:
            raise Torch7Error(f"{where}: eps {this_eps} differs from the other layers' {eps}; "
                              "glcic_tf uses one epsilon for all batch norms")
        eps = this_eps
        momentum = float(m.get("momentum", 0.1)) if momentum is None else momentum
        bn_layers.append(Layer("bn", name, arrays, eps=this_eps, momentum=momentum))

    # The exact order: conv, BN, ReLU for every layer but the last; conv, Sigmoid at the end.
    pattern: list[Layer] = []
    for j, conv in enumerate(layers):
        pattern.append(conv)
        if j < len(bn_layers):
            pattern += [bn_layers[j], Layer("relu", f"{conv.name}_relu", {})]
    pattern.append(Layer("sigmoid", "completion", {}))
    accepted = {"conv": CONV_KINDS + DECONV_KINDS, "deconv": CONV_KINDS + DECONV_KINDS,
                "bn": BN_KINDS, "relu": ("ReLU",), "sigmoid": ("Sigmoid",)}
    for i, layer in enumerate(pattern):
        m = leaves[i] if i < len(leaves) else None
        ok = m is not None and m.kind in accepted[layer.kind]
        if ok and layer.kind == "relu" and float(m.get("threshold", 0) or 0) != 0:
            ok = False
        if not ok:
            after = pattern[i - 1].name if i else "the input"
            raise Torch7Error(f"{source}: module #{i + 1} after {after}: expected "
                              f"{' or '.join(accepted[layer.kind])} ({layer.name}), found "
                              f"{'nothing' if m is None else m.class_name}")
    if len(leaves) > len(pattern):
        raise Torch7Error(f"{source}: {len(leaves) - len(pattern)} extra module(s) after the "
                          f"final Sigmoid: {[m.class_name for m in leaves[len(pattern):]]}")
    return TorchCompletionNet(pattern, mean, width, eps if eps is not None else 1e-5,
                              momentum if momentum is not None else 0.1)


def _conv_layer(m: TorchObject, spec, i: int, cin: int, width: float, source: str) -> Layer:
    from glcic_tf.networks import models

    name, kind, k, stride, dilation, filters = spec
    cout = 3 if name == "output_conv" else models.scaled(filters, width)
    where = f"{source}: layer {i + 1} ({name}, {m.class_name})"
    if kind == "deconv" and m.kind not in DECONV_KINDS:
        raise Torch7Error(f"{where}: expected a SpatialFullConvolution (4x4 stride-2 "
                          f"deconvolution), found {m.class_name}")
    if kind == "conv" and m.kind not in CONV_KINDS:
        raise Torch7Error(f"{where}: expected a SpatialConvolution, found {m.class_name}")
    pad = 1 if kind == "deconv" else (k - 1) // 2 * dilation
    found = {"kernel": (_int(m, "kH"), _int(m, "kW")), "stride": (_int(m, "dH"), _int(m, "dW")),
             "pad": (_int(m, "padH", 0), _int(m, "padW", 0)),
             "dilation": (_int(m, "dilationH", 1), _int(m, "dilationW", 1)),
             "adj": (_int(m, "adjH", 0), _int(m, "adjW", 0)), "groups": _int(m, "groups", 1)}
    want = {"kernel": (k, k), "stride": (stride, stride), "pad": (pad, pad),
            "dilation": (dilation, dilation), "adj": (0, 0), "groups": 1}
    for key in want:
        if found[key] != want[key]:
            raise Torch7Error(f"{where}: {key} {found[key]}, expected {want[key]}")
    weight = _array(m.get("weight"), f"{where}: weight")
    shape = (cin, cout, k, k) if kind == "deconv" else (cout, cin, k, k)
    if weight is not None and weight.ndim == 2 and kind == "conv" and weight.size == np.prod(
            shape):  # SpatialConvolutionMM in old nn kept [out, in * kh * kw]
        weight = weight.reshape(shape)
    if weight is None or weight.shape != shape:
        layout = "[in, out, kh, kw]" if kind == "deconv" else "[out, in, kh, kw]"
        raise Torch7Error(f"{where}: weight has shape "
                          f"{None if weight is None else list(weight.shape)}, expected "
                          f"{list(shape)} {layout}")
    bias = _array(m.get("bias"), f"{where}: bias")
    if bias is None:
        bias = np.zeros(cout)
    if bias.shape != (cout,):
        raise Torch7Error(f"{where}: bias has shape {list(bias.shape)}, expected [{cout}]")
    return Layer(kind, name, {"weight": weight, "bias": bias}, stride=stride, pad=pad,
                 dilation=dilation)
