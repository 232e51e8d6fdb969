"""glcic_tf.torch7.completionnet: a network that is not the paper's is rejected with an error
naming the layer, and old files' batch-norm statistics are converted."""

import os

import numpy as np
import pytest

from glcic_tf.torch7.completionnet import parse_completionnet
from glcic_tf.torch7.importer import import_torch7
from glcic_tf.torch7.reader import loads_t7
from glcic_tf.torch7.synthetic import synthetic_completionnet
from glcic_tf.torch7.values import Table, Torch7Error, module
from glcic_tf.torch7.writer import dumps_t7

from helpers.torch7 import write_t7


def _modules(root):
    return root["model"].fields["modules"]


def _drop(root, index):
    mods = _modules(root).list()
    del mods[index]
    root["model"].fields["modules"] = Table({i + 1: m for i, m in enumerate(mods)})
    return root


@pytest.mark.parametrize("edit, message", [
    # Drop conv2 (and its BN and ReLU): the count is wrong.
    (lambda r: _drop(_drop(_drop(r, 3), 3), 3),
     r"found 16 convolution layers and 15 batch-norm layers, expected 17 and 16"),
    # Drop only a ReLU: counts are right, the order is not.
    (lambda r: _drop(r, 2),
     r"module #3 after conv1_bn: expected ReLU \(conv1_relu\), found nn.SpatialConvolution"),
    # conv3 with 7 input channels.
    (lambda r: _modules(r)[7].fields.update(weight=np.zeros((8, 7, 3, 3), np.float32)),
     r"layer 3 \(conv3, nn.SpatialConvolution\): weight has shape \[8, 7, 3, 3\], expected "
     r"\[8, 8, 3, 3\] \[out, in, kh, kw\]"),
    # deconv1 saved as a plain convolution.
    (lambda r: setattr(_modules(r)[37], "class_name", "nn.SpatialConvolution"),
     r"layer 13 \(deconv1, nn.SpatialConvolution\): expected a SpatialFullConvolution"),
    # Keras-style (asymmetric) padding cannot be expressed in Torch: pad 0 is rejected.
    (lambda r: _modules(r)[4].fields.update(padW=0, padH=0),
     r"layer 2 \(conv2, nn.SpatialConvolution\): pad \(0, 0\), expected \(1, 1\)"),
    (lambda r: _modules(r)[19].fields.update(dilationW=3, dilationH=3),
     r"layer 7 \(dilated_conv_d2, nn.SpatialDilatedConvolution\): dilation \(3, 3\), "
     r"expected \(2, 2\)"),
    (lambda r: _modules(r)[2].fields.update(running_var=np.ones(5, np.float32)),
     r"batch-norm layer 1 \(conv1_bn, nn.SpatialBatchNormalization\): running_var has shape "
     r"\[5\], expected \[4\]"),
    (lambda r: _modules(r).update({51: module("nn.Dropout")}),
     r"module #51 is nn.Dropout, which is not part of the GLCIC completion network"),
    (lambda r: r.pop("model"), r"holds a table without a 'model' entry"),
])
def test_wrong_network_is_rejected_with_a_clear_error(tmp_path, edit, message):
    root = synthetic_completionnet(0.0625, seed=0)
    edit(root)
    path = write_t7(tmp_path, root)
    with pytest.raises(Torch7Error, match=message):
        import_torch7(path, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_old_batch_norm_running_std_is_converted():
    root = synthetic_completionnet(0.0625, seed=4)
    bn = _modules(root)[2].fields
    var = bn.pop("running_var").astype(np.float64)
    bn["running_std"] = (1.0 / np.sqrt(var + 1e-5)).astype(np.float32)
    net = parse_completionnet(loads_t7(dumps_t7(root)))
    np.testing.assert_allclose(net.layers[1].arrays["running_var"], var, rtol=1e-4)
