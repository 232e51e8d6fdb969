"""The SavedModel's signatures: stock ops only, the Keras model's and the Completer's results
after a reload in an interpreter without glcic_tf, and what saved_model_cli lists."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from glcic_tf.inference import poisson

from helpers.images import png_bytes
from helpers.inference import keras_composite
from helpers.scripts import REPO

WIDTH = 1 / 16  # tiny_run's


def test_graph_uses_only_registered_stock_ops(tiny_exports):
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(tiny_exports["bf16"], "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = saved.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node}
    for function in graph.library.function:
        ops |= {n.op for n in function.node_def}
    assert {"DecodeImage", "EncodePng", "Conv2D"} <= ops
    # The in-graph post-processing (pyramids, box write-back) is in the graph, in stock ops.
    assert {"AvgPool", "MaxPool", "TensorStridedSliceUpdate", "While"} <= ops
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    assert [op for op in ops if op_def_registry.get(op) is None] == []


@pytest.mark.slow
def test_reload_without_glcic_tf_matches_keras(tiny_exports, completer, tmp_path):
    """A fresh interpreter that cannot import glcic_tf gets the Keras model's results."""
    config, model = tiny_exports["config"], tiny_exports["model"]
    rng = np.random.default_rng(0)
    image = rng.random((2, 32, 48, 3)).astype(np.float32)
    mask = np.zeros((2, 32, 48, 1), np.float32)
    mask[0, 4:20, 8:30] = 1.0
    mask[1, 10:28, 20:44] = 1.0
    expected_complete = keras_composite(model, config, image, mask)
    # serving_default: two images of different sizes in one batch; the first needs no
    # resizing (compared with the Keras composite), the second is odd-sized (compared with
    # the Completer, which runs the same resizing in TensorFlow ops).
    image_a = np.round(image[0] * 255).astype(np.uint8)
    hole_a = mask[0, ..., 0] > 0
    image_b = (rng.random((37, 51, 3)) * 255).astype(np.uint8)
    hole_b = np.zeros((37, 51), bool)
    hole_b[5:30, 10:40] = True
    x = image_a[None].astype(np.float32) / 255.0
    hole_a_f = hole_a[..., None].astype(np.float32)
    keras_a = keras_composite(model, config, x, hole_a_f[None])[0]
    # serving_default post-processes in the graph (the export's default): the Keras composite
    # through poisson.postprocess_image, and the Completer's in-graph mode for image b.
    keras_a = np.round(poisson.postprocess_image(keras_a, hole_a_f).numpy() * 255)
    keras_a = keras_a.astype(np.uint8)
    completer_b = completer.complete(image_b, hole_b, postprocess="in-graph")
    raw_b = completer.complete(image_b, hole_b, postprocess="none")
    assert np.abs(raw_b.astype(int) - completer_b).max() > 10  # post-processing shows
    mask_rgba_b = np.zeros((37, 51, 4), np.uint8)
    mask_rgba_b[hole_b] = 255  # RGBA mask: white, opaque = hole
    np.savez(tmp_path / "data.npz", image=image, mask=mask, expected_complete=expected_complete,
             keras_a=keras_a, completer_b=completer_b, image_b=image_b, hole_b=hole_b,
             image_bytes=np.array([png_bytes(image_a), png_bytes(image_b)], dtype=object),
             mask_bytes=np.array([png_bytes(np.where(hole_a, 255, 0).astype(np.uint8)),
                                  png_bytes(mask_rgba_b)], dtype=object),
             bad_mask=np.array([png_bytes(np.full((30, 51), 255, np.uint8))], dtype=object))
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        # Hide glcic_tf: drop the editable-install finder and the repository root from the path
        # (-I already leaves out the working directory and PYTHON* variables).
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path[:] = [p for p in sys.path if p and p.rstrip("/") != {REPO!r}]
        assert importlib.util.find_spec("glcic_tf") is None, "glcic_tf is importable"
        import numpy as np, tensorflow as tf, io
        from PIL import Image
        d = np.load("data.npz", allow_pickle=True)
        result = {{}}
        loaded = tf.saved_model.load({tiny_exports["fp32"]!r})
        got = loaded.signatures["complete"](image=tf.constant(d["image"]),
                                            mask=tf.constant(d["mask"]))["completed"].numpy()
        result["complete_max_abs"] = float(np.abs(got - d["expected_complete"]).max())
        out = loaded.signatures["serving_default"](
            image_bytes=tf.constant(list(d["image_bytes"])),
            mask_bytes=tf.constant(list(d["mask_bytes"])))["completed_bytes"].numpy()
        a, b = (np.asarray(Image.open(io.BytesIO(o))) for o in out)
        result["shapes"] = [list(a.shape), list(b.shape)]
        result["a_max_diff"] = int(np.abs(a.astype(int) - d["keras_a"]).max())
        result["b_max_diff"] = int(np.abs(b.astype(int) - d["completer_b"]).max())
        flt = loaded.signatures["serving_float"](
            image=tf.constant(d["image_b"][None] / 255.0, tf.float32),
            mask=tf.constant(d["hole_b"][None, ..., None], tf.float32))["completed"].numpy()[0]
        result["float_vs_bytes"] = int(np.abs(np.round(flt * 255) - b).max())
        try:
            loaded.signatures["serving_default"](image_bytes=tf.constant(list(d["image_bytes"][1:])),
                                                 mask_bytes=tf.constant(list(d["bad_mask"])))
            result["mismatch_error"] = None
        except tf.errors.InvalidArgumentError as e:
            result["mismatch_error"] = e.message
        bf16 = tf.saved_model.load({tiny_exports["bf16"]!r})
        got16 = bf16.signatures["complete"](image=tf.constant(d["image"]),
                                            mask=tf.constant(d["mask"]))["completed"].numpy()
        hole = d["mask"][..., 0] > 0
        mse = float(np.mean((got16[hole] - got[hole]) ** 2))
        result["bf16_psnr_hole_db"] = 10 * np.log10(1.0 / mse) if mse else 999.0
        result["glcic_tf_loaded"] = any(m.startswith("glcic_tf") for m in sys.modules)
        print("RESULT " + json.dumps(result))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert result["glcic_tf_loaded"] is False
    assert result["complete_max_abs"] <= 1e-5
    assert result["shapes"] == [[32, 48, 3], [37, 51, 3]]
    assert result["a_max_diff"] <= 1 and result["b_max_diff"] <= 1
    assert result["float_vs_bytes"] <= 1
    assert "mask_bytes: mask size (height, width) differs from image_bytes size" in (
        result["mismatch_error"] or "")
    print(f"bf16 vs fp32 PSNR inside the holes (width {WIDTH}): "
          f"{result['bf16_psnr_hole_db']:.1f} dB")
    assert result["bf16_psnr_hole_db"] >= 30.0


def test_saved_model_cli_lists_both_signatures(tiny_exports):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([cli, "show", "--all", "--dir", tiny_exports["fp32"]], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout

    def section(name):
        start = text.index(f"signature_def['{name}']")
        end = text.find("signature_def[", start + 1)
        return text[start:end if end > 0 else len(text)]

    default, complete = section("serving_default"), section("complete")
    floats = section("serving_float")
    for key, channels in (("inputs['image']", 3), ("inputs['mask']", 1),
                          ("outputs['completed']", 3)):
        block = floats[floats.index(key):][:120]
        assert "dtype: DT_FLOAT" in block and f"shape: (-1, -1, -1, {channels})" in block, block
    for key in ("inputs['image_bytes']", "inputs['mask_bytes']", "outputs['completed_bytes']"):
        block = default[default.index(key):][:120]
        assert "dtype: DT_STRING" in block and "shape: (-1)" in block, block
    for key, channels in (("inputs['image']", 3), ("inputs['mask']", 1),
                          ("outputs['completed']", 3)):
        block = complete[complete.index(key):][:120]
        assert "dtype: DT_FLOAT" in block and f"shape: (-1, -1, -1, {channels})" in block, block
