"""Torch7 reader/writer and the importer of the authors' released completion networks.

Synthetic .t7 files with the official structure and seeded weights stand in for the released
files (never shipped or downloaded). Torch's layer semantics are checked against naive loops
written from the Torch definitions; the imported Keras network, and its SavedModel export, against
an oracle that runs those naive loops on the raw module table (no importer code involved).
"""

import json
import os
import struct
import sys

import keras
import numpy as np
import pytest

from glcic_tf import masks, models, runs, torch7 as t7
from glcic_tf.config import ConfigError, GLCICConfig, ModelConfig, get_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- naive Torch layers, straight from the definitions -----------------------------------------


def naive_conv(x, w, b, stride, pad, dilation=1):
    """out[o, y, x] = b[o] + sum_{i,ky,kx} w[o, i, ky, kx] * x_pad[i, y*s + ky*d, x*s + kx*d]."""
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.zeros((c, h + 2 * pad, wd + 2 * pad))
    xp[:, pad:pad + h, pad:pad + wd] = x
    oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    out = np.zeros((o, oh, ow))
    for yy in range(oh):
        for xx in range(ow):
            for ky in range(k):
                for kx in range(k):
                    ty, tx = yy * stride + ky * dilation, xx * stride + kx * dilation
                    out[:, yy, xx] += w[:, :, ky, kx] @ xp[:, ty, tx]
    return out + b[:, None, None]


def naive_full_conv(x, w, b, stride, pad):
    """Torch SpatialFullConvolution: input (y, x) adds w[:, o, ky, kx] . x[:, y, x] at output
    (y*s - pad + ky, x*s - pad + kx); output size (H-1)*s - 2*pad + k."""
    c, h, wd = x.shape
    _, o, k, _ = w.shape
    oh, ow = (h - 1) * stride - 2 * pad + k, (wd - 1) * stride - 2 * pad + k
    out = np.zeros((o, oh, ow))
    for yy in range(h):
        for xx in range(wd):
            for ky in range(k):
                for kx in range(k):
                    ty, tx = yy * stride - pad + ky, xx * stride - pad + kx
                    if 0 <= ty < oh and 0 <= tx < ow:
                        out[:, ty, tx] += w[:, :, ky, kx].T @ x[:, yy, xx]
    return out + b[:, None, None]


def test_numpy_torch_layers_match_naive_definitions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 8))
    for k, stride, pad, dil in [(3, 2, 1, 1), (5, 1, 2, 1), (3, 1, 2, 2), (3, 1, 4, 4)]:
        w, b = rng.normal(size=(4, 3, k, k)), rng.normal(size=4)
        np.testing.assert_allclose(
            t7.torch_conv2d(x[None], w, b, stride=stride, pad=pad, dilation=dil)[0],
            naive_conv(x, w, b, stride, pad, dil), atol=1e-10)
    w, b = rng.normal(size=(3, 5, 4, 4)), rng.normal(size=5)
    out = t7.torch_full_conv2d(x[None], w, b, stride=2, pad=1)[0]
    assert out.shape == (5, 12, 16)
    np.testing.assert_allclose(out, naive_full_conv(x, w, b, 2, 1), atol=1e-10)


# --- padding: Keras vs Torch -------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(4, 6), (5, 3)])
def test_transposed_conv_same_padding_equals_torch_full_convolution(h, w):
    # Keras Conv2DTranspose(4, strides=2, padding="same") with the kernel mapped as
    # [in, out, kh, kw] -> [kh, kw, out, in] (no spatial flip) is Torch's
    # SpatialFullConvolution(4, 4, 2, 2, 1, 1).
    rng = np.random.default_rng(1)
    cin, cout = 3, 5
    weight = rng.normal(size=(cin, cout, 4, 4)).astype(np.float32)
    bias = rng.normal(size=cout).astype(np.float32)
    x = rng.normal(size=(cin, h, w)).astype(np.float32)
    expected = naive_full_conv(x.astype(np.float64), weight, bias, 2, 1)
    assert expected.shape == (cout, 2 * h, 2 * w)

    layer = keras.layers.Conv2DTranspose(cout, 4, strides=2, padding="same")
    layer.build((1, h, w, cin))
    layer.set_weights([weight.transpose(2, 3, 1, 0), bias])
    got = np.asarray(layer(x.transpose(1, 2, 0)[None]))[0].transpose(2, 0, 1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    layer_kernel = t7.keras_kernel(t7.Layer("deconv", "d", {"weight": weight}))
    np.testing.assert_array_equal(layer_kernel, weight.transpose(2, 3, 1, 0))

    # A spatially flipped kernel is wrong: the mapping is not symmetric by accident.
    layer.set_weights([weight[:, :, ::-1, ::-1].transpose(2, 3, 1, 0), bias])
    flipped = np.asarray(layer(x.transpose(1, 2, 0)[None]))[0].transpose(2, 0, 1)
    assert np.abs(flipped - expected).max() > 0.1


def test_strided_conv_needs_torch_padding():
    # 3x3 stride 2 on an even input: Torch pads (1, 1); Keras 'same' pads (0, 1).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 8, 6)).astype(np.float32)
    weight = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    bias = np.zeros(3, np.float32)
    expected = naive_conv(x.astype(np.float64), weight, bias, 2, 1)
    kernel = weight.transpose(2, 3, 1, 0)
    inp = x.transpose(1, 2, 0)[None]
    torch_like = keras.Sequential([keras.layers.ZeroPadding2D(((1, 1), (1, 1))),
                                   keras.layers.Conv2D(3, 3, strides=2, padding="valid")])
    torch_like.build((1, 8, 6, 2))
    torch_like.layers[-1].set_weights([kernel, bias])
    np.testing.assert_allclose(np.asarray(torch_like(inp))[0].transpose(2, 0, 1), expected,
                               atol=1e-5)
    same = keras.layers.Conv2D(3, 3, strides=2, padding="same")
    same.build((1, 8, 6, 2))
    same.set_weights([kernel, bias])
    assert np.abs(np.asarray(same(inp))[0].transpose(2, 0, 1) - expected).max() > 0.1


def test_padding_option_keeps_parameters_and_names():
    default = models.completion_network()
    torch_pad = models.completion_network(config=ModelConfig(padding="torch"))
    count = sum(int(np.prod(w.shape)) for w in torch_pad.trainable_weights)
    assert count == 6_072_131 == sum(int(np.prod(w.shape)) for w in default.trainable_weights)
    pads = [layer.name for layer in torch_pad.layers
            if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert pads == ["conv2_pad", "conv4_pad"]
    assert not any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in default.layers)
    out = torch_pad({"image": np.zeros((1, 20, 28, 3), np.float32),
                     "mask": np.zeros((1, 20, 28, 1), np.float32)})
    assert out.shape == (1, 20, 28, 3)
    # The discriminators' 5x5 stride-2 convolutions follow the same option.
    d_same = models.context_discriminator(64, 32, width=1 / 16)
    d_torch = models.context_discriminator(64, 32, width=1 / 16,
                                           config=ModelConfig(padding="torch"))
    assert d_torch.count_params() == d_same.count_params()
    assert d_torch.get_layer("global_discriminator").get_layer("global_conv1_pad").padding == (
        (2, 2), (2, 2))
    with pytest.raises(ConfigError, match=r"model.padding must be one of \('same', 'torch'\), "
                                          r"got 'reflect'"):
        get_preset("paper").override({"model.padding": "reflect"})


# --- reader and writer -------------------------------------------------------------------------


def test_reader_parses_hand_written_bytes():
    # {[1]=2.5, x=true, t=<FloatTensor 2x3, column-major, storage offset 2>} written by hand
    # from the format description, independently of the writer.
    def i32(v):
        return struct.pack("<i", v)

    def i64(v):
        return struct.pack("<q", v)

    def string(s):
        return i32(2) + i32(len(s)) + s

    storage = np.arange(8, dtype=np.float32)
    tensor = (i32(4) + i32(3) + string(b"V 1")[4:] + string(b"torch.FloatTensor")[4:]
              + i32(2) + i64(2) + i64(3) + i64(1) + i64(2) + i64(3)
              + i32(4) + i32(4) + string(b"V 1")[4:] + string(b"torch.FloatStorage")[4:]
              + i64(8) + storage.tobytes())
    legacy = i32(4) + i32(5) + string(b"nn.ReLU")[4:] + i32(3) + i32(6) + i32(0)  # no version
    data = (i32(3) + i32(1) + i32(4)
            + i32(1) + struct.pack("<d", 1.0) + i32(1) + struct.pack("<d", 2.5)
            + string(b"x") + i32(5) + i32(1)
            + string(b"t") + tensor
            + string(b"relu") + legacy)
    root = t7.loads_t7(data)
    assert isinstance(root, t7.Table) and root[1] == 2.5 and root["x"] is True
    np.testing.assert_array_equal(root["t"], [[2, 4, 6], [3, 5, 7]])
    assert root["t"].dtype == np.float32
    assert root["relu"].class_name == "nn.ReLU" and root["relu"].version == 0
    assert root["relu"].kind == "ReLU" and dict(root["relu"].fields) == {}


def test_writer_reader_round_trip_and_shared_references():
    rng = np.random.default_rng(3)
    flat = rng.normal(size=20).astype(np.float32)
    weight = flat[2:14].reshape(3, 4)                    # view with a storage offset
    shared = t7.Table(name="shared")
    obj = t7.module("nn.Thing", weight=weight, weight_t=weight.T, flat=flat,
                    again=weight, inner=shared)
    root = {
        "numbers": [1, -2.5, 1e300, 0.0], "text": "héllo", "raw": b"\xff\x00bytes",
        "flags": (True, False), "nothing": None, "nested": {"a": {"b": [1, {"c": 2}]}},
        "one": shared, "two": shared, "module": obj, "module_again": obj,
        "doubles": np.arange(6, dtype=np.float64).reshape(2, 3),
        "longs": np.array([1, -2, 3], np.int64), "bytes": np.arange(4, dtype=np.uint8),
        "empty": np.zeros((0,), np.float32), "fn": t7.LuaFunction(b"\x1bLua", [1]),
    }
    for long_size in (8, 4):
        back = t7.loads_t7(t7.dumps_t7(root, long_size=long_size), long_size=long_size)
        assert back["numbers"].list() == [1, -2.5, 1e300, 0.0]
        assert back["text"] == "héllo" and back["raw"] == b"\xff\x00bytes"
        assert back["flags"].list() == [True, False] and back["nothing"] is None
        assert "nothing" in back
        assert back["nested"]["a"]["b"][2]["c"] == 2
        assert back["one"] is back["two"] and back["one"]["name"] == "shared"
        m = back["module"]
        assert m is back["module_again"] and m.class_name == "nn.Thing"
        assert m["inner"] is back["one"]
        np.testing.assert_array_equal(m["weight"], weight)
        np.testing.assert_array_equal(m["weight_t"], weight.T)
        assert m["again"] is m["weight"]
        # One storage, as in Torch: the views share memory with the flat tensor.
        assert np.shares_memory(m["weight"], m["flat"]) and np.shares_memory(m["weight_t"],
                                                                             m["flat"])
        for key in ("doubles", "longs", "bytes"):
            np.testing.assert_array_equal(back[key], root[key])
            assert back[key].dtype == root[key].dtype
        assert back["empty"].shape == (0,)
        assert back["fn"].dumped == b"\x1bLua" and back["fn"].upvalues.list() == [1]
    # Writing what was read keeps the sharing (same file size, no duplicated storage).
    data = t7.dumps_t7(root)
    assert len(t7.dumps_t7(t7.loads_t7(data))) == len(data)


def test_self_referencing_table_and_table_keys():
    a = t7.Table()
    a["self"] = a
    key = t7.Table(k=1)
    a[key] = "value for a table key"
    back = t7.loads_t7(t7.dumps_t7(a))
    assert back["self"] is back
    (table_key,) = [k for k in back if isinstance(k, t7.Table)]
    assert table_key["k"] == 1 and back[table_key] == "value for a table key"


# --- importing the completion network ----------------------------------------------------------


def _oracle_forward(root, image, mask):
    """Runs the Torch model of a .t7 table with the naive layers above, every tensor and
    hyperparameter read from the raw module fields (none of the importer's parsing, kernel
    mapping or reference forward pass): Torch's input cat((image - mean) * (1 - mask), mask),
    batch norm in evaluation mode. image [H, W, 3], mask [H, W, 1]; returns [H, W, 3]."""
    mean = np.asarray(root["mean"], np.float64)
    x = np.concatenate([(image - mean) * (1 - mask), mask], -1).transpose(2, 0, 1)
    x = x.astype(np.float64)
    seen = []
    for m in root["model"].fields["modules"].list():
        kind, f = m.class_name.split(".")[-1], m.fields
        seen.append(kind)
        if kind in ("SpatialConvolution", "SpatialDilatedConvolution"):
            assert (f["dW"], f["padW"]) == (f["dH"], f["padH"])
            x = naive_conv(x, np.asarray(f["weight"], np.float64), np.asarray(f["bias"]),
                           f["dW"], f["padW"], f.get("dilationW", 1))
        elif kind == "SpatialFullConvolution":
            assert (f["dW"], f["padW"], f.get("adjW", 0)) == (f["dH"], f["padH"], 0)
            x = naive_full_conv(x, np.asarray(f["weight"], np.float64), np.asarray(f["bias"]),
                                f["dW"], f["padW"])
        elif kind == "SpatialBatchNormalization":
            def c(v):
                return np.asarray(v, np.float64)[:, None, None]

            x = ((x - c(f["running_mean"])) / np.sqrt(c(f["running_var"]) + f["eps"])
                 * c(f["weight"]) + c(f["bias"]))
        elif kind == "ReLU":
            x = np.maximum(x, 0.0)
        elif kind == "Sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        else:
            raise AssertionError(f"unexpected module {m.class_name}")
    assert seen.count("SpatialBatchNormalization") == 16 and seen[-1] == "Sigmoid"
    return x.transpose(1, 2, 0)


def _oracle_case():
    rng = np.random.default_rng(21)
    image = rng.random((24, 32, 3)).astype(np.float32)
    mask = np.zeros((24, 32, 1), np.float32)
    mask[5:17, 9:25] = 1.0
    return image, mask


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A width-1/8 synthetic file (weights in one shared storage, cudnn names) imported once."""
    tmp = tmp_path_factory.mktemp("t7")
    root = t7.synthetic_completionnet(0.125, seed=7, mean=(0.3, 0.5, 0.6), shared_storage=True,
                                      cudnn=True)
    path = str(tmp / "completionnet_small.t7")
    t7.save_t7(path, root)
    run_dir = t7.import_torch7(path, str(tmp / "run"))
    return root, path, run_dir


def test_imported_network_matches_an_oracle_built_from_the_raw_module_table(imported):
    root, _, run_dir = imported
    config, completion, step = runs.load_completion_network(run_dir)
    assert step == 0
    rng = np.random.default_rng(0)
    image = rng.random((2, 16, 24, 3)).astype(np.float32)
    mask = np.zeros((2, 16, 24, 1), np.float32)
    mask[0, 4:12, 6:18] = 1
    mask[1, 0:8, 12:24] = 1
    got = np.asarray(completion(masks.network_inputs(image, mask, config.data),
                                training=False))
    # The expectation reads the in-memory table that was written, not the file, and none of
    # the importer's code.
    expected = np.stack([_oracle_forward(root, image[i].astype(np.float64),
                                         mask[i].astype(np.float64)) for i in range(2)])
    assert np.abs(got - expected).max() < 1e-4
    assert expected.std(axis=(1, 2)).min() > 0.1  # varies across pixels: misplaced ones show

    # Keras 'same' padding with the same weights is off by a half-pixel shift.
    same = models.completion_network(config.model.width,
                                     ModelConfig(width=config.model.width, padding="same"))
    t7.set_completion_weights(same, t7.parse_completionnet(root))
    shifted = np.asarray(same(masks.network_inputs(image, mask, config.data), training=False))
    assert np.abs(shifted - expected).max() > 0.1


def test_imported_run_dir_config(imported):
    _, path, run_dir = imported
    config = GLCICConfig.load(runs.config_path(run_dir))
    assert config.name == "torch7-import"
    assert config.model.padding == "torch" and config.data.input_convention == "torch7"
    np.testing.assert_allclose(config.data.mean_pixel, (0.3, 0.5, 0.6), rtol=1e-6)
    assert config.model.width == 0.125 and config.model.batch_norm_epsilon == 1e-5
    assert config.model.batch_norm_momentum == pytest.approx(0.9)
    assert config.data.image_size == get_preset("paper").data.image_size
    assert runs.is_run_dir(run_dir)
    with open(os.path.join(run_dir, t7.IMPORT_INFO_NAME)) as f:
        info = json.load(f)
    assert [layer["name"] for layer in info["layers"]] == [
        spec[0] for spec in models.COMPLETION_LAYERS]
    assert info["layers"][12] == {"name": "deconv1", "kind": "deconv", "shape": [32, 16, 4, 4]}
    assert info["max_abs_diff_vs_torch_reference"] < 1e-4
    with pytest.raises(FileExistsError, match="already holds config.json"):
        t7.import_torch7(path, run_dir)


def test_cli_imports_full_width_file(tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, "pipelines"))
    try:
        import import_torch7 as cli
    finally:
        sys.path.pop(0)
    path = str(tmp_path / "completionnet_places2.t7")
    t7.save_t7(path, t7.synthetic_completionnet(1.0, seed=1))
    out = str(tmp_path / "run")
    assert cli.main(cli.parse_args(["--t7", path, "--out", out])) == 0
    printed = capsys.readouterr().out
    assert "6,072,131 parameters, width 1" in printed
    assert "mean pixel (RGB): 0.4560, 0.4472, 0.4155" in printed
    assert "padding=torch, input_convention=torch7" in printed
    assert f"pipelines/export.py --checkpoint {out}" in printed
    assert f"pipelines/complete.py --model {out}" in printed
    config, completion, _ = runs.load_completion_network(out)
    assert config.model.width == 1.0
    assert sum(int(np.prod(w.shape)) for w in completion.trainable_weights) == 6_072_131
    with pytest.raises(SystemExit):
        cli.parse_args(["--t7", str(tmp_path / "nope.t7"), "--out", out])
    assert "--t7: no such file" in capsys.readouterr().err


# --- clear errors ------------------------------------------------------------------------------


def _write(tmp_path, root, name="bad.t7"):
    path = str(tmp_path / name)
    t7.save_t7(path, root)
    return path


def _modules(root):
    return root["model"].fields["modules"]


def _drop(root, index):
    mods = _modules(root).list()
    del mods[index]
    root["model"].fields["modules"] = t7.Table({i + 1: m for i, m in enumerate(mods)})
    return root


def test_not_a_torch7_file(tmp_path):
    path = str(tmp_path / "random.t7")
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(1000))
    with pytest.raises(t7.Torch7Error, match=r"random.t7: not a Torch7 binary file, or corrupt: "
                                             r"unknown type tag"):
        t7.load_t7(path)
    with pytest.raises(t7.Torch7Error, match="ASCII-mode"):
        t7.loads_t7(b"4\n1\n3\nV 1\n")
    with pytest.raises(FileNotFoundError, match="Torch7 file not found: .*missing.t7"):
        t7.load_t7(str(tmp_path / "missing.t7"))


def test_truncated_file(tmp_path):
    data = t7.dumps_t7(t7.synthetic_completionnet(0.0625))
    for cut in (3, len(data) // 2, len(data) - 1):
        with pytest.raises(t7.Torch7Error, match=r"<bytes>: truncated file: .* needs \d+ bytes, "
                                                 r"only \d+ left"):
            t7.loads_t7(data[:cut])


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
    (lambda r: _modules(r).update({51: t7.module("nn.Dropout")}),
     r"module #51 is nn.Dropout, which is not part of the GLCIC completion network"),
    (lambda r: r.pop("model"), r"holds a table without a 'model' entry"),
])
def test_wrong_network_is_rejected_with_a_clear_error(tmp_path, edit, message):
    root = t7.synthetic_completionnet(0.0625, seed=0)
    edit(root)
    path = _write(tmp_path, root)
    with pytest.raises(t7.Torch7Error, match=message):
        t7.import_torch7(path, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_missing_mean_needs_mean_pixel(tmp_path):
    root = t7.synthetic_completionnet(0.0625)
    path = _write(tmp_path, root["model"])  # the model alone, no mean
    with pytest.raises(t7.Torch7Error, match="stores no mean pixel; pass mean_pixel"):
        t7.import_torch7(path, str(tmp_path / "run"))
    run_dir = t7.import_torch7(path, str(tmp_path / "run"), mean_pixel=(0.5, 0.5, 0.5))
    assert runs.load_completion_network(run_dir)[0].data.mean_pixel == (0.5, 0.5, 0.5)


def test_old_batch_norm_running_std_is_converted():
    root = t7.synthetic_completionnet(0.0625, seed=4)
    bn = _modules(root)[2].fields
    var = bn.pop("running_var").astype(np.float64)
    bn["running_std"] = (1.0 / np.sqrt(var + 1e-5)).astype(np.float32)
    net = t7.parse_completionnet(t7.loads_t7(t7.dumps_t7(root)))
    np.testing.assert_allclose(net.layers[1].arrays["running_var"], var, rtol=1e-4)


def test_export_of_an_imported_run_computes_what_the_torch_model_computes(imported, tmp_path):
    import tensorflow as tf

    from glcic_tf import export

    root, _, run_dir = imported
    # postprocess "none": the `complete` signature never post-processes, and the in-graph
    # post-processing (tested in test_export.py) triples the export's time.
    version = export.export_from_run(run_dir, str(tmp_path / "glcic"), postprocess="none")
    assets = GLCICConfig.load(os.path.join(version, "assets", "config.json"))
    assert (assets.data.input_convention, assets.model.padding) == ("torch7", "torch")
    np.testing.assert_allclose(assets.data.mean_pixel, (0.3, 0.5, 0.6), rtol=1e-6)
    image, mask = _oracle_case()
    expected = _oracle_forward(root, image.astype(np.float64), mask.astype(np.float64))
    expected = np.where(mask > 0, expected, image)  # the completed image: the hole filled
    loaded = tf.saved_model.load(version)
    got = loaded.signatures["complete"](image=tf.constant(image[None]),
                                        mask=tf.constant(mask[None]))["completed"].numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
