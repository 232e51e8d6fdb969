"""A synthetic completion network shaped like the authors' released .t7 files, for tests.

The released files are never shipped or downloaded; `synthetic_completionnet` builds the same
table, `{model = nn.Sequential(...), mean = FloatTensor(3)}`, with seeded weights, and
`glcic_tf.torch7.writer.save_t7` writes it as Torch would.
"""

from __future__ import annotations

import numpy as np

from glcic_tf.torch7.reference import torch_batch_norm, torch_conv2d, torch_full_conv2d
from glcic_tf.torch7.values import Table, module


def synthetic_completionnet(width: float = 1.0, *, seed: int = 0,
                            mean=(0.4560, 0.4472, 0.4155), shared_storage: bool = False,
                            cudnn: bool = False) -> Table:
    """A table `{model = nn.Sequential, mean = FloatTensor(3)}` shaped like the released files.

    The model has the official structure (Table 1: 17 convolutions, each but the last followed
    by SpatialBatchNormalization and ReLU, a final Sigmoid) and seeded random weights. Its
    batch-norm statistics are those of a seeded 32x32 calibration input, perturbed, so that
    activations stay of order 1 and the output varies from pixel to pixel (random statistics
    would leave an almost constant image, which hides misplaced pixels). `width` scales the
    channels as `glcic_tf.networks.models.scaled` does.

    Args:
      width: channel multiplier (1.0: the released files' 6,072,131 parameters).
      seed: seed of the weights and of the calibration input.
      mean: the stored mean pixel.
      shared_storage: put all weights in one flat storage, as Torch's `getParameters()` leaves
        them (tensors with storage offsets).
      cudnn: name the layers cudnn.* instead of nn.* (as a model saved from the GPU would).
    """
    from glcic_tf.networks import models

    rng = np.random.default_rng(seed)
    ns = "cudnn" if cudnn else "nn"
    params: list[tuple[Table, str, np.ndarray]] = []
    layers = []
    cin = 4
    empty = np.zeros((0,), np.float32)
    x = rng.normal(0, 0.3, (1, 4, 32, 32))  # calibration input
    x[:, 3] = 0.0
    x[:, :, 8:24, 8:24] = [[[0.0]], [[0.0]], [[0.0]], [[1.0]]]
    for name, kind, k, stride, dilation, filters in models.COMPLETION_LAYERS:
        cout = 3 if name == "output_conv" else models.scaled(filters, width)
        common = dict(nInputPlane=cin, nOutputPlane=cout, kW=k, kH=k, dW=stride, dH=stride,
                      output=empty, gradInput=empty, train=False, _type="torch.FloatTensor")
        scale = np.sqrt(2.0 / (cin * k * k))
        bias = rng.normal(0, 0.1, cout)
        if kind == "deconv":
            conv = module(f"{ns}.SpatialFullConvolution", padW=1, padH=1, adjW=0, adjH=0,
                          **common)
            weight = rng.normal(0, scale, (cin, cout, k, k))
            x = torch_full_conv2d(x, weight, bias, stride=stride, pad=1)
        else:
            pad = (k - 1) // 2 * dilation
            if dilation > 1:
                conv = module("nn.SpatialDilatedConvolution", padW=pad, padH=pad,
                              dilationW=dilation, dilationH=dilation, **common)
            else:
                conv = module(f"{ns}.SpatialConvolution", padW=pad, padH=pad, **common)
            weight = rng.normal(0, scale, (cout, cin, k, k))
            x = torch_conv2d(x, weight, bias, stride=stride, pad=pad, dilation=dilation)
        if name == "output_conv":  # pre-sigmoid spread 2 around a small random offset
            factor = 2.0 / max(float(x.std()), 1e-6)
            weight, bias = weight * factor, (bias - x.mean((0, 2, 3))) * factor + bias * 0.5
        params += [(conv.fields, "weight", weight), (conv.fields, "bias", bias)]
        layers.append(conv)
        if name == "output_conv":
            layers.append(module(f"{ns}.Sigmoid", output=empty, gradInput=empty))
            break
        bn = module(f"{ns}.SpatialBatchNormalization", eps=1e-5, momentum=0.1, affine=True,
                    nOutput=cout, output=empty, gradInput=empty, train=False)
        stats = {"weight": rng.uniform(0.5, 1.5, cout), "bias": rng.normal(0, 0.2, cout),
                 "running_mean": x.mean((0, 2, 3)) + rng.normal(0, 0.1, cout) * x.std((0, 2, 3)),
                 "running_var": x.var((0, 2, 3)) * rng.uniform(0.7, 1.4, cout) + 1e-3}
        params += [(bn.fields, "weight", stats["weight"]), (bn.fields, "bias", stats["bias"])]
        bn.fields["running_mean"] = stats["running_mean"].astype(np.float32)
        bn.fields["running_var"] = stats["running_var"].astype(np.float32)
        x = np.maximum(torch_batch_norm(x, stats, 1e-5), 0.0)
        layers += [bn, module(f"{ns}.ReLU", threshold=0, val=0, inplace=True, output=empty,
                              gradInput=empty)]
        cin = cout
    if shared_storage:
        flat = np.zeros(sum(p[2].size for p in params), np.float32)
        at = 0
        for fields, key, value in params:
            view = flat[at:at + value.size].reshape(value.shape)
            view[...] = value
            fields[key] = view
            at += value.size
    else:
        for fields, key, value in params:
            fields[key] = value.astype(np.float32)
    model = module("nn.Sequential", modules=Table({i + 1: m for i, m in enumerate(layers)}),
                   output=empty, gradInput=empty, train=False, _type="torch.FloatTensor")
    return Table(model=model, mean=np.asarray(mean, np.float32))
